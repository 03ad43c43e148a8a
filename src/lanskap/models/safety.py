"""Which weight files may be loaded, and whether they are intact.

Pickled checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, or any file whose first bytes are
not a safetensors header, whatever its name) can run arbitrary code when loaded, so they are
refused unless the user opts in. Safetensors files
are checked before use so that a truncated download gives a one-line message
instead of a deep library error.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from lanskap.errors import CorruptFileError, UnsafeFileError

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl"})
SAFE_SUFFIXES = frozenset({".safetensors"})
_MAX_HEADER = 100 * 1024 * 1024

# Bytes per element for each safetensors dtype; used to check every tensor fits its slot.
_DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


def sniff(path: Path) -> str:
    """What a weights file is by its first bytes: "safetensors", "zip" (torch's pickle archive),
    "pickle" (a bare pickle stream), or "other"."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] <= _MAX_HEADER:
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "other"


def is_pickle(path: Path) -> bool:
    """By name or by its first bytes: torch's zip archive or a pickle stream, whatever the name says."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    if path.suffix.lower() in SAFE_SUFFIXES or not path.is_file():
        return False  # a .safetensors file's header is checked on its own (read_safetensors_header)
    try:
        return sniff(path) in ("zip", "pickle")
    except OSError:
        return False


def check_allowed(path: Path, allow_pickle: bool) -> None:
    """Refuse pickled weights unless the user explicitly opted in."""
    if is_pickle(path) and not allow_pickle:
        raise UnsafeFileError(
            f"refusing to load pickled weights {Path(path).name}: pickle files can run code. Convert it to "
            ".safetensors, or allow pickle files if you trust its source",
            "allow_pickle",
        )


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and validate a safetensors header; raise CorruptFileError when damaged.

    Checked by hand (not via ``safe_open``) to name the exact fault: truncation,
    a bad header, or tensors that run past the end of the file.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CorruptFileError(f"{path.name} is not a valid safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", prefix)
            if n > _MAX_HEADER or 8 + n > size:
                raise CorruptFileError(f"{path.name} is corrupt or truncated: its header runs past the end")
            raw = fh.read(n)
    except OSError as exc:
        raise CorruptFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        raise CorruptFileError(f"{path.name} is not a valid safetensors file (unreadable header)") from None
    data_len = size - 8 - n
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            expected = count * _DTYPE_SIZES.get(info["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            raise CorruptFileError(f"{path.name} is not a valid safetensors file (bad entry {name!r})") from None
        if stop < start or (expected and stop - start != expected):
            raise CorruptFileError(f"{path.name} is corrupt: tensor {name!r} has the wrong size")
        end = max(end, stop)
    if end > data_len:
        raise CorruptFileError(
            f"{path.name} is truncated: it needs {end} bytes of tensor data but has {data_len}; download it again"
        )
    return header


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` block (kohya ``ss_*``, ``modelspec.*``), validated first."""
    meta = read_safetensors_header(path).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def validate_weights_dir(folder: Path, allow_pickle: bool) -> None:
    """Check every weights file a diffusers folder would load."""
    for comp in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [p for p in comp.iterdir() if p.is_file()]
        safe = [p for p in files if p.suffix == ".safetensors"]
        pickled = [p for p in files if is_pickle(p) and "optimizer" not in p.name]
        for p in safe:
            read_safetensors_header(p)
        if pickled and not safe:
            check_allowed(pickled[0], allow_pickle)
