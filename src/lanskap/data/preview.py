"""``lanskap dataset preview``: a contact sheet with captions, and a grid of augmentation samples."""

from __future__ import annotations

import io
import random
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lanskap.data.augment import Augment, augment, center_crop, color_jitter, hflip, random_crop, resize_short
from lanskap.data.layout import read_manifest
from lanskap.io import atomic_write_bytes

THUMB = 192


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _save_png(im: Image.Image, path: Path) -> Path:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return atomic_write_bytes(path, buf.getvalue())


def contact_sheet(out: Path, dest: Path, columns: int = 5, limit: int = 100) -> Path:
    """Thumbnails with their split, file name and (wrapped) caption."""
    items = read_manifest(out)["items"][:limit]
    font = _font(11)
    text_h = 16 * 7
    cell_w, cell_h = THUMB + 16, THUMB + text_h + 16
    rows = max(1, -(-len(items) // columns))
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (250, 250, 248))
    draw = ImageDraw.Draw(sheet)
    for i, it in enumerate(items):
        x, y = (i % columns) * cell_w + 8, (i // columns) * cell_h + 8
        with Image.open(out / it["file"]) as im:
            thumb = center_crop(resize_short(im.convert("RGB"), THUMB), THUMB)
        sheet.paste(thumb, (x, y))
        colour = (30, 110, 60) if it["split"] == "train" else (160, 60, 30)
        draw.text((x, y + THUMB + 2), f"[{it['split']}] {Path(it['file']).name[:28]}", fill=colour, font=font)
        wrapped = textwrap.wrap(it["caption"], width=32)
        lines = wrapped[:6]
        if len(wrapped) > 6:
            lines[-1] = lines[-1][:29] + "..."
        for j, line in enumerate(lines):
            draw.text((x, y + THUMB + 18 + 15 * j), line, fill=(20, 20, 20), font=font)
    return _save_png(sheet, dest)


def augmentation_grid(out: Path, dest: Path, aug: Augment, samples: int = 4, seed: int = 0) -> Path:
    """Rows of images; columns: original, resize+centre crop, random crop, flip, colour jitter, all."""
    items = read_manifest(out)["items"][:samples]
    rng = random.Random(seed)
    size = 160
    labels = ["original", f"resize {aug.resolution}", "random crop (zoom)", "flip", "colour jitter", "training view"]
    font = _font(12)
    grid = Image.new("RGB", (len(labels) * (size + 8) + 8, len(items) * (size + 8) + 30), (250, 250, 248))
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        draw.text((8 + c * (size + 8), 8), label, fill=(20, 20, 20), font=font)
    jitter = aug.jitter if aug.jitter > 0 else 0.2
    for r, it in enumerate(items):
        with Image.open(out / it["file"]) as im:
            im = im.convert("RGB")
        resized = center_crop(resize_short(im, aug.resolution), aug.resolution)
        views = [
            im,
            resized,
            random_crop(resize_short(im, aug.resolution), aug.resolution, aug.resolution, rng, (0.5, 1.0)),
            hflip(resized),
            color_jitter(resized, jitter, rng),
            augment(im, aug, rng)[0],
        ]
        for c, view in enumerate(views):
            thumb = view.copy()
            thumb.thumbnail((size, size))
            grid.paste(thumb, (8 + c * (size + 8), 30 + r * (size + 8)))
    return _save_png(grid, dest)
