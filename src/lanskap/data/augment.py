"""Training-time augmentation (thesis: resize to 768, random crop, flip, colour jitter).

Plain Pillow + numpy instead of torchvision, which this project must not install.
The trainer and ``lanskap dataset preview`` call the same functions, so the preview
shows exactly what the model will see.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageEnhance

from lanskap.images import center_crop

_RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class Augment:
    resolution: int = 768
    random_crop: bool = True  # a window at a random place; False = centre crop
    # Area of the crop window as a fraction of the largest window of the target's shape;
    # (1, 1) is the diffusers example's RandomCrop, below 1 zooms in (a random resized crop).
    crop_scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = True  # horizontal, p = 0.5
    jitter: float = 0.0  # colour jitter strength: brightness/contrast/saturation ± jitter, hue ± jitter/4

    @property
    def changes_colour(self) -> bool:
        return self.jitter > 0


def resize_short(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, keeping the aspect ratio."""
    scale = size / min(im.size)
    return im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), _RESAMPLE)


def resize_cover(im: Image.Image, width: int, height: int) -> Image.Image:
    """Scale so the picture covers ``width`` x ``height``, keeping its aspect ratio."""
    scale = max(width / im.width, height / im.height)
    size = (max(width, round(im.width * scale)), max(height, round(im.height * scale)))
    return im if size == im.size else im.resize(size, _RESAMPLE)


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


def random_crop(
    im: Image.Image, width: int, height: int, rng: random.Random, scale: tuple[float, float]
) -> Image.Image:
    """A ``width`` x ``height``-shaped window of area fraction U(scale) at a random place, resized to size."""
    s = math.sqrt(rng.uniform(*scale))
    cw, ch = max(1, round(width * s)), max(1, round(height * s))
    x, y = rng.randint(0, im.width - cw), rng.randint(0, im.height - ch)
    out = im.crop((x, y, x + cw, y + ch))
    return out if out.size == (width, height) else out.resize((width, height), _RESAMPLE)


def augment(
    im: Image.Image, aug: Augment, rng: random.Random, size: tuple[int, int] | None = None
) -> tuple[Image.Image, bool]:
    """One training view of ``im`` at ``size`` (a bucket; default square); also whether it was flipped.

    Resize to cover, crop (random or centre), flip, jitter: the trainer and the preview
    both call this, and the flag lets a latent cache keep both orientations.
    """
    im = im.convert("RGB")
    w, h = size or (aug.resolution, aug.resolution)
    covered = resize_cover(im, w, h)
    out = random_crop(covered, w, h, rng, aug.crop_scale) if aug.random_crop else center_crop(covered, (w, h))
    flipped = aug.flip and rng.random() < 0.5
    if flipped:
        out = hflip(out)
    if aug.jitter > 0:
        out = color_jitter(out, aug.jitter, rng)
    return out, flipped
