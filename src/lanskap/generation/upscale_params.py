"""What an upscale job is asked to do, validated in one place for the CLI, the API and the web app.

The fields are A1111's Extras (scale by or resize to, a second upscaler blended in at a
visibility) plus SD upscale: a tiled img2img pass over the enlarged picture.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from lanskap.errors import LanskapError
from lanskap.generation.params import MIN_SIDE, GenerationRequest

if TYPE_CHECKING:
    from lanskap.config import Settings

MAX_SCALE = 8.0  # A1111's Extras slider
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 8192
MAX_TILE = 2048


@dataclass(frozen=True)
class TiledPass:
    """SD upscale's img2img over tiles: ``request`` holds the prompt, seed, steps, sampler and the
    tile size (its width and height); tile k is made from seed + k (A1111's rule at batch size 1)."""

    request: GenerationRequest
    denoise: float = 0.35
    overlap: int = 64

    @property
    def tile(self) -> tuple[int, int]:
        return self.request.width or 512, self.request.height or 512

    def validate(self) -> None:
        self.request.validate()
        if self.request.init is not None or self.request.hires is not None:
            raise LanskapError("SD upscale's tiles take no input picture or hires fix of their own")
        if not 0.0 <= self.denoise <= 1.0:
            raise LanskapError(f"SD upscale denoising strength must be between 0 and 1, got {self.denoise:g}")
        tw, th = self.tile
        if max(tw, th) > MAX_TILE:
            raise LanskapError(f"the tile size must be at most {MAX_TILE}, got {tw}x{th}")
        if not 0 <= self.overlap <= min(tw, th) // 2:
            raise LanskapError(
                f"tile overlap must be between 0 and half the tile ({min(tw, th) // 2}), got {self.overlap}"
            )


@dataclass(frozen=True)
class UpscaleRequest:
    """Enlarge pictures: by ``scale``, or to ``width`` x ``height`` (then cropped to it, if ``crop``)."""

    upscaler: str = "Lanczos"
    scale: float = 2.0
    width: int = 0
    height: int = 0
    crop: bool = True
    upscaler_2: str = "None"
    visibility_2: float = 0.0
    tiled: TiledPass | None = None  # SD upscale
    watermark: bool = True

    def validate(self) -> UpscaleRequest:
        if not 1.0 <= self.scale <= MAX_SCALE or self.scale != self.scale:
            raise LanskapError(f"upscale factor must be between 1 and {MAX_SCALE:g}, got {self.scale:g}")
        for side, value in (("width", self.width), ("height", self.height)):
            if value and not MIN_SIDE <= value <= MAX_SIDE:
                raise LanskapError(f"upscale {side} must be 0 or between {MIN_SIDE} and {MAX_SIDE}, got {value}")
        if not 0.0 <= self.visibility_2 <= 1.0:
            raise LanskapError(f"the second upscaler's visibility must be between 0 and 1, got {self.visibility_2:g}")
        if self.tiled is not None:
            self.tiled.validate()
        return self

    def check_names(self, settings: Settings) -> None:
        """Every upscaler named is installed (a one-line error listing them otherwise)."""
        from lanskap.upscale.upscalers import find

        find(self.upscaler, settings)
        if self.visibility_2 > 0:
            find(self.upscaler_2, settings)

    def sizes(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """(the size to upscale to, the size to crop to or None) for a ``width`` x ``height`` picture.

        A1111's Extras: to a size, the factor is the larger of the two ratios; then the middle is
        cropped to that size when ``crop``. Raises when the result would pass the size limit.
        """
        from lanskap.upscale.upscalers import target_size

        if self.width or self.height:
            # Cover the asked size exactly (A1111 rounds to 8 first and pads the crop with black; we don't).
            scale = max((self.width or 0) / width, (self.height or 0) / height)
            size = (max(1, math.ceil(width * scale - 1e-6)), max(1, math.ceil(height * scale - 1e-6)))
        else:
            scale = self.scale
            size = target_size(width, height, scale)
        crop = None
        if (self.width or self.height) and self.crop:
            crop = (min(self.width or size[0], size[0]), min(self.height or size[1], size[1]))
        if max(size) > MAX_SIDE or size[0] * size[1] > MAX_PIXELS:
            raise LanskapError(
                f"upscaling {width}x{height} by {scale:g} would make {size[0]}x{size[1]}; the largest side "
                f"allowed is {MAX_SIDE}"
            )
        return size, crop

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, tiled=None))
        if self.tiled is not None:
            d["tiled"] = {"denoise": self.tiled.denoise, "overlap": self.tiled.overlap,
                          "request": self.tiled.request.to_dict()}  # fmt: skip
        return d
