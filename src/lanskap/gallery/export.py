"""Getting images out of the gallery: one picture as PNG/JPG/WebP, or a selection as a ZIP.

A converted picture keeps its generation parameters (PNG text chunk or EXIF
UserComment, as A1111 reads them); the ZIP also carries ``gallery.json`` with
every row, so an export can be read back without the database.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

from lanskap.errors import LanskapError
from lanskap.gallery.store import Entry, Gallery
from lanskap.generation.output import check_format, encode_image
from lanskap.images import load_rgb
from lanskap.io import atomic_write


def image_bytes(entry: Entry, fmt: str | None = None) -> tuple[bytes, str]:
    """The picture as ``fmt`` (its own format when None) and the file name to offer."""
    if not entry.path.is_file():
        raise LanskapError(f"image {entry.id}'s file is missing: {entry.path}")
    own = entry.path.suffix.lower().lstrip(".").replace("jpeg", "jpg")
    fmt = check_format(fmt or own).replace("jpeg", "jpg")
    if fmt == own:
        return entry.path.read_bytes(), entry.path.name
    data = encode_image(load_rgb(entry.path), fmt, entry.infotext or None)
    return data, f"{entry.path.stem}.{fmt}"


def zip_bytes(entries: list[Entry], fmt: str | None = None) -> bytes:
    """A ZIP of the pictures (in ``fmt`` or as stored) plus ``gallery.json``."""
    buf = io.BytesIO()
    rows = []
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # images are compressed already
        for e in entries:
            data, name = image_bytes(e, fmt)
            arcname = f"{e.id:06d}-{name}"
            zf.writestr(arcname, data)
            rows.append({**e.to_dict(), "file": arcname})
        zf.writestr("gallery.json", json.dumps(rows, indent=2, ensure_ascii=False))
    return buf.getvalue()


def export_zip(gallery: Gallery, ids: list[int], dest: Path, fmt: str | None = None) -> Path:
    """Write the ZIP of ``ids`` to ``dest`` (temp file, then rename); unknown ids are an error."""
    if not ids:
        raise LanskapError("give at least one image id to export")
    entries = [gallery.get(i) for i in ids]
    data = zip_bytes(entries, fmt)
    return atomic_write(Path(dest), lambda fh: fh.write(data))


MAX_GRID_IMAGES = 64


def grid_layout(n: int) -> tuple[int, int]:
    """(columns, rows) for ``n`` pictures, A1111's rule (``image_grid`` with n_rows -1): rows = round(sqrt n)."""
    rows = min(n, max(1, round(math.sqrt(n))))
    return math.ceil(n / rows), rows


def grid_bytes(entries: list[Entry], fmt: str = "png") -> bytes:
    """One picture of several, row by row in the order given, as A1111 saves a batch's grid.

    Cells take the largest picture's size (smaller ones sit in their cell's top-left corner on black).
    The grid carries the first picture's parameters, as A1111's grid file does.
    """
    from PIL import Image

    if not entries:
        raise LanskapError("give at least one image for a grid")
    if len(entries) > MAX_GRID_IMAGES:
        raise LanskapError(f"a grid holds at most {MAX_GRID_IMAGES} images, got {len(entries)}")
    for e in entries:
        if not e.path.is_file():
            raise LanskapError(f"image {e.id}'s file is missing: {e.path}")
    cols, rows = grid_layout(len(entries))
    w, h = max(e.width for e in entries), max(e.height for e in entries)
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, e in enumerate(entries):
        with Image.open(e.path) as im:
            grid.paste(im.convert("RGB"), (i % cols * w, i // cols * h))
    return encode_image(grid, check_format(fmt), entries[0].infotext or None)


def export_grid(gallery: Gallery, ids: list[int], dest: Path, fmt: str | None = None) -> Path:
    """Write the grid of ``ids`` to ``dest`` (temp file, then rename); the format follows the suffix."""
    if not ids:
        raise LanskapError("give at least one image id for a grid")
    fmt = fmt or Path(dest).suffix.lower().lstrip(".") or "png"
    data = grid_bytes([gallery.get(i) for i in ids], fmt)
    return atomic_write(Path(dest), lambda fh: fh.write(data))
