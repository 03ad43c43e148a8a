"""lanskap: fantasy-landscape concept art with Stable Diffusion 2.1 and LoRA.

The public API is imported lazily so that ``lanskap --help`` starts without
loading torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

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
