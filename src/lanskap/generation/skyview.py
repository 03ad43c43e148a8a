"""Perspective views of a 360° (equirectangular) picture, as a game camera would see it.

A 2:1 picture maps longitude to x and latitude to y. A pinhole camera looking along (yaw, pitch)
with a field of view sees, at each of its pixels, one direction: its longitude and latitude pick
the source pixel. OpenCV's ``remap`` samples it (wrapping round in x), so the seam at the
picture's left and right edge shows up in the view that looks at it, if there is one.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image, ImageDraw

from lanskap.errors import LanskapError

#: The views of a preview: the four horizontal quarters (the back one looks across the wrap),
#: then straight up and straight down (the poles).
VIEWS = (("front", 0, 0), ("right", 90, 0), ("back", 180, 0), ("left", 270, 0), ("up", 0, 90), ("down", 0, -90))


def perspective(image: Image.Image, yaw: float, pitch: float, fov: float = 90, size: int = 256) -> Image.Image:
    """What a square camera of ``fov`` degrees sees looking at ``yaw`` (east of centre) and ``pitch`` (up)."""
    if not 10 <= fov <= 170:
        raise LanskapError(f"the field of view must be between 10 and 170 degrees, got {fov:g}")
    src = np.asarray(image.convert("RGB"))
    h, w = src.shape[:2]
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    u, v = np.meshgrid(np.arange(size) - size / 2 + 0.5, np.arange(size) - size / 2 + 0.5)
    rays = np.stack([u, -v, np.full_like(u, f)], axis=-1)  # x right, y up, z forward
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    p, q = math.radians(pitch), math.radians(yaw)
    tilt = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    turn = np.array([[math.cos(q), 0, math.sin(q)], [0, 1, 0], [-math.sin(q), 0, math.cos(q)]])
    d = rays @ (turn @ tilt).T
    lon = np.arctan2(d[..., 0], d[..., 2])  # 0 at the picture's centre column
    lat = np.arcsin(np.clip(d[..., 1], -1, 1))
    map_x = ((lon / (2 * math.pi) + 0.5) * w - 0.5).astype(np.float32)
    map_y = ((0.5 - lat / math.pi) * h - 0.5).astype(np.float32)
    padded = np.concatenate([src[:, -2:], src, src[:, :2]], axis=1)  # wrap round for the sampler's neighbours
    out = cv2.remap(padded, map_x + 2, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(out)


def preview(image: Image.Image, fov: float = 90, size: int = 256) -> Image.Image:
    """The six views of :data:`VIEWS` in a 3x2 sheet, each labelled."""
    if abs(image.width - 2 * image.height) > 1:
        raise LanskapError(f"a 360° picture is twice as wide as it is high; this one is {image.width}x{image.height}")
    sheet = Image.new("RGB", (3 * size, 2 * size), "black")
    draw = ImageDraw.Draw(sheet)
    for i, (name, yaw, pitch) in enumerate(VIEWS):
        x, y = (i % 3) * size, (i // 3) * size
        sheet.paste(perspective(image, yaw, pitch, fov, size), (x, y))
        draw.text((x + 6, y + 4), name, fill="white", stroke_width=2, stroke_fill="black")
    return sheet
