"""The invisible DWT-DCT watermark that Stability's own SD 2 scripts put on every image.

Uses the ``invisible-watermark`` package (imwatermark), the same code and the
same 32-bit message ("SDV2") as Stability's reference ``txt2img.py``, so that
existing detectors of SD output recognise lanskap's images too. SD 1.x's
message is recognised on checking as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MESSAGE = b"SDV2"
KNOWN = (b"SDV2", b"StableDiffusionV1")
METHOD = "dwtDct"
MAX_PASSES = 4
MIN_PIXELS = 256 * 256  # imwatermark refuses smaller images: too few blocks to carry the bits


def can_watermark(image: Image.Image) -> bool:
    return image.width * image.height >= MIN_PIXELS


def _encode_once(image: Image.Image, message: bytes) -> Image.Image:
    from imwatermark import WatermarkEncoder

    enc = WatermarkEncoder()
    enc.set_watermark("bytes", message)
    bgr = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()  # imwatermark works on OpenCV's BGR
    return Image.fromarray(np.ascontiguousarray(enc.encode(bgr, METHOD)[:, :, ::-1]), "RGB")


def apply_watermark(image: Image.Image, message: bytes = MESSAGE) -> Image.Image | None:
    """A watermarked copy, verified by decoding it; None when the picture cannot carry it.

    One pass of imwatermark is not always readable back on busy, noisy pictures
    (rounding moves a block's largest coefficient), so the encoder runs again on
    its own output, up to MAX_PASSES times, until the decoder reads the message.
    """
    if not can_watermark(image):
        return None
    marked = image
    for _ in range(MAX_PASSES):
        marked = _encode_once(marked, message)
        if check_watermark(marked).message == message.decode():
            marked.info.update(image.info)
            return marked
    return None


@dataclass(frozen=True)
class WatermarkCheck:
    found: bool
    message: str | None  # the decoded message when it is a known one
    reason: str = ""


def check_watermark(image: Image.Image) -> WatermarkCheck:
    """Decode each known message's length and report the one that matches, if any."""
    if not can_watermark(image):
        return WatermarkCheck(False, None, f"image too small to carry a watermark ({image.width}x{image.height})")
    from imwatermark import WatermarkDecoder

    bgr = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()
    for message in KNOWN:
        dec = WatermarkDecoder("bytes", len(message) * 8)
        try:
            got = dec.decode(bgr, METHOD)
        except (RuntimeError, ValueError):
            continue
        if got == message:
            return WatermarkCheck(True, message.decode())
    return WatermarkCheck(False, None, "no known watermark found")
