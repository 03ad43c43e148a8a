"""From a request's pictures to what the pipeline sees, and back to the user's canvas.

img2img resizes the input with the chosen resize mode. Inpainting blurs the
mask, optionally crops to the masked area ("only masked") at full processing
resolution, pre-fills the masked content, and afterwards pastes the result
back and composites it over the original through the blurred mask. That last
step is why pixels outside the mask come back exactly as they went in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from lanskap.errors import LanskapError, SettingError
from lanskap.generation.imageops import (
    blur_mask,
    crop_region,
    default_size,
    expand_region,
    fill_masked,
    noise_masked,
    outpaint_canvas,
    resize_image,
    round8,
)
from lanskap.generation.params import GenerationRequest, InitImage, InpaintMask

_RESAMPLE = Image.Resampling.LANCZOS


@dataclass
class Prepared:
    width: int  # processing size, a multiple of 8
    height: int
    strength: float
    start: Callable[[int], Image.Image] | None  # seed -> the picture denoising starts from
    mask: Image.Image | None  # processing mask, white = repaint
    finish: Callable[[Image.Image], Image.Image]  # pipeline output -> final image
    region: tuple[int, int, int, int] | None = None  # "only masked" crop box, for the record


def _sizes(req: GenerationRequest, width: int, height: int, native: int) -> tuple[int, int]:
    if req.width and req.height:
        return req.width, req.height
    w, h = default_size(width, height, native)
    return req.width or w, req.height or h


def prepare(req: GenerationRequest, native: int) -> Prepared:
    """Work out the processing size and the start/finish steps for ``req``'s mode."""
    if req.init is None:
        w, h = req.width or native, req.height or native
        return Prepared(w, h, 1.0, None, None, lambda im: im)

    init = req.init
    original = init.image if init.image.mode == "RGB" else init.image.convert("RGB")  # no copy of a big picture
    if req.mask is None:
        w, h = _sizes(req, original.width, original.height, native)
        start = resize_image(original, w, h, init.resize_mode)
        return Prepared(w, h, init.strength, lambda _seed: start, None, lambda im: im)

    m = req.mask
    soft = blur_mask(m.mask, m.blur)  # the overlay: feathered edge, exact zeros far from the mask
    region = None
    if m.only_masked:
        region = crop_region(soft, m.padding)
        assert region is not None  # validate() refuses empty masks
        rw, rh = region[2] - region[0], region[3] - region[1]
        if req.width and req.height:
            w, h = req.width, req.height
        else:
            scale = native / max(rw, rh)
            w, h = req.width or round8(rw * scale), req.height or round8(rh * scale)
        region = expand_region(region, w, h, original.width, original.height)
        work = original.crop(region).resize((w, h), _RESAMPLE)
        work_mask = soft.crop(region).resize((w, h), _RESAMPLE)
    else:
        # Inpainting always maps the whole picture (plain resize), so the result lines up with the original.
        w, h = _sizes(req, original.width, original.height, native)
        work = original.resize((w, h), _RESAMPLE) if original.size != (w, h) else original
        work_mask = soft.resize((w, h), _RESAMPLE) if soft.size != (w, h) else soft

    if m.fill == "fill":
        filled = fill_masked(work, work_mask)

        def start(_seed: int) -> Image.Image:
            return filled
    elif m.fill == "noise":

        def start(seed: int) -> Image.Image:
            return noise_masked(work, work_mask, seed)
    else:

        def start(_seed: int) -> Image.Image:
            return work

    def finish(result: Image.Image) -> Image.Image:
        result = result.convert("RGB")
        if region is not None:
            full = original.copy()
            full.paste(result.resize((region[2] - region[0], region[3] - region[1]), _RESAMPLE), region[:2])
        else:
            full = result.resize(original.size, _RESAMPLE) if result.size != original.size else result
        return Image.composite(full, original, soft)

    return Prepared(w, h, init.strength, start, work_mask, finish, region)


MAX_MARGIN = 2048


def outpaint_inputs(
    image: Image.Image,
    *,
    left: int = 0,
    right: int = 0,
    up: int = 0,
    down: int = 0,
    overlap: int = 8,
    blur: float = 8,
    strength: float = 0.9,
    fill: str = "fill",
) -> tuple[InitImage, InpaintMask]:
    """Outpainting as inpainting: the enlarged canvas, and a mask over the new area and the seam band."""
    margins = {"left": left, "right": right, "up": up, "down": down}
    for name, value in margins.items():
        if not 0 <= value <= MAX_MARGIN:
            raise SettingError(f"{name} must be between 0 and {MAX_MARGIN} pixels, got {value}", name)
    if not any(margins.values()):
        raise SettingError("give at least one margin to extend", "left", "right", "up", "down")
    if not 0 <= overlap <= 256:
        raise LanskapError(f"overlap must be between 0 and 256 pixels, got {overlap}")
    canvas, mask = outpaint_canvas(image, left, right, up, down, overlap=overlap)
    return InitImage(canvas, strength), InpaintMask(mask, blur, fill, outpaint=(left, right, up, down))
