"""The built-in model, lanskap-mini: its name, where its weights ship, and how a folder is recognised.

Here in the models layer so the loader can resolve ``lanskap-mini`` and fall back to it
without importing the mini package (its architecture and trainer live in ``lanskap.mini``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from lanskap.errors import LanskapError

NAME = "lanskap-mini"
MARKER = "lanskap_mini.json"
SIZE = 128  # native image size


def shipped() -> Path:
    """The weights inside the installed package."""
    folder = Path(str(resources.files("lanskap.mini") / "weights"))
    if not (folder / MARKER).is_file():
        raise LanskapError(
            f"lanskap-mini's weights are missing from {folder}; reinstall lanskap or run `lanskap mini train`"
        )
    return folder


def is_mini(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def card(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
