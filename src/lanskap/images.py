"""Opening user images safely: one place that turns odd files into RGB or clear errors.

Used by img2img/inpainting now and by dataset preparation, so every command
treats EXIF rotation, palette, CMYK and alpha images the same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from lanskap.errors import LanskapError

# A decompression bomb is a user error here, not a warning to ignore.
MAX_PIXELS = 16384 * 16384


def open_image(path: str | Path | IO[bytes], what: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a file or an upload fully, apply its EXIF orientation and return it (mode unchanged).

    The size is checked from the header, before any pixel is decoded.
    """
    if isinstance(path, str | Path):
        p = Path(path)
        if not p.exists():
            raise LanskapError(f"{what} not found: {p}")
        if p.is_dir():
            raise LanskapError(f"{what} is a folder, not an image file: {p}")
        source: Path | IO[bytes] = p
    else:  # an upload (web app, API): a binary file object, named when the browser gave a name
        p = Path(str(getattr(path, "name", "") or "upload"))
        source = path
    label = what if p.name == what else f"{what} {p.name}"  # an upload named after its field says it once
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.width * im.height > max_pixels:
                    raise LanskapError(f"{label} is too large ({im.width}x{im.height}; at most {max_pixels:,} pixels)")
                im.load()
                # In place: a copy would double the memory of a big picture for nothing when it has
                # no orientation to apply (nearly always).
                ImageOps.exif_transpose(im, in_place=True)
                return im
    except LanskapError:
        raise
    except UnidentifiedImageError:
        raise LanskapError(f"{label} is not an image (PNG, JPEG, WebP or BMP expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise LanskapError(f"{label} is too large (at most {max_pixels:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LanskapError(f"{label} is corrupt or truncated: {first}") from None


def center_crop(im: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """The middle ``size`` of ``im`` (a square side, or width and height)."""
    w, h = (size, size) if isinstance(size, int) else size
    left, top = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((left, top, left + w, top + h))


def to_rgb(im: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB from any mode; transparency is flattened onto ``background``."""
    if im.mode == "RGB":
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return im.point(lambda v: v / 256).convert("L").convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str | Path | IO[bytes], what: str = "image") -> Image.Image:
    return to_rgb(open_image(path, what))


def load_mask(path: str | Path | IO[bytes]) -> Image.Image:
    """A mask as 8-bit grey, white = repaint.

    A mask painted on a transparent layer (colour constant, alpha varying) is
    read from its alpha channel, since that is where the painting is.
    """
    im = open_image(path, "mask")
    grey = im.convert("L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        alpha = im.convert("RGBA").getchannel("A")
        lo, hi = grey.getextrema()
        alo, ahi = alpha.getextrema()
        if lo == hi and alo != ahi:
            return alpha
    return grey
