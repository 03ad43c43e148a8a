"""Tiles over a picture, and blending them back without a visible grid.

Tiles are laid out as A1111's ``split_grid`` lays them (evenly spread, at least ``overlap``
apart, the last flush with the edge), so SD upscale cuts a picture where A1111 would. Each tile
is then weighted by a linear ramp across every edge it shares with a neighbour, and the sum is
normalised: in an overlap one tile fades out as the next fades in, so no seam is a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


def positions(size: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` px start along a side of ``size`` px (A1111's rule)."""
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    count = math.ceil((size - overlap) / step)
    if count <= 1:
        return [0]
    spacing = (size - tile) / (count - 1)
    out = []
    for i in range(count):
        x = int(i * spacing)
        out.append(min(x, size - tile))
    return sorted(set(out))


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    index: int  # row-major order: tile k of the picture

    def crop(self, image: Image.Image) -> Image.Image:
        return image.crop((self.x, self.y, self.x + self.w, self.y + self.h))

    def scaled(self, factor: int) -> Box:
        return Box(self.x * factor, self.y * factor, self.w * factor, self.h * factor, self.index)


def grid(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> list[Box]:
    """Every tile of a ``width`` x ``height`` picture, row by row."""
    tw, th = min(tile_w, width), min(tile_h, height)
    xs, ys = positions(width, tw, overlap), positions(height, th, overlap)
    return [Box(x, y, tw, th, r * len(xs) + c) for r, y in enumerate(ys) for c, x in enumerate(xs)]


def _ramp(length: int, fade_start: int, fade_end: int) -> np.ndarray:
    """1 in the middle, rising linearly over ``fade_start`` px and falling over ``fade_end`` px."""
    w = np.ones(length, np.float32)
    if fade_start > 0:
        w[:fade_start] = (np.arange(fade_start, dtype=np.float32) + 0.5) / fade_start
    if fade_end > 0:
        w[length - fade_end :] = np.minimum(
            w[length - fade_end :], ((np.arange(fade_end, dtype=np.float32) + 0.5) / fade_end)[::-1]
        )
    return w


class Blender:
    """Accumulates tiles into one picture; memory is the output picture plus one tile."""

    def __init__(self, width: int, height: int, boxes: list[Box]) -> None:
        self.width, self.height = width, height
        self.boxes = boxes
        self.acc = np.zeros((height, width, 3), np.float32)
        self.weight = np.zeros((height, width, 1), np.float32)

    def _fades(self, box: Box) -> tuple[int, int, int, int]:
        """How far each edge of ``box`` overlaps the neighbour on that side (0 at the picture's edge)."""
        left = right = top = bottom = 0
        for other in self.boxes:
            if other is box:
                continue
            rows_meet = other.y < box.y + box.h and box.y < other.y + other.h
            cols_meet = other.x < box.x + box.w and box.x < other.x + other.w
            if rows_meet and other.x < box.x < other.x + other.w:
                left = max(left, other.x + other.w - box.x)
            if rows_meet and box.x < other.x < box.x + box.w:
                right = max(right, box.x + box.w - other.x)
            if cols_meet and other.y < box.y < other.y + other.h:
                top = max(top, other.y + other.h - box.y)
            if cols_meet and box.y < other.y < box.y + box.h:
                bottom = max(bottom, box.y + box.h - other.y)
        return left, right, top, bottom

    def add(self, box: Box, tile: Image.Image) -> None:
        if tile.size != (box.w, box.h):
            tile = tile.resize((box.w, box.h), Image.Resampling.LANCZOS)
        left, right, top, bottom = self._fades(box)
        wx = _ramp(box.w, left, right)
        wy = _ramp(box.h, top, bottom)
        w = (wy[:, None] * wx[None, :])[..., None]
        pixels = np.asarray(tile.convert("RGB"), np.float32)
        self.acc[box.y : box.y + box.h, box.x : box.x + box.w] += pixels * w
        self.weight[box.y : box.y + box.h, box.x : box.x + box.w] += w

    def image(self) -> Image.Image:
        out = self.acc / np.maximum(self.weight, 1e-8)
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")
