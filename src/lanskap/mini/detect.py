"""Read a landscape's attributes back from its pixels, with the scene generator's own rules.

This is how lanskap-mini's prompt following is measured: the generator paints a sky from a
fixed palette, moons as pale discs, water, snow and castles in their own colours, so a
picture made from a prompt can be checked for what the prompt asked. It reads the five
attributes the generator makes unambiguous: sky colour, number of moons, water, snow on the
peaks, and a castle silhouette.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from lanskap.mini.scenes import CASTLE, HORIZON, MOON, SKIES, SNOW, WATER

CHECKED = ("sky", "moons", "water", "snow", "castle")


def _near(img: np.ndarray, colour: tuple[int, int, int], tol: float) -> np.ndarray:
    return np.linalg.norm(img - np.asarray(colour, np.float32), axis=-1) < tol


def detect(image: Image.Image) -> dict[str, object]:
    """The attributes visible in ``image`` (any size; read at 128 px)."""
    img = np.asarray(image.convert("RGB").resize((128, 128), Image.Resampling.BILINEAR), np.float32)
    s = img.shape[0]
    horizon = int(s * HORIZON)
    top = img[: int(0.1 * s)].reshape(-1, 3)
    plain = top[(top.max(axis=1) < 200) & ~((top[:, 1] > top[:, 0] + 50) & (top[:, 1] > top[:, 2]))]
    mean = (plain if len(plain) else top).mean(axis=0)
    sky = min(SKIES, key=lambda k: float(np.linalg.norm(mean - np.asarray(SKIES[k][0], np.float32))))

    upper = img[: int(0.32 * s)]
    labels, n = ndimage.label(_near(upper, MOON, 40))
    areas = ndimage.sum_labels(np.ones(labels.shape), labels, range(1, n + 1)) if n else np.array([])
    moons = int((areas >= 0.5 * np.pi * (0.05 * s) ** 2).sum())

    below = img[horizon:]
    water = float(_near(below, WATER, 45).mean()) > 0.02
    band = img[int(0.28 * s) : int(horizon - 0.08 * s)]
    snow = float(_near(band, SNOW, 25).mean()) > 0.02
    around = img[int(horizon - 0.3 * s) : int(horizon + 0.05 * s)]
    castle = float(_near(around, CASTLE, 20).mean()) > 0.02
    return {"sky": sky, "moons": min(moons, 2), "water": water, "snow": snow, "castle": castle}


def requested(attributes: dict[str, object]) -> dict[str, object]:
    """What a scene (or a parsed prompt) asks of the five checked attributes."""
    out: dict[str, object] = {}
    if "sky" in attributes:
        out["sky"] = attributes["sky"]
    celestial = attributes.get("celestial")
    if celestial in ("moon", "two moons"):
        out["moons"] = 2 if celestial == "two moons" else 1
    if attributes.get("water"):
        out["water"] = True
    if attributes.get("terrain") == "snowy mountains":
        out["snow"] = True
    if attributes.get("building") == "castle":
        out["castle"] = True
    return out


def score(image: Image.Image, attributes: dict[str, object]) -> tuple[int, int]:
    """(present, asked): how many of the requested checked attributes the image shows."""
    want = requested(attributes)
    seen = detect(image)
    return sum(seen[k] == v for k, v in want.items()), len(want)
