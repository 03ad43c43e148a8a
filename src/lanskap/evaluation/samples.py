"""Generating the images an evaluation scores, with a cache so reruns regenerate nothing.

Each image is addressed by a hash of everything that sets its pixels (model hash,
LoRA hashes and scales, prompt, seed, sampler, steps, guidance, size, dtype). The
file lives once in ``$LANSKAP_HOME/cache/evaluation`` and is hard-linked into the
report folder, so evaluating checkpoint after checkpoint reuses the base images.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.evaluation.imagesets import ImageItem, ImageSet
from lanskap.generation.output import encode_image
from lanskap.io import atomic_write_bytes

if TYPE_CHECKING:
    import threading

    from lanskap.generation.engine import Engine, Progress
    from lanskap.prompts.lora_tags import LoraSpec


CACHE_VERSION = 1


@dataclass(frozen=True)
class SamplePlan:
    """Which images to make: ``per_prompt`` per prompt, seeds ``seed + i·per_prompt + j``."""

    prompts: list[str]
    per_prompt: int = 1
    seed: int = 42
    fields: dict[str, Any] = field(default_factory=dict)  # GenerationRequest fields shared by all images

    def jobs(self) -> list[tuple[int, int, str, int]]:
        """(prompt index, replicate, prompt, seed) for every image, in order."""
        return [
            (i, j, p, self.seed + i * self.per_prompt + j)
            for i, p in enumerate(self.prompts)
            for j in range(self.per_prompt)
        ]


@dataclass
class SampleStats:
    generated: int = 0
    cached: int = 0
    seconds: float = 0.0


def _link(src: Path, dest: Path) -> None:
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:  # another file system: copy instead
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def generate_set(
    engine: Engine,
    plan: SamplePlan,
    *,
    name: str,
    label: str,
    loras: tuple[LoraSpec, ...] = (),
    lora_hashes: tuple[str, ...] = (),
    out_dir: Path,
    cache_dir: Path,
    progress: Callable[[int, int, bool], None] | None = None,
    step_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[ImageSet, SampleStats]:
    """Make (or find) every image of ``plan`` with ``loras`` (whose file hashes are ``lora_hashes``)."""
    from lanskap.generation.params import GenerationRequest

    loaded = engine.load()
    identity = {
        "v": CACHE_VERSION,
        "model": loaded.hash,
        "loras": [[h, s.scale] for h, s in zip(lora_hashes, loras, strict=True)],
        "dtype": engine.placement.dtype_name,
        **{k: plan.fields[k] for k in sorted(plan.fields)},
    }
    if engine.networks.extra:  # an embedding given to the evaluation: its file's hash, not just its name
        identity["embeddings"] = {n: e.sha256 for n, e in sorted(engine.networks.extra.items())}
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    stats, items, keep = SampleStats(), [], set()
    jobs = plan.jobs()
    for n, (i, j, prompt, seed) in enumerate(jobs):
        key = hashlib.sha256(json.dumps({**identity, "prompt": prompt, "seed": seed}).encode()).hexdigest()[:20]
        cached = cache_dir / key[:2] / f"{key}.png"
        fresh = not cached.is_file()
        if fresh:
            request = GenerationRequest(prompt=prompt, seed=seed, loras=tuple(loras), **plan.fields).validate()
            result = engine.generate(request, progress=step_progress, cancel=cancel)
            atomic_write_bytes(cached, encode_image(result.images[0], "png", result.infotexts[0]))
            stats.generated += 1
            stats.seconds += result.seconds
        else:
            stats.cached += 1
        dest = folder / f"{i:04d}-{j}-{seed}-{key[:8]}.png"
        _link(cached, dest)
        keep.add(dest.name)
        items.append(ImageItem(dest, prompt, seed, key=f"{i:04d}-{j}"))
        if progress:
            progress(n + 1, len(jobs), fresh)
    for stale in folder.glob("*.png"):  # images of an earlier run with other settings
        if stale.name not in keep:
            stale.unlink()
    info = {"loras": [str(s) for s in loras], **stats.__dict__}
    return ImageSet(name, label, items, source=str(folder), info=info), stats
