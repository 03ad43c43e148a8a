"""Save images with their infotext, and read it back.

PNG gets a ``parameters`` text chunk; JPEG and WebP get an EXIF UserComment in
the "UNICODE" (UTF-16BE) encoding that A1111 writes through piexif, so A1111's
PNG Info and other infotext readers show the parameters.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from lanskap.errors import LanskapError
from lanskap.io import atomic_write_bytes

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE = b"UNICODE\x00"
_ASCII = b"ASCII\x00\x00\x00"


def check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise LanskapError(f"unknown image format {fmt!r}; choose png, jpg or webp")
    return "jpg" if fmt == "jpeg" else fmt


def ensure_writable_dir(folder: Path) -> Path:
    """Create ``folder`` and prove it is writable, before any work is done."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".lanskap-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LanskapError(f"output folder {folder} is not writable: {exc.strerror or exc}") from None
    return folder


def encode_image(image: Image.Image, fmt: str, infotext: str | None, quality: int = 95) -> bytes:
    fmt = check_format(fmt)
    buf = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        if infotext:
            info.add_text("parameters", infotext)
        image.save(buf, "PNG", pnginfo=info)
    else:
        # piexif, not Pillow's Exif, because Pillow tags UserComment as BYTE, which A1111's
        # piexif-based reader can't decode; it must be UNDEFINED with an encoding prefix.
        import piexif
        import piexif.helper

        # Full-resolution chroma (JPEG 4:4:4) and lossless WebP: the invisible watermark lives in the
        # U channel, which 4:2:0 subsampling would wipe out, and concept art deserves the detail anyway.
        kwargs: dict = {"quality": quality, "subsampling": 0} if fmt in ("jpg", "jpeg") else {"lossless": True}
        if infotext:
            comment = piexif.helper.UserComment.dump(infotext, encoding="unicode")
            kwargs["exif"] = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})
        image.convert("RGB").save(buf, FORMATS[fmt], **kwargs)
    return buf.getvalue()


_NAME = re.compile(r"^(\d{5,})-")


def next_index(folder: Path) -> int:
    """One more than the highest ``NNNNN-`` number in ``folder``."""
    best = 0
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            best = max(best, int(m.group(1)))
    return best + 1


def save_image(image: Image.Image, folder: Path, seed: int, infotext: str | None, fmt: str = "png") -> Path:
    """Save as ``NNNNN-SEED.ext`` (A1111's naming) without ever overwriting a file."""
    fmt = check_format(fmt)
    return save_bytes(encode_image(image, fmt, infotext), folder, seed, fmt)


def save_bytes(data: bytes, folder: Path, seed: int, fmt: str) -> Path:
    """Write encoded image bytes under the next free ``NNNNN-SEED.ext`` name."""
    index = next_index(folder)
    while True:
        path = folder / f"{index:05d}-{seed}.{fmt}"
        try:
            return atomic_write_bytes(path, data, replace=False)
        except FileExistsError:
            index += 1


def _decode_user_comment(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, tuple):  # written with the BYTE type by some tools
        raw = bytes(raw)
    prefix, body = raw[:8], raw[8:]
    if prefix == _UNICODE:
        # piexif/A1111 write UTF-16BE; some tools write LE. Pick the one that decodes to text.
        for enc in ("utf-16-be", "utf-16-le"):
            try:
                text = body.decode(enc)
            except UnicodeDecodeError:
                continue
            if text and all(ch.isprintable() or ch in "\n\r\t" for ch in text):
                return text
        return body.decode("utf-16-be", errors="replace")
    if prefix in (_ASCII, b"\x00" * 8):
        return body.decode("utf-8", errors="replace").rstrip("\x00")
    return raw.decode("utf-8", errors="replace")


def read_infotext(path: Path) -> str | None:
    """The infotext stored in an image file, or None when it has none (read as :func:`image_info` reads it)."""
    from lanskap.images import MAX_PIXELS

    path = Path(path)
    if not path.is_file():
        raise LanskapError(f"image not found: {path}")
    try:
        text, _ = image_info(path.read_bytes(), MAX_PIXELS)
    except (LanskapError, OSError):
        raise LanskapError(f"{path} is not a readable image") from None
    return text or None


#: Keys of ``Image.info`` A1111's PNG Info leaves out of "items" (``images.IGNORED_INFO_KEYS``).
IGNORED_INFO_KEYS = frozenset(
    {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background", "timestamp",
     "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop"}
)  # fmt: skip


def image_info(raw: bytes, max_pixels: int) -> tuple[str, dict[str, object]]:
    """(infotext, other text items) of a picture, as A1111's ``read_info_from_image`` gives them.

    Only the header and text chunks are read, never the pixels, and a picture over ``max_pixels``
    is refused before anything else: a small file can declare a huge picture.
    """
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.width * im.height > max_pixels:
                raise LanskapError(
                    f"image is {im.width}x{im.height}; this server reads pictures of up to {max_pixels:,} pixels"
                )
            items = dict(im.info)
    except LanskapError:
        raise
    except Image.DecompressionBombError:
        raise LanskapError(f"image is too large; this server reads pictures of up to {max_pixels:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        # ValueError: a text chunk that inflates past Pillow's limit (a zTXt bomb)
        raise LanskapError("image is not a picture lanskap can read (PNG, JPEG or WebP)") from None
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        comment = _exif_comment(items.pop("exif"))
        geninfo = comment or geninfo
    elif "comment" in items:
        value = items["comment"]
        geninfo = value.decode("utf-8", errors="ignore") if isinstance(value, bytes) else str(value)
    clean: dict[str, object] = {}
    for key, value in items.items():
        if key in IGNORED_INFO_KEYS:
            continue
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, str | int | float | bool | list):
            clean[str(key)] = value
    return (geninfo if isinstance(geninfo, str) else ""), clean


def _exif_comment(raw: object) -> str:
    """The EXIF UserComment (where A1111 and lanskap put a JPEG's or WebP's infotext), from its bytes."""
    if not isinstance(raw, bytes):
        return ""
    try:
        exif = Image.Exif()
        exif.load(raw)
        comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # malformed EXIF: no comment, as A1111 treats it
        return ""
    return _decode_user_comment(comment) if comment else ""
