"""Model and LoRA hashes compatible with AUTOMATIC1111's infotext.

A1111's "Model hash" is the first 10 hex digits of the file's SHA-256; its
"Lora hashes" use the first 12 of the *addnet* hash (SHA-256 of the tensor data,
skipping the safetensors header, so editing metadata keeps the hash). Hashing a
5 GB file takes seconds, so results are cached by path, size and mtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import threading
from pathlib import Path

from lanskap.io import atomic_write_text

_BLOCK = 1 << 20
_lock = threading.Lock()


def _digest(path: Path, skip_header: bool) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        if skip_header:
            (n,) = struct.unpack("<Q", fh.read(8))
            fh.seek(8 + n)
        for chunk in iter(lambda: fh.read(_BLOCK), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(path: Path, kind: str, cache_dir: Path | None) -> str:
    path = path.resolve()
    st = path.stat()
    key = f"{kind}:{path}:{st.st_size}:{st.st_mtime_ns}"
    cache_file = cache_dir / "hashes.json" if cache_dir else None
    with _lock:
        cache: dict[str, str] = {}
        if cache_file and cache_file.is_file():
            try:
                cache = json.loads(cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cache = {}
        if key in cache:
            return cache[key]
        value = _digest(path, skip_header=(kind == "addnet"))
        if cache_file:
            cache[key] = value
            # A read-only home only costs a re-hash next time.
            with contextlib.suppress(OSError):
                atomic_write_text(cache_file, json.dumps(cache, indent=0))
        return value


def sha256_file(path: Path, cache_dir: Path | None = None) -> str:
    return _cached(path, "sha256", cache_dir)


def model_hash(path: Path, cache_dir: Path | None = None) -> str:
    """A1111 short model hash: 10 hex digits.

    For a diffusers folder, hash the UNet weights file, which is what makes two
    checkpoints differ.
    """
    if path.is_dir():
        unet = path / "unet"
        files = sorted(unet.glob("*.safetensors")) or sorted(unet.glob("*.bin"))
        if not files:
            return "0000000000"
        return hashlib.sha256("".join(sha256_file(f, cache_dir) for f in files).encode()).hexdigest()[:10]
    return sha256_file(path, cache_dir)[:10]


def legacy_hash(path: Path) -> str:
    """A1111's old short hash (8 hex digits of 64 KiB read at 1 MiB), which the ControlNet extension
    shows after each model's name; cheap, so it is not cached."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        fh.seek(0x100000)
        h.update(fh.read(0x10000))
    return h.hexdigest()[:8]


def lora_hash(path: Path, cache_dir: Path | None = None) -> str:
    """A1111 "Lora hashes" short hash: 12 hex digits of the addnet hash."""
    kind = "addnet" if path.suffix == ".safetensors" else "sha256"
    return _cached(path, kind, cache_dir)[:12]


def clear_cache(cache_dir: Path) -> None:
    with _lock, contextlib.suppress(FileNotFoundError):
        os.remove(cache_dir / "hashes.json")
