"""Prompt files for batch generation, shared out across the processes of ``accelerate launch``.

A file holds one job per line: plain text (``.txt``: a prompt per line, ``#`` comments),
JSON lines (``.jsonl``) or CSV (``.csv``) with a ``prompt`` column and optionally any of
``FIELDS``. The command-line flags give the defaults. Every line is validated before the
model loads, so a typo on line 900 fails in a second, not after an hour.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.generation.params import GenerationRequest


FIELDS = {
    "prompt": str,
    "negative_prompt": str,
    "seed": int,
    "steps": int,
    "guidance": float,
    "width": int,
    "height": int,
    "num_images": int,
    "batch_size": int,
    "scheduler": str,
    "clip_skip": int,
    "ensd": int,
}


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel launch (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        # accelerate launch (like torchrun) exports RANK and WORLD_SIZE to every process.
        try:
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            return cls()
        return cls(rank, world) if 0 <= rank < world else cls()

    def take(self, items: list[Any]) -> list[Any]:
        """Round-robin: line i goes to process i mod world, so every line runs exactly once."""
        return items[self.rank :: self.world]


def _typed(name: str, value: Any, where: str) -> Any:
    if name not in FIELDS:
        raise LanskapError(f"{where}: unknown field {name!r}; known: {', '.join(FIELDS)}")
    if value is None or value == "":
        return None
    try:
        return FIELDS[name](value)
    except (TypeError, ValueError):
        raise LanskapError(f"{where}: {name} must be {FIELDS[name].__name__}, not {value!r}") from None


def read_prompt_file(path: Path) -> list[dict[str, Any]]:
    """The rows of a prompt file as request fields (missing fields are absent, not None)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LanskapError(f"cannot read prompt file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    rows: list[dict[str, Any]] = []
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LanskapError(f"{path.name} line {n}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise LanskapError(f"{path.name} line {n}: expected an object with a prompt")
            rows.append({"_line": n, **{k: _typed(k, v, f"{path.name} line {n}") for k, v in obj.items()}})
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        for n, row in enumerate(reader, 2):
            rows.append({"_line": n, **{k: _typed(k.strip(), v, f"{path.name} line {n}") for k, v in row.items()}})
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                rows.append({"_line": n, "prompt": line.strip()})
    for row in rows:
        if not row.get("prompt"):
            raise LanskapError(f"{path.name} line {row['_line']}: no prompt")
    if not rows:
        raise LanskapError(f"{path} holds no prompts")
    return rows


def plan_requests(rows: list[dict[str, Any]], defaults: dict[str, Any]) -> list[GenerationRequest]:
    """One validated GenerationRequest per row: the row's fields over the flags' ``defaults``.

    With a base ``seed`` in the defaults, row i without its own seed starts at
    ``seed + i * num_images``: every image differs and is reproducible whatever the
    number of processes. Without one, each row gets a random (recorded) seed.
    """
    from lanskap.generation.params import GenerationRequest, left_unset

    base_seed = defaults.get("seed")
    requests = []
    offset = 0
    for row in rows:
        fields = {k: v for k, v in {**defaults, **row}.items() if v is not None and k != "_line"}
        if row.get("seed") is None and base_seed is not None:
            fields["seed"] = base_seed + offset
        try:
            request = GenerationRequest(**fields, model_defaults=left_unset(fields)).validate()
        except LanskapError as exc:
            raise LanskapError(f"prompt file line {row['_line']}: {exc}") from None
        offset += request.num_images
        requests.append(request)
    return requests
