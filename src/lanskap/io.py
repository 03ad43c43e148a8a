"""Crash-safe file writes: write a temp file in the same folder, then rename.

A reader (or a crash) never sees a half-written file, and an existing file is
only replaced once its successor is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None], *, replace: bool = True, mode: int = 0o644) -> Path:
    """Write ``path`` via ``write(fh)``; with ``replace=False`` fail if it exists (FileExistsError).

    ``mode`` is the finished file's permission (0600 for secrets such as the login file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; results are meant to be shared like any saved file
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic create-if-absent; raises FileExistsError
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes, *, replace: bool = True, mode: int = 0o644) -> Path:
    return atomic_write(path, lambda fh: fh.write(data), replace=replace, mode=mode)


def atomic_write_text(path: Path, text: str, *, replace: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), replace=replace)


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; on success it replaces ``out``, on any error it is removed.

    A folder that readers load as a whole (a model, a dataset) never appears half-written.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
