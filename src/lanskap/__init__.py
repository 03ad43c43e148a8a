"""lanskap: fantasy-landscape concept art with Stable Diffusion 2.1 and LoRA.

The public API is imported lazily so that ``lanskap --help`` starts without
loading torch.
"""

from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"

# torch's OpenMP threads spin-wait for each other by default. When another process keeps a core
# busy, the spinning thread and the descheduled one cost a 2-core machine most of its speed: a
# lanskap-mini image took 14 s instead of 5.5 s (docs/performance.md). Passive waiting keeps the
# thread count, so the same seed still gives the same pixels. Read once, when torch loads; a
# value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_EXPORTS = {
    "Engine": "lanskap.generation.engine",
    "GenerationResult": "lanskap.generation.engine",
    "Progress": "lanskap.generation.engine",
    "GenerationRequest": "lanskap.generation.params",
    "LoraSpec": "lanskap.generation.params",
    "InitImage": "lanskap.generation.params",
    "InpaintMask": "lanskap.generation.params",
    "outpaint_inputs": "lanskap.generation.prepare",
    "apply_watermark": "lanskap.generation.watermark",
    "check_watermark": "lanskap.generation.watermark",
    "count_tokens": "lanskap.prompts.encode",
    "parse_attention": "lanskap.prompts.attention",
    "LanskapError": "lanskap.errors",
    "Settings": "lanskap.config",
    "load_settings": "lanskap.config",
    "make_tiny": "lanskap.models.tiny",
    "make_tiny_lora": "lanskap.models.tiny",
    "save_image": "lanskap.generation.output",
    "read_infotext": "lanskap.generation.output",
    "parse_infotext": "lanskap.generation.infotext",
    "sampler_names": "lanskap.generation.schedulers",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lanskap' has no attribute {name!r}")
