"""lanskap: fantasy-landscape concept art with Stable Diffusion 2.1 and LoRA.

The public API is imported lazily so that ``lanskap --help`` starts without
loading torch.
"""

from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"


def _busy_elsewhere() -> bool:
    """Another process keeps at least most of a core busy (the 1-minute load average, before we start)."""
    try:
        return os.getloadavg()[0] >= 0.75
    except (AttributeError, OSError):  # no load average (Windows)
        return False


# torch's OpenMP threads spin-wait for each other. When another process keeps a core busy, a
# thread spins for one that isn't running: on 2 cores a lanskap-mini image took 15 s instead of
# 5.8 s with passive waiting, but passive waiting costs a quiet machine about 19% (3.3 -> 4.0 s;
# benchmarks/busy_cpu.py, docs/performance.md). So lanskap waits passively only when the machine
# is already busy as it starts. The thread count stays, so the same seed gives the same pixels.
# Read once, when torch loads; the user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ) and _busy_elsewhere():
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

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
