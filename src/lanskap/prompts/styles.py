"""Prompt styles in AUTOMATIC1111's ``styles.csv`` format, applied as A1111 applies them.

A style is a named prompt and negative prompt. ``{prompt}`` in a style marks where the
user's prompt goes; without it the style is appended after a comma (A1111's
``merge_prompts``). Styles apply in the order given, and the image records the expanded
prompt, so its infotext remakes it without the styles file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lanskap.errors import LanskapError


class _Prompted(Protocol):
    """Anything with the two prompts a style merges into (a GenerationRequest)."""

    prompt: str
    negative_prompt: str


Request = TypeVar("Request", bound=_Prompted)

STYLES_FILE = "styles.csv"
MAX_STYLES_BYTES = 4 * 2**20


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""

    def to_a1111(self) -> dict[str, Any]:
        return {"name": self.name, "prompt": self.prompt, "negative_prompt": self.negative_prompt}


def styles_path(home: Path) -> Path:
    return Path(home) / STYLES_FILE


def parse_styles(text: str) -> dict[str, PromptStyle]:
    """A1111's columns: ``name``, ``prompt``, ``negative_prompt`` (a header row first)."""
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    if reader.fieldnames is None or "name" not in reader.fieldnames:
        raise LanskapError("the styles file needs a header row with name, prompt and negative_prompt")
    styles: dict[str, PromptStyle] = {}
    for row in reader:
        name = (row.get("name") or "").strip()
        if name:
            styles[name] = PromptStyle(name, row.get("prompt") or "", row.get("negative_prompt") or "")
    return styles


def load_styles(home: Path) -> dict[str, PromptStyle]:
    """The styles in ``$LANSKAP_HOME/styles.csv``; none when there is no such file."""
    path = styles_path(home)
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_STYLES_BYTES:
        raise LanskapError(f"{path} is larger than {MAX_STYLES_BYTES // 2**20} MB; is it really a styles file?")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LanskapError(f"cannot read the styles file {path}: {exc}") from None
    try:
        return parse_styles(text)
    except csv.Error as exc:
        raise LanskapError(f"the styles file {path} is not valid CSV: {exc}") from None


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """A1111's ``merge_prompts``: ``{prompt}`` placement, else ``prompt, style``."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles(
    request: Request, names: list[str] | tuple[str, ...], home: Path, *, strict: bool = True
) -> tuple[Request, list[str]]:
    """``request`` with the named styles merged into its prompts, and the names that are unknown.

    ``strict`` makes an unknown name an error (CLI, web app); the A1111 API skips it and says so.
    """
    if not names:
        return request, []
    styles = load_styles(home)
    unknown = [n for n in names if n not in styles]
    if unknown and strict:
        have = ", ".join(styles) or f"none yet: add them to {styles_path(home)}"
        raise LanskapError(f"unknown style {unknown[0]!r}; the styles are: {have}")
    prompt, negative = request.prompt, request.negative_prompt
    for name in names:
        if name in styles:
            prompt = merge_prompts(styles[name].prompt, prompt)
            negative = merge_prompts(styles[name].negative_prompt, negative)
    return replace(request, prompt=prompt, negative_prompt=negative), unknown
