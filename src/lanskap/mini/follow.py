"""Measure how well a model follows landscape prompts: generate, detect, count.

Held-out prompts are captions of scenes whose seeds the trainer never rendered (training uses
``seed·10⁶ + i`` with i below a million; these start at 10⁹). Each image is made through the
same :class:`~lanskap.generation.engine.Engine` as ``lanskap generate`` and read back by
:mod:`lanskap.mini.detect`, which checks the sky colour, the number of moons, water, snow and a
castle. The score is the share of requested attributes that are present.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lanskap.io import atomic_write, atomic_write_text
from lanskap.mini.detect import CHECKED, detect, requested
from lanskap.mini.scenes import caption, sample_scene

HELD_OUT_SEED = 1_000_000_000


@dataclass
class Case:
    prompt: str
    seed: int
    asked: dict[str, object]
    seen: dict[str, object] = field(default_factory=dict)

    @property
    def hits(self) -> int:
        return sum(self.seen.get(k) == v for k, v in self.asked.items())


@dataclass
class FollowReport:
    cases: list[Case]
    parameters: str = ""  # the first image's infotext: the settings (speed levers included) it was made with

    def by_attribute(self) -> dict[str, tuple[int, int]]:
        out = {}
        for name in CHECKED:
            asked = [c for c in self.cases if name in c.asked]
            out[name] = (sum(c.seen.get(name) == c.asked[name] for c in asked), len(asked))
        return out

    @property
    def present(self) -> int:
        return sum(c.hits for c in self.cases)

    @property
    def asked(self) -> int:
        return sum(len(c.asked) for c in self.cases)

    @property
    def rate(self) -> float:
        return self.present / max(1, self.asked)

    def summary(self) -> str:
        parts = [f"{k} {p}/{n}" for k, (p, n) in self.by_attribute().items() if n]
        head = f"prompt following: {self.present}/{self.asked} = {self.rate:.0%} of requested attributes"
        return f"{head} ({', '.join(parts)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "present": self.present,
            "asked": self.asked,
            "by_attribute": {k: {"present": p, "asked": n} for k, (p, n) in self.by_attribute().items()},
            "parameters": self.parameters,
            "cases": [asdict(c) for c in self.cases],
        }


def held_out_prompts(count: int, start: int = HELD_OUT_SEED) -> list[tuple[str, dict[str, object]]]:
    """``count`` captions of unseen scenes that ask for at least one checked attribute."""
    out: list[tuple[str, dict[str, object]]] = []
    seed = start
    while len(out) < count:
        scene = sample_scene(seed)
        text = caption(scene, seed=seed + 7)
        if requested(scene.attributes()):
            out.append((text, scene.attributes()))
        seed += 1
    return out


def measure(
    generate: Callable[[str, int], Image.Image],
    count: int = 40,
    *,
    seed: int = 1,
    start: int = HELD_OUT_SEED,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[FollowReport, list[Image.Image]]:
    """Generate each held-out prompt once (image seed ``seed + i``) and check what it shows."""
    cases, images = [], []
    prompts = held_out_prompts(count, start)
    for i, (text, attrs) in enumerate(prompts):
        image = generate(text, seed + i)
        cases.append(Case(text, seed + i, requested(attrs), detect(image)))
        images.append(image)
        if progress:
            progress(i + 1, len(prompts))
    parameters = str(images[0].info.get("parameters", "")) if images else ""
    return FollowReport(cases, parameters), images


def composition_distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two pictures at 64 px, 0-255: how far apart their layouts are."""
    x = np.asarray(a.convert("RGB").resize((64, 64)), np.float32)
    y = np.asarray(b.convert("RGB").resize((64, 64)), np.float32)
    return float(np.abs(x - y).mean())


def save_report(report: FollowReport, images: list[Image.Image], out: Path, columns: int = 8) -> tuple[Path, Path]:
    """``follow.json`` and ``follow.png``: every image, framed green when it shows all it was asked."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "follow.json", json.dumps(report.to_json(), indent=2) + "\n")
    cell, pad = 128, 6
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (cell + pad) + pad, rows * (cell + pad + 14) + pad + 18), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), report.summary()[:150], fill="black")
    for i, (case, image) in enumerate(zip(report.cases, images, strict=True)):
        x, y = pad + (i % columns) * (cell + pad), 18 + pad + (i // columns) * (cell + pad + 14)
        ok = case.hits == len(case.asked)
        draw.rectangle((x - 3, y - 3, x + cell + 2, y + cell + 2), fill=(40, 150, 60) if ok else (200, 40, 40))
        sheet.paste(image.convert("RGB").resize((cell, cell)), (x, y))
        draw.text((x, y + cell + 2), f"{case.hits}/{len(case.asked)}", fill="black")
    atomic_write(out / "follow.png", lambda fh: sheet.save(fh, format="PNG"))
    return out / "follow.json", out / "follow.png"
