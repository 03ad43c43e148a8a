"""Write procedural scenes as a captioned imagefolder that ``lanskap train`` and ``evaluate`` read.

The LoRA demonstration uses it with a style: the same kind of scenes, repainted in a palette
lanskap-mini never saw, with a trigger phrase in every caption. Layout: ``train/`` and
``test/``, each with PNGs and a ``metadata.jsonl`` (``file_name``, ``text``), as Hugging Face
imagefolders have it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lanskap.errors import LanskapError, SettingError
from lanskap.io import atomic_dir
from lanskap.mini.scenes import STYLES, caption, render, sample_scene, stylise

#: Scenes for datasets start here, apart from the base model's training and held-out seeds.
DATASET_SEED = 2_000_000_000


def trigger(style: str) -> str:
    return f"in {style} style"


def write_scene_set(
    out: Path,
    count: int,
    *,
    test: int = 0,
    style: str | None = None,
    size: int = 128,
    seed: int = DATASET_SEED,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """``count`` training and ``test`` test scenes; built in a temp folder, then renamed into place."""
    if style is not None and style not in STYLES:
        raise LanskapError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    if count < 1 or test < 0:
        raise LanskapError("count must be at least 1 and test at least 0")
    if not 64 <= size <= 1024 or size % 8:
        raise LanskapError(f"size must be a multiple of 8 between 64 and 1024, got {size}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SettingError(f"{out} already exists and is not empty; allow overwriting to replace it", "overwrite")
    with atomic_dir(out) as tmp:
        done = 0
        for split, n, first in (("train", count, seed), ("test", test, seed + count)):
            if not n:
                continue
            folder = tmp / split
            folder.mkdir()
            rows = []
            for i in range(n):
                scene = sample_scene(first + i)
                image = render(scene, size)
                text = caption(scene)
                if style:
                    image, text = stylise(image, style), f"{text}, {trigger(style)}"
                name = f"{first + i}.png"
                image.save(folder / name)
                rows.append(json.dumps({"file_name": name, "text": text}))
                done += 1
                if progress:
                    progress(done, count + test)
            (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out
