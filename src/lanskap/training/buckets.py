"""Aspect-ratio buckets and the order pictures are seen in.

Bucketing (as in kohya sd-scripts and NovelAI's write-up) trains each picture at the
bucket closest to its shape, all buckets holding about ``resolution²`` pixels, so
wide concept art keeps its sides instead of being cropped to a square. A batch only
mixes pictures of one bucket. The order of an epoch depends only on the seed and the
epoch number, so a resumed run sees exactly the pictures an unbroken one would.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MAX_ASPECT = 2.0


def make_buckets(resolution: int, step: int, max_aspect: float = MAX_ASPECT) -> list[tuple[int, int]]:
    """(width, height) pairs, multiples of ``step``, of at most resolution² pixels, aspect up to ``max_aspect``."""
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    width = step
    while width <= resolution * max_aspect:
        height = min(int(area / width) // step * step, int(resolution * max_aspect) // step * step)
        if height >= step and max(width / height, height / width) <= max_aspect:
            buckets.add((width, height))
        width += step
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space) to the picture's."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


@dataclass(frozen=True)
class Plan:
    """Which bucket each record trains at; batches per epoch."""

    sizes: list[tuple[int, int]]  # per record

    def epoch(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        """Batches of record indices for ``epoch``: shuffled within buckets, then batches shuffled."""
        rng = random.Random(f"lanskap-order:{seed}:{epoch}")
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(self.sizes):
            by_bucket.setdefault(size, []).append(i)
        batches: list[list[int]] = []
        for size in sorted(by_bucket):
            idx = by_bucket[size]
            rng.shuffle(idx)
            batches += [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
        rng.shuffle(batches)
        return batches


def plan(
    dims: list[tuple[int, int]], resolution: int, *, bucketing: bool, step: int
) -> tuple[Plan, list[tuple[int, int]]]:
    """Assign each picture (width, height) a training size; returns the plan and the buckets in use."""
    if not bucketing:
        return Plan([(resolution, resolution)] * len(dims)), [(resolution, resolution)]
    buckets = make_buckets(resolution, step)
    sizes = [nearest_bucket(w, h, buckets) for w, h in dims]
    return Plan(sizes), sorted(set(sizes))
