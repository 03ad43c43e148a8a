"""Panoramas: a canvas wider (or taller) than the model's frame, denoised in overlapping windows.

MultiDiffusion (Bar-Tal et al. 2023) runs the model on windows of its native size and fuses them
at every step, so the whole canvas is one picture with one horizon, and no window ever sees more
than the model was trained on. diffusers' ``StableDiffusionPanoramaPipeline`` does this, but it is
deprecated, fixed to 64-latent windows and to its own sampler loop; lanskap fuses the model's
predictions instead (``generation/compose.py``), so every sampler, LoRA, prompt feature and mode
works unchanged. This module holds the options, the window layout and the 360° helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lanskap.errors import LanskapError
from lanskap.upscale.tiles import positions

#: The largest side of a panorama (a generation's own limit is 2048): memory is bounded by the
#: window batch, and the VAE decode tiles itself when the picture would not fit.
MAX_PANORAMA_SIDE = 8192
MAX_PANORAMA_PIXELS = 8192 * 4096
MAX_WINDOW_BATCH = 64
#: Size presets of the web app: width over height; "360°" is an equirectangular 2:1.
PRESETS = {"2:1": 2.0, "3:1": 3.0, "4:1": 4.0, "360°": 2.0}


@dataclass(frozen=True)
class Panorama:
    """Denoise the request's canvas in windows; 0 means the default for that option.

    ``window`` defaults to the model's native size (or the canvas's shorter side if that is
    smaller), ``stride`` to half the window. ``batch`` windows go through the model at once: it
    sets the memory, not the picture. ``equirectangular`` makes a 2:1 360° picture: it wraps
    around horizontally, and its top and bottom rows ease to one colour each, as a sphere's poles must.
    """

    window: int = 0
    stride: int = 0
    batch: int = 4
    equirectangular: bool = False

    def validate(self, width: int | None, height: int | None) -> None:
        for name, value in (("panorama window", self.window), ("panorama stride", self.stride)):
            if value < 0 or value % 8:
                raise LanskapError(f"{name} must be a positive multiple of 8 (or 0 for the default), got {value}")
        if not 1 <= self.batch <= MAX_WINDOW_BATCH:
            raise LanskapError(f"panorama window batch must be between 1 and {MAX_WINDOW_BATCH}, got {self.batch}")
        if self.window and self.stride > self.window:
            raise LanskapError(f"panorama stride {self.stride} is larger than its window {self.window}: gaps stay")
        if width is None or height is None:
            return
        check_size(width, height)
        if self.window and self.window > min(width, height):
            raise LanskapError(
                f"the panorama {width}x{height} is smaller than its {self.window} px window; "
                "make each side at least the window, or use a smaller window"
            )
        if self.equirectangular and width != 2 * height:
            raise LanskapError(
                f"a 360° (equirectangular) panorama is twice as wide as it is high, not {width}x{height} "
                f"(try {2 * height}x{height})"
            )

    def layout(self, native: int, width: int, height: int) -> tuple[int, int]:
        """(window, stride) in pixels for a canvas: the defaults resolved, multiples of 8."""
        window = self.window or min(native, width, height) // 8 * 8
        stride = self.stride or max(8, window // 2 // 8 * 8)
        return window, min(stride, window)

    def infotext(self, native: int, width: int, height: int) -> dict[str, str]:
        window, stride = self.layout(native, width, height)
        out = {"Panorama window": str(window), "Panorama stride": str(stride), "Panorama batch": str(self.batch)}
        if self.equirectangular:
            out["Equirectangular"] = "True"
        return out


def from_infotext(p: dict[str, str]) -> Panorama | None:
    """The panorama an infotext describes (None when it describes none)."""
    if "Panorama window" not in p and "Equirectangular" not in p:
        return None
    try:
        return Panorama(
            window=int(p.get("Panorama window", 0)),
            stride=int(p.get("Panorama stride", 0)),
            batch=int(p.get("Panorama batch", 4)),
            equirectangular=p.get("Equirectangular", "").lower() == "true",
        )
    except ValueError:
        raise LanskapError("the image's panorama parameters are malformed (Panorama window, stride or batch)") from None


def check_size(width: int, height: int) -> None:
    """A panorama's own size bound (it replaces the single frame's 2048 px)."""
    if max(width, height) > MAX_PANORAMA_SIDE or width * height > MAX_PANORAMA_PIXELS:
        raise LanskapError(
            f"a panorama of {width}x{height} is too large: the largest side is {MAX_PANORAMA_SIDE} "
            f"and the most pixels {MAX_PANORAMA_PIXELS}"
        )


def starts(size: int, window: int, stride: int, wrap: bool) -> list[int]:
    """Where windows start along one side (in any unit).

    Without wrapping they are spread evenly with at least ``window - stride`` overlap and the last
    flush with the edge (the tile layout SD upscale uses). With wrapping they step by ``stride``
    round the whole side, the last ones running past the edge into the start again.
    """
    if window >= size:
        return [0]
    if not wrap:
        return positions(size, window, window - stride)
    count = math.ceil(size / stride)
    return [round(i * size / count) for i in range(count)]


def ease_poles(image: Image.Image, band: float = 0.1) -> Image.Image:
    """Ease the top and bottom rows of an equirectangular picture to their mean colour.

    At a pole every pixel of the row is the same point of the sphere, so any detail there is
    pinched into a star by a skybox. Over ``band`` of the height from each edge, every row is blended
    with its own mean, fully at the edge (smoothstep), so the poles are calm and the horizon is untouched.
    """
    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    h = a.shape[0]
    rows = max(1, int(h * band))
    t = 1.0 - (np.arange(rows, dtype=np.float32) + 0.5) / rows  # 1 at the edge, towards 0 inward
    w = (t * t * (3 - 2 * t))[:, None, None]
    top, bottom = a[:rows], a[h - rows :][::-1]
    a[:rows] = top * (1 - w) + top.mean(axis=1, keepdims=True) * w
    a[h - rows :] = (bottom * (1 - w) + bottom.mean(axis=1, keepdims=True) * w)[::-1]
    out = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))
    out.info = dict(image.info)
    return out
