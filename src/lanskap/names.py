"""Names that come from users (run names, LoRA names, report names) before they touch the disk.

A name is one plain path component: letters, digits, ``.``, ``_`` and ``-``, not
starting with a dot, at most 64 characters. Anything else (separators, ``..``,
absolute paths, control characters) is refused, so a name can never reach
outside the folder it is joined to.
"""

from __future__ import annotations

import re
from pathlib import Path

from lanskap.errors import LanskapError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe single path component, else raise a one-line error."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise LanskapError(
            f"bad {what} {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def child(folder: Path, name: str, what: str = "name") -> Path:
    """``folder / name`` for a checked name; the result is guaranteed to sit directly in ``folder``."""
    path = Path(folder) / check_name(name, what)
    if path.parent.resolve() != Path(folder).resolve():  # belt and braces against symlink tricks
        raise LanskapError(f"bad {what} {name!r}")
    return path
