"""A VAE to use instead of the model's own (A1111's "SD VAE" setting, diffusers' ``vae=``).

SDXL's VAE overflows in fp16: its config says ``force_upcast`` and the pipelines decode it in
fp32, which costs time and memory. A fixed VAE (madebyollin/sdxl-vae-fp16-fix) runs in fp16;
it is given as a hub id, a diffusers VAE folder, or one ``.safetensors`` file in either layout
(diffusers' names or the original ``encoder.down.*``/``first_stage_model.*`` ones), whose
architecture is the base model's own VAE config. Weights load from safetensors only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lanskap.errors import LanskapError, ModelUnavailableError
from lanskap.models.safety import read_safetensors_header


def load_vae(spec: str, base_config: dict[str, Any], dtype: torch.dtype) -> Any:
    """The VAE ``spec`` names, in ``dtype``; a one-line error when it can't be had or isn't a VAE."""
    from diffusers import AutoencoderKL

    path = Path(spec).expanduser()
    try:
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise LanskapError(f"{path} is not a diffusers VAE folder (it has no config.json)")
            return AutoencoderKL.from_pretrained(str(path), dtype=dtype, use_safetensors=True)
        if path.is_file():
            return _single_file(path, base_config, dtype)
        if path.suffix or spec.count("/") != 1:
            raise LanskapError(f"VAE not found: {spec} (give a VAE folder, a .safetensors file or a hub id)")
        return _hub(spec, dtype)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise LanskapError(f"cannot load VAE {spec!r}: {first}") from None


def _hub(repo: str, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(repo, dtype=dtype, use_safetensors=True)
    except OSError:
        raise ModelUnavailableError(
            f"VAE {repo!r} is not available: it is not in the local cache and the hub can't be reached; "
            f"run `hf download {repo}` on a connected machine, or give a local VAE folder or file",
            "vae",
        ) from None


def _single_file(path: Path, base_config: dict[str, Any], dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    if path.suffix.lower() != ".safetensors":
        raise LanskapError(f"{path.name}: a VAE file must be .safetensors (pickled weights are not loaded)")
    read_safetensors_header(path)
    state = load_file(str(path))
    ldm = {k.removeprefix("first_stage_model."): v for k, v in state.items()}
    if any(k.startswith("encoder.down.") for k in ldm):  # the original layout, as A1111 users have VAE files
        state = convert_ldm_vae_checkpoint(ldm, dict(base_config))
    vae = AutoencoderKL.from_config(base_config)
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LanskapError(
            f"{path.name} does not fit this model's VAE ({len(missing)} weights missing, {len(unexpected)} unexpected)"
        )
    return vae.to(dtype)
