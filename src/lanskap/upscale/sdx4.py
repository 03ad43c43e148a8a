"""The Stable Diffusion 2 x4 upscaler, through diffusers' ``StableDiffusionUpscalePipeline``.

It is a diffusion model of its own (its own VAE, a 7-channel UNet fed the low-resolution
picture), so it runs on tiles of the input: 128 px in, 512 px out, as it was trained, and the
tiles are blended. Memory is one tile's, whatever the picture's size.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from lanskap.errors import CancelledError, ModelUnavailableError
from lanskap.upscale.tiles import Blender, grid

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.models.device import Placement
    from lanskap.upscale.upscalers import Tick

TILE, OVERLAP = 128, 16  # input pixels
STEPS, NOISE_LEVEL, GUIDANCE = 20, 20, 9.0


def load_sd_x4(source: str, settings: Settings, placement: Placement) -> Any:
    """The pipeline from a folder or hub id, or a one-line error saying where to put it."""
    import logging

    from diffusers import StableDiffusionUpscalePipeline
    from diffusers.utils import logging as dlogging

    from lanskap.models.safety import validate_weights_dir

    if Path(source).is_dir():
        validate_weights_dir(Path(source), settings.allow_pickle)
    previous = dlogging.get_verbosity()
    dlogging.set_verbosity(logging.ERROR)
    try:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(
            source, torch_dtype=placement.dtype, use_safetensors=not settings.allow_pickle
        )
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"the SD x4 upscaler {source!r} can't be loaded ({str(exc).splitlines()[0][:100]}); put its diffusers "
            f"folder in {settings.upscalers_dir / 'sd-x4'} or set sd_upscaler to a folder or hub id",
            "sd_upscaler",
        ) from None
    finally:
        dlogging.set_verbosity(previous)
    pipe.set_progress_bar_config(disable=True)
    if placement.dtype == torch.float16:
        pipe.vae.to(torch.float32)  # its VAE overflows in fp16 (diffusers' own advice for this model)
    return pipe.to(placement.device)


def run_sd_x4(
    pipe: Any,
    image: Image.Image,
    *,
    prompt: str = "",
    seed: int = 0,
    steps: int = STEPS,
    tick: Tick | None = None,
    cancel: threading.Event | None = None,
) -> Image.Image:
    """``image`` at four times its size; tile k is denoised from seed + k, so a rerun is identical."""
    image = image.convert("RGB")
    boxes = grid(image.width, image.height, TILE, TILE, OVERLAP)
    out_boxes = [b.scaled(4) for b in boxes]
    blender = Blender(image.width * 4, image.height * 4, out_boxes)
    for n, (box, out_box) in enumerate(zip(boxes, out_boxes, strict=True), 1):
        if cancel is not None and cancel.is_set():
            raise CancelledError("upscaling interrupted")
        piece = box.crop(image)
        pad_w, pad_h = (-piece.width) % 8, (-piece.height) % 8  # the UNet needs multiples of 8 (latent /2 /2 /2)
        if pad_w or pad_h:
            canvas = Image.new("RGB", (piece.width + pad_w, piece.height + pad_h))
            canvas.paste(piece)
            piece = canvas
        out = pipe(
            prompt=prompt,
            image=piece,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            noise_level=NOISE_LEVEL,
            generator=torch.Generator("cpu").manual_seed(seed + box.index),
        ).images[0]
        blender.add(out_box, out.crop((0, 0, out_box.w, out_box.h)))
        if tick is not None:
            tick(n, len(boxes), f"SD x4: tile {n} of {len(boxes)}")
    return blender.image()
