"""Pixel work around img2img, inpainting and outpainting, following A1111's rules.

Pure Pillow/numpy, no model: resize modes, mask blur, the "only masked" crop
region, masked-content fill, and the outpainting canvas. Kept apart from the
engine so that each rule can be tested on its own.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

RESIZE_MODES = ("just-resize", "crop-and-resize", "resize-and-fill")
FILL_MODES = ("fill", "original", "noise")
_RESAMPLE = Image.Resampling.LANCZOS


def round8(value: float) -> int:
    """Nearest multiple of 8, at least 64: the sizes the VAE and UNet accept."""
    return max(64, round(value / 8) * 8)


def default_size(width: int, height: int, native: int) -> tuple[int, int]:
    """Processing size for an input image: its own size, scaled down so the long side is at most 2x native."""
    scale = min(1.0, 2 * native / max(width, height))
    return round8(width * scale), round8(height * scale)


def resize_image(im: Image.Image, width: int, height: int, mode: str = "just-resize") -> Image.Image:
    """A1111's three resize modes (``resize_image`` in images.py)."""
    if mode not in RESIZE_MODES:
        raise ValueError(mode)
    if im.size == (width, height):
        return im.copy()
    if mode == "just-resize":
        return im.resize((width, height), _RESAMPLE)
    if mode == "crop-and-resize":
        return ImageOps.fit(im, (width, height), _RESAMPLE, centering=(0.5, 0.5))
    # resize-and-fill: fit inside, then stretch the image's own edges into the gaps.
    ratio, src_ratio = width / height, im.width / im.height
    src_w = width if ratio < src_ratio else max(1, im.width * height // im.height)
    src_h = height if ratio >= src_ratio else max(1, im.height * width // im.width)
    resized = im.resize((src_w, src_h), _RESAMPLE)
    out = Image.new(im.mode, (width, height))
    left, top = width // 2 - src_w // 2, height // 2 - src_h // 2
    out.paste(resized, (left, top))
    if ratio < src_ratio:  # gaps above and below
        fill = top
        if fill > 0:
            out.paste(resized.resize((width, fill), box=(0, 0, width, 0)), (0, 0))
            bottom = height - (top + src_h)
            out.paste(resized.resize((width, bottom), box=(0, resized.height, width, resized.height)), (0, top + src_h))
    elif ratio > src_ratio:  # gaps left and right
        fill = left
        if fill > 0:
            out.paste(resized.resize((fill, height), box=(0, 0, 0, height)), (0, 0))
            right = width - (left + src_w)
            out.paste(resized.resize((right, height), box=(resized.width, 0, resized.width, height)), (left + src_w, 0))
    return out


def blur_mask(mask: Image.Image, radius: float) -> Image.Image:
    """Feather a mask so the repainted area blends into the kept one."""
    mask = mask.convert("L")
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def crop_region(mask: Image.Image, padding: int) -> tuple[int, int, int, int] | None:
    """Bounding box of the mask's non-zero pixels, grown by ``padding`` and clipped (A1111 ``get_crop_region``)."""
    box = mask.convert("L").point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def expand_region(
    region: tuple[int, int, int, int], width: int, height: int, image_w: int, image_h: int
) -> tuple[int, int, int, int]:
    """Grow a crop region to the processing aspect ratio without leaving the image (A1111 ``expand_crop_region``)."""
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > width / height:
        want = int((x2 - x1) * height / width) - (y2 - y1)
        y1 -= want // 2
        y2 += want - want // 2
        if y2 > image_h:
            y1 -= y2 - image_h
            y2 = image_h
        if y1 < 0:
            y2 = min(y2 - y1, image_h)
            y1 = 0
    else:
        want = int((y2 - y1) * width / height) - (x2 - x1)
        x1 -= want // 2
        x2 += want - want // 2
        if x2 > image_w:
            x1 -= x2 - image_w
            x2 = image_w
        if x1 < 0:
            x2 = min(x2 - x1, image_w)
            x1 = 0
    return x1, y1, x2, y2


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Replace the masked area with blurred colours from around it (A1111 "fill").

    Successively smaller blurs of the unmasked pixels are layered, so the hole
    takes the surrounding colours and the known area stays sharp.
    """
    rgb = image.convert("RGB")
    keep = ImageOps.invert(mask.convert("L"))
    known = Image.new("RGBa", rgb.size)
    known.paste(rgb.convert("RGBA").convert("RGBa"), mask=keep)
    acc = Image.new("RGBA", rgb.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = known.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            acc.alpha_composite(layer)
    out = acc.convert("RGB")
    out.paste(rgb, mask=keep.point(lambda v: 255 if v == 255 else 0))
    return out


def noise_masked(image: Image.Image, mask: Image.Image, seed: int) -> Image.Image:
    """Replace the masked area with seeded random pixels, so it starts from nothing of the original."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(image.height, image.width, 3), dtype=np.uint8)
    out = image.convert("RGB").copy()
    out.paste(Image.fromarray(noise, "RGB"), mask=mask.convert("L").point(lambda v: 255 if v >= 128 else 0))
    return out


def outpaint_canvas(
    image: Image.Image, left: int, right: int, up: int, down: int, overlap: int = 8
) -> tuple[Image.Image, Image.Image]:
    """The enlarged canvas (new area pre-filled from the edges) and its mask (white = paint).

    The mask reaches ``overlap`` pixels into the original, so the model repaints a
    thin band across the seam and the blend has something to blend.
    """
    if min(left, right, up, down) < 0:
        raise ValueError("outpaint margins must be >= 0")
    w, h = image.width + left + right, image.height + up + down
    canvas = Image.new("RGB", (w, h))
    canvas.paste(image.convert("RGB"), (left, up))
    mask = Image.new("L", (w, h), 255)
    inner = (
        left + (overlap if left else 0),
        up + (overlap if up else 0),
        left + image.width - (overlap if right else 0),
        up + image.height - (overlap if down else 0),
    )
    if inner[2] > inner[0] and inner[3] > inner[1]:
        mask.paste(0, inner)
    new_area = Image.new("L", (w, h), 255)
    new_area.paste(0, (left, up, left + image.width, up + image.height))
    return fill_masked(canvas, new_area), mask
