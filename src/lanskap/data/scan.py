"""Ingest a messy folder: decode every picture, reject what can't be used, find duplicates.

Nothing in the source folder is ever written to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lanskap.errors import LanskapError
from lanskap.folders import walk
from lanskap.images import open_image, to_rgb

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
#: Larger files are not read: no training picture is this big, and a sparse file can claim gigabytes.
MAX_IMAGE_BYTES = 512 * 1024**2
# Files that travel with images and are read, not rejected.
COMPANION_EXTS = {".txt", ".csv", ".jsonl", ".json", ".toml", ".yaml", ".yml", ".md"}


@dataclass
class Picture:
    source: str  # path relative to SRC, with forward slashes
    sha256: str  # of the file's bytes: identical files are exact duplicates
    phash: str  # 64-bit perceptual hash, hex
    width: int
    height: int
    image: Image.Image  # decoded, EXIF-rotated, RGB


@dataclass(frozen=True)
class Rejected:
    source: str
    reason: str


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def scan(
    src: Path,
    *,
    min_side: int = 512,
    background: tuple[int, int, int] = (255, 255, 255),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Picture], list[Rejected]]:
    """Decode every picture under ``src`` (recursively), in sorted order."""
    import imagehash

    if not src.is_dir():
        raise LanskapError(f"source folder not found: {src}")
    files, passed_over = walk(src)  # no links out of SRC, no FIFOs or devices, odd names listed
    pictures: list[Picture] = []
    rejected: list[Rejected] = [Rejected(s.rel, s.reason) for s in passed_over]
    for i, path in enumerate(files, 1):
        if progress:
            progress(i, len(files))
        rel = _rel(path, src)
        ext = path.suffix.lower()
        if ext in COMPANION_EXTS:
            continue
        if ext not in IMAGE_EXTS:
            rejected.append(Rejected(rel, f"not an image ({ext or 'no extension'})"))
            continue
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            rejected.append(
                Rejected(rel, f"too large: {size / 1024**3:.1f} GB (at most {MAX_IMAGE_BYTES // 1024**2} MB)")
            )
            continue
        try:
            raw = open_image(path)
        except LanskapError as exc:
            reason = "not an image" if "not an image" in str(exc) else "corrupt or truncated"
            rejected.append(Rejected(rel, f"{reason}: {str(exc).split(': ', 1)[-1]}"))
            continue
        rgb = to_rgb(raw, background)
        if min(rgb.size) < min_side:
            rejected.append(Rejected(rel, f"too small: {rgb.width}x{rgb.height} (minimum side {min_side})"))
            continue
        with open(path, "rb") as f:  # in chunks: the file's size never becomes memory
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        pictures.append(Picture(rel, digest, str(imagehash.phash(rgb)), rgb.width, rgb.height, rgb))
    return pictures, rejected


def dedupe(pictures: list[Picture], threshold: int = 4) -> tuple[list[Picture], list[Rejected]]:
    """Keep one of each group of exact or near duplicates (perceptual-hash distance <= threshold).

    The kept copy is the largest; ties go to the first path in sorted order.
    """
    import imagehash

    order = sorted(pictures, key=lambda p: (-(p.width * p.height), p.source))
    kept: list[Picture] = []
    dropped: list[Rejected] = []
    for pic in order:
        twin = next((k for k in kept if k.sha256 == pic.sha256), None)
        if twin is not None:
            dropped.append(Rejected(pic.source, f"exact duplicate of {twin.source}"))
            continue
        if threshold >= 0:
            h = imagehash.hex_to_hash(pic.phash)
            near = next((k for k in kept if imagehash.hex_to_hash(k.phash) - h <= threshold), None)
            if near is not None:
                dist = imagehash.hex_to_hash(near.phash) - h
                dropped.append(Rejected(pic.source, f"near duplicate of {near.source} (hash distance {dist})"))
                continue
        kept.append(pic)
    kept.sort(key=lambda p: p.source)
    return kept, sorted(dropped, key=lambda r: r.source)
