"""Training-time augmentation (thesis: resize to 768, random resized crop, flip, colour jitter).

Plain Pillow + numpy instead of torchvision, which this project must not install.
The trainer and ``lanskap dataset preview`` call the same functions, so the preview
shows exactly what the model will see.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageEnhance

_RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class Augment:
    resolution: int = 768
    random_crop: bool = True  # random resized crop; False = centre crop
    crop_scale: tuple[float, float] = (0.6, 1.0)  # area fraction of the picture kept
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True  # horizontal, p = 0.5
    jitter: float = 0.0  # colour jitter strength: brightness/contrast/saturation ± jitter, hue ± jitter/4

    @property
    def changes_colour(self) -> bool:
        return self.jitter > 0


def resize_short(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, keeping the aspect ratio."""
    scale = size / min(im.size)
    return im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), _RESAMPLE)


def center_crop(im: Image.Image, size: int) -> Image.Image:
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return im.crop((left, top, left + size, top + size))


def random_resized_crop(
    im: Image.Image, size: int, rng: random.Random, scale: tuple[float, float], ratio: tuple[float, float]
) -> Image.Image:
    """torchvision's RandomResizedCrop algorithm: 10 tries at a random area and aspect, then centre."""
    area = im.width * im.height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= im.width and 0 < h <= im.height:
            x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
            return im.crop((x, y, x + w, y + h)).resize((size, size), _RESAMPLE)
    side = min(im.size)
    return center_crop(im, side).resize((size, size), _RESAMPLE)


def hflip(im: Image.Image) -> Image.Image:
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def color_jitter(im: Image.Image, strength: float, rng: random.Random) -> Image.Image:
    """Brightness, contrast, saturation by 1 ± strength and hue by ± strength/4 turns, in random order."""
    ops = ["b", "c", "s", "h"]
    rng.shuffle(ops)
    for op in ops:
        if op == "b":
            im = ImageEnhance.Brightness(im).enhance(rng.uniform(1 - strength, 1 + strength))
        elif op == "c":
            im = ImageEnhance.Contrast(im).enhance(rng.uniform(1 - strength, 1 + strength))
        elif op == "s":
            im = ImageEnhance.Color(im).enhance(rng.uniform(1 - strength, 1 + strength))
        else:
            shift = round(rng.uniform(-strength / 4, strength / 4) * 255)
            h, s, v = im.convert("HSV").split()
            h = h.point([(x + shift) % 256 for x in range(256)])
            im = Image.merge("HSV", (h, s, v)).convert("RGB")
    return im


def augment(im: Image.Image, aug: Augment, rng: random.Random) -> tuple[Image.Image, bool]:
    """One training view of ``im``; also returns whether it was flipped (for latent caching)."""
    im = im.convert("RGB")
    if aug.random_crop:
        out = random_resized_crop(resize_short(im, aug.resolution), aug.resolution, rng, aug.crop_scale, aug.crop_ratio)
    else:
        out = center_crop(resize_short(im, aug.resolution), aug.resolution)
    flipped = aug.flip and rng.random() < 0.5
    if flipped:
        out = hflip(out)
    if aug.jitter > 0:
        out = color_jitter(out, aug.jitter, rng)
    return out, flipped
