"""Procedural fantasy landscapes with captions: the training data of lanskap-mini.

Each scene is a structured description sampled from a seed; ``render`` paints it with numpy
and ``caption`` phrases it in varied ways. The palettes and layout rules here are also what
``lanskap.mini.detect`` reads back, so a generated image can be checked against its prompt.
Hand-written because no library draws parametric landscapes; it needs only numpy and Pillow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

#: Sky palettes: (top colour, horizon colour).
SKIES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "dawn": ((70, 80, 150), (245, 175, 150)),
    "day": ((60, 125, 225), (175, 210, 245)),
    "sunset": ((95, 45, 105), (250, 125, 45)),
    "night": ((8, 10, 32), (30, 38, 78)),
    "violet": ((75, 30, 130), (195, 125, 225)),
    "crimson": ((95, 8, 22), (225, 65, 50)),
}
DARK_SKIES = ("night", "violet", "crimson")
CELESTIAL = {"light": ("sun", None), "dark": ("moon", "two moons", "stars", "aurora", None)}
TERRAINS = ("snowy mountains", "rocky mountains", "green mountains", "hills", "plains")
WATERS = ("lake", "river", "sea", "waterfall", None)
BUILDINGS = ("castle", "tower", "village", "ruins", None)
PLANTS = ("forest", "glowing trees", "giant mushrooms", None)

SUN = (255, 236, 170)
MOON = (232, 232, 214)
SNOW = (246, 248, 252)
WATER = (38, 92, 170)
CASTLE = (48, 38, 36)  # warm: apart from every night-sky blue
ROCK = (112, 102, 96)
GREEN = (62, 112, 58)
HORIZON = 0.58  # the horizon's height, as a fraction of the image from the top


@dataclass(frozen=True)
class Scene:
    """What a picture holds; every field maps to words in the caption."""

    sky: str
    celestial: str | None
    terrain: str
    water: str | None
    building: str | None
    plants: str | None
    mist: bool
    islands: bool
    seed: int

    def attributes(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "seed"}


def sample_scene(seed: int) -> Scene:
    """A random scene; the same seed always gives the same scene."""
    rng = np.random.default_rng(seed)
    sky = str(rng.choice(list(SKIES)))
    options = CELESTIAL["dark" if sky in DARK_SKIES else "light"]
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731 - choice() can't return None
    return Scene(
        sky=sky,
        celestial=pick(options),
        terrain=pick(TERRAINS),
        water=pick(WATERS),
        building=pick(BUILDINGS),
        plants=pick(PLANTS),
        mist=bool(rng.random() < 0.3),
        islands=bool(rng.random() < 0.2),
        seed=seed,
    )


# -- painting --------------------------------------------------------------------------------------
def _blend(img: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] | np.ndarray, alpha: float = 1.0) -> None:
    m = mask[..., None] * alpha
    img[:] = img * (1 - m) + np.asarray(colour, dtype=np.float32) * m


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip(r + 0.5 - d, 0, 1)  # anti-aliased edge


def _ridge(rng: np.random.Generator, w: int, base: float, amp: float, roughness: int) -> np.ndarray:
    """A mountain or hill outline: y (pixels from the top) for each column, by summed sines."""
    x = np.linspace(0, 1, w)
    y = np.zeros(w)
    for k in range(1, roughness + 1):
        y += rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * (k * rng.uniform(0.6, 1.4) * x + rng.random()))
    y = (y - y.min()) / (np.ptp(y) + 1e-9)
    return base - amp * y


def render(scene: Scene, size: int = 128) -> Image.Image:
    """Paint ``scene`` as a ``size``×``size`` RGB picture (the scene's seed fixes the layout).

    Layer by layer, back to front; the layers draw from one random stream in this order.
    """
    rng = np.random.default_rng(scene.seed + 1)
    s = size
    img = np.zeros((s, s, 3), dtype=np.float32)
    horizon = int(s * HORIZON)
    top, low = (np.asarray(c, dtype=np.float32) for c in SKIES[scene.sky])
    t = np.clip(np.arange(s) / horizon, 0, 1)[:, None, None]
    img[:] = top * (1 - t) + low * t
    for layer in (_sky_lights, _islands, _terrain, _water, _building, _plants):
        layer(img, scene, rng, s, horizon)
    if scene.mist:
        band = np.exp(-(((np.arange(s) - horizon) / (0.08 * s)) ** 2))[:, None] * np.ones((1, s))
        _blend(img, band.astype(np.float32), (235, 235, 240), 0.55)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _sky_lights(img: np.ndarray, scene: Scene, rng: np.random.Generator, s: int, horizon: int) -> None:
    """Sun, moons, stars or an aurora, in the sky above the tallest peak."""
    sky_h = horizon - int(0.28 * s)  # the part of the sky above the tallest peak
    if scene.celestial == "sun":
        _blend(img, _disc(s, s, rng.uniform(0.12, 0.3) * s, rng.uniform(0.2, 0.8) * s, 0.07 * s), SUN)
    elif scene.celestial in ("moon", "two moons"):
        xs = [rng.uniform(0.15, 0.4) * s, rng.uniform(0.6, 0.85) * s]
        for x in xs[: 2 if scene.celestial == "two moons" else 1]:
            _blend(img, _disc(s, s, rng.uniform(0.1, 0.25) * s, x, 0.055 * s), MOON)
    elif scene.celestial == "stars":
        n = int(0.012 * s * s)
        ys, xs = rng.integers(0, max(sky_h, 2), n), rng.integers(0, s, n)
        img[ys, xs] = np.maximum(img[ys, xs], 225)
    elif scene.celestial == "aurora":
        yy, xx = np.mgrid[0:s, 0:s] / s
        for k in range(2):
            centre = 0.14 + 0.1 * k + 0.05 * np.sin(2 * np.pi * (xx * rng.uniform(1, 2.5) + rng.random()))
            band = np.exp(-(((yy - centre) / 0.025) ** 2))
            _blend(img, band, (70, 235, 150), 0.75)


def _islands(img: np.ndarray, scene: Scene, rng: np.random.Generator, s: int, horizon: int) -> None:
    """Floating islands: rock wedges with a grass top."""
    if scene.islands:
        for _ in range(int(rng.integers(1, 3))):
            cx, cy, r = rng.uniform(0.15, 0.85) * s, rng.uniform(0.2, 0.35) * s, rng.uniform(0.06, 0.1) * s
            yy, xx = np.mgrid[0:s, 0:s]
            rock = (yy >= cy) & (yy - cy <= r * 1.2 * (1 - np.abs(xx - cx) / r)) & (np.abs(xx - cx) < r)
            _blend(img, rock.astype(np.float32), ROCK)
            grass = (np.abs(yy - cy) < max(1.5, 0.015 * s)) & (np.abs(xx - cx) < r)
            _blend(img, grass.astype(np.float32), GREEN)


def _terrain(img: np.ndarray, scene: Scene, rng: np.random.Generator, s: int, horizon: int) -> None:
    """Mountains (green, rocky or snowy), hills or plains, and the ground below the horizon."""
    rows = np.arange(s)[:, None]
    if scene.terrain.endswith("mountains"):
        ridge = _ridge(rng, s, horizon, 0.3 * s, 6)
        colour = GREEN if scene.terrain == "green mountains" else ROCK
        body = (rows >= ridge[None, :]).astype(np.float32)
        shade = np.clip((rows - ridge[None, :]) / (0.3 * s), 0, 1)[..., None]
        fill = np.asarray(colour, np.float32) * (1 - 0.35 * shade)
        img[:] = img * (1 - body[..., None]) + fill * body[..., None]
        if scene.terrain == "snowy mountains":
            cap = ridge.min() + 0.45 * (horizon - ridge.min())
            snow = body * (rows < cap + 0.1 * (ridge[None, :] - ridge.min()))
            _blend(img, snow, SNOW)
    else:
        amp = 0.1 * s if scene.terrain == "hills" else 0.02 * s
        ridge = _ridge(rng, s, horizon, amp, 3)
        body = (rows >= ridge[None, :]).astype(np.float32)
        _blend(img, body, (88, 140, 62) if scene.terrain == "hills" else (128, 150, 70))
    ground = (rows >= horizon).astype(np.float32) * np.ones((1, s))
    _blend(img, ground, (74, 118, 56))


def _water(img: np.ndarray, scene: Scene, rng: np.random.Generator, s: int, horizon: int) -> None:
    """A sea, a lake, a river or a waterfall with its pool."""
    rows = np.arange(s)[:, None]
    if scene.water == "sea":
        _blend(img, ((rows >= horizon) & (rows < horizon + 0.22 * s)).astype(np.float32) * np.ones((1, s)), WATER)
    elif scene.water == "lake":
        cx = rng.uniform(0.35, 0.65) * s
        yy, xx = np.mgrid[0:s, 0:s]
        lake = (((xx - cx) / (0.3 * s)) ** 2 + ((yy - (horizon + 0.14 * s)) / (0.08 * s)) ** 2) <= 1
        _blend(img, lake.astype(np.float32), WATER)
    elif scene.water == "river":
        yy, xx = np.mgrid[0:s, 0:s]
        frac = np.clip((yy - horizon) / (s - horizon), 0, 1)
        centre = s * (0.5 + 0.2 * np.sin(frac * 3 + rng.random() * 6))
        river = (yy >= horizon) & (np.abs(xx - centre) < (0.02 + 0.1 * frac) * s)
        _blend(img, river.astype(np.float32), WATER)
    elif scene.water == "waterfall":
        x0 = int(rng.uniform(0.3, 0.7) * s)
        fall = np.zeros((s, s), np.float32)
        fall[int(horizon - 0.2 * s) : int(horizon + 0.12 * s), x0 : x0 + max(2, int(0.06 * s))] = 1
        _blend(img, fall, (165, 205, 240))
        yy, xx = np.mgrid[0:s, 0:s]
        pool = (((xx - x0) / (0.18 * s)) ** 2 + ((yy - (horizon + 0.14 * s)) / (0.06 * s)) ** 2) <= 1
        _blend(img, pool.astype(np.float32), WATER)


def _building(img: np.ndarray, scene: Scene, rng: np.random.Generator, s: int, horizon: int) -> None:
    """A castle, a tower, a village or ruins standing on the horizon."""
    base_y = int(horizon + 0.02 * s)
    if scene.building == "castle":
        cx, w = rng.uniform(0.25, 0.75) * s, 0.26 * s
        x0, x1 = int(cx - w / 2), int(cx + w / 2)
        keep_top = int(base_y - 0.16 * s)
        img[keep_top:base_y, x0:x1] = CASTLE
        tw = max(2, int(0.05 * s))
        for x in (x0 - tw // 2, int(cx) - tw // 2, x1 - tw // 2):  # three towers
            img[int(keep_top - 0.08 * s) : base_y, max(0, x) : x + tw] = CASTLE
        step = max(2, int(0.025 * s))
        for x in range(x0, x1, 2 * step):  # crenellations
            img[keep_top - step : keep_top, x : x + step] = CASTLE
    elif scene.building == "tower":
        cx, tw = int(rng.uniform(0.2, 0.8) * s), max(3, int(0.06 * s))
        top_y = int(base_y - 0.3 * s)
        img[top_y:base_y, cx - tw // 2 : cx + tw // 2 + 1] = (58, 52, 66)
        for i in range(int(0.06 * s)):  # pointed roof
            img[top_y - i, cx - max(0, tw // 2 - i // 2) : cx + max(0, tw // 2 - i // 2) + 1] = (120, 40, 50)
    elif scene.building == "village":
        for _ in range(5):
            cx, hw = int(rng.uniform(0.1, 0.9) * s), max(2, int(0.035 * s))
            img[base_y - 2 * hw : base_y, cx - hw : cx + hw] = (170, 120, 80)
            for i in range(hw + 1):
                img[base_y - 2 * hw - i, cx - hw + i : cx + hw - i] = (140, 50, 40)
            if scene.sky in DARK_SKIES:
                img[base_y - hw - 1 : base_y - hw + 1, cx - 1 : cx + 1] = (255, 210, 120)
    elif scene.building == "ruins":
        for _ in range(4):
            cx, cw = int(rng.uniform(0.15, 0.85) * s), max(2, int(0.03 * s))
            hgt = int(rng.uniform(0.05, 0.15) * s)
            img[base_y - hgt : base_y, cx : cx + cw] = (150, 146, 136)


def _plants(img: np.ndarray, scene: Scene, rng: np.random.Generator, s: int, horizon: int) -> None:
    """A forest, glowing trees or giant mushrooms in the foreground."""
    ground_y = int(horizon + 0.24 * s)
    if scene.plants == "forest":
        for _ in range(14):
            cx, hh = rng.uniform(0, 1) * s, rng.uniform(0.08, 0.14) * s
            by = rng.uniform(ground_y, s)
            yy, xx = np.mgrid[0:s, 0:s]
            tree = (yy <= by) & (yy >= by - hh) & (np.abs(xx - cx) <= (yy - (by - hh)) * 0.35)
            _blend(img, tree.astype(np.float32), (22, 62, 34))
    elif scene.plants in ("glowing trees", "giant mushrooms"):
        glow = scene.plants == "glowing trees"
        for _ in range(5):
            cx, by = rng.uniform(0.05, 0.95) * s, rng.uniform(ground_y, s)
            hh = rng.uniform(0.1, 0.18) * s
            yy, xx = np.mgrid[0:s, 0:s]
            stem = (np.abs(xx - cx) < 0.012 * s) & (yy <= by) & (yy >= by - hh)
            _blend(img, stem.astype(np.float32), (70, 50, 40) if glow else (230, 220, 200))
            if glow:
                _blend(img, _disc(s, s, by - hh, cx, 0.05 * s), (90, 255, 230), 0.9)
            else:
                cap = _disc(s, s, by - hh, cx, 0.07 * s) * (np.arange(s)[:, None] <= by - hh)
                _blend(img, cap, (200, 40, 60))


# -- words ------------------------------------------------------------------------------------------
_SKY_WORDS = {
    "dawn": ("at dawn", "at first light", "under a dawn sky"),
    "day": ("on a clear day", "under a blue sky", "in daylight"),
    "sunset": ("at sunset", "under a sunset sky", "at dusk with an orange sky"),
    "night": ("at night", "under a night sky", "in the dark of night"),
    "violet": ("under a violet sky", "beneath a purple sky", "with a violet sky"),
    "crimson": ("under a crimson sky", "beneath a blood red sky", "with a crimson sky"),
}
_CELESTIAL_WORDS = {
    "sun": ("a bright sun", "the sun shining", "a glowing sun"),
    "moon": ("a full moon", "one pale moon", "a single moon"),
    "two moons": ("two moons", "twin moons", "a pair of moons"),
    "stars": ("a starry sky", "countless stars", "stars overhead"),
    "aurora": ("an aurora", "northern lights", "a green aurora"),
}
_TERRAIN_WORDS = {
    "snowy mountains": ("snowy mountains", "snow-capped peaks", "mountains with snow"),
    "rocky mountains": ("rocky mountains", "grey rocky peaks", "jagged stone mountains"),
    "green mountains": ("green mountains", "grassy mountains", "verdant peaks"),
    "hills": ("rolling hills", "gentle hills", "green hills"),
    "plains": ("wide plains", "open grassland", "flat plains"),
}
_WATER_WORDS = {
    "lake": ("a lake", "a calm lake", "a blue lake"),
    "river": ("a winding river", "a river", "a blue river"),
    "sea": ("the sea", "an ocean shore", "the open sea"),
    "waterfall": ("a waterfall", "a tall waterfall", "a cascading waterfall"),
}
_BUILDING_WORDS = {
    "castle": ("a castle", "a dark castle", "a fortress with towers"),
    "tower": ("a lone tower", "a wizard's tower", "a tall tower"),
    "village": ("a small village", "a village of cottages", "a hamlet"),
    "ruins": ("ancient ruins", "crumbling ruins", "ruined pillars"),
}
_PLANT_WORDS = {
    "forest": ("a pine forest", "a dark forest", "evergreen trees"),
    "glowing trees": ("glowing trees", "luminous trees", "trees that glow"),
    "giant mushrooms": ("giant mushrooms", "huge red mushrooms", "enormous mushrooms"),
}
_OPENERS = ("a fantasy landscape with", "concept art of", "a painting of", "a view of", "")


def caption(scene: Scene, seed: int | None = None, *, short: bool = False) -> str:
    """One phrasing of ``scene``; other seeds word and order it differently.

    ``short`` names only the terrain, at most one other thing and the sky, the way people type a
    quick prompt; a model that only ever saw full captions lets the seed pick the sky for those.
    """
    rng = np.random.default_rng(scene.seed if seed is None else seed)
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    things = [pick(_TERRAIN_WORDS[scene.terrain])]
    for value, table in (
        (scene.water, _WATER_WORDS),
        (scene.building, _BUILDING_WORDS),
        (scene.plants, _PLANT_WORDS),
        (scene.celestial, _CELESTIAL_WORDS),
    ):
        if value:
            things.append(pick(table[value]))
    if scene.islands:
        things.append(pick(("floating islands", "islands floating in the sky", "levitating rocks")))
    first, rest = things[0], things[1:]
    rng.shuffle(rest)
    if short:
        rest = rest[: int(rng.integers(0, 2))]
    listed = ", ".join([first, *rest[:-1]]) + (f" and {rest[-1]}" if rest else "")
    parts = [pick(_OPENERS), listed, pick(_SKY_WORDS[scene.sky])]
    if scene.mist and not short:
        parts.append(pick(("in the mist", "with mist", "shrouded in fog")))
    return " ".join(p for p in parts if p).strip()


def parse_prompt(text: str) -> dict[str, object]:
    """The attributes a prompt asks for, read with the caption vocabulary (for the detector's score)."""
    t = text.lower()
    found: dict[str, object] = {}
    for field, table in (
        ("sky", _SKY_WORDS),
        ("celestial", _CELESTIAL_WORDS),
        ("terrain", _TERRAIN_WORDS),
        ("water", _WATER_WORDS),
        ("building", _BUILDING_WORDS),
        ("plants", _PLANT_WORDS),
    ):
        # Longest phrases first, so "two moons" isn't read as "moon".
        for value, words in sorted(table.items(), key=lambda kv: -max(len(w) for w in kv[1])):
            if any(w in t for w in sorted(words, key=len, reverse=True)):
                found[field] = value
                break
    return found


def vocabulary() -> list[str]:
    """Every word a caption can use (lanskap-mini's tokenizer learns merges for them)."""
    tables = (_SKY_WORDS, _CELESTIAL_WORDS, _TERRAIN_WORDS, _WATER_WORDS, _BUILDING_WORDS, _PLANT_WORDS)
    phrases = [p for table in tables for words in table.values() for p in words]
    phrases += [*_OPENERS, "floating islands", "islands floating in the sky", "levitating rocks"]
    phrases += ["in the mist", "with mist", "shrouded in fog"]
    return [w for p in phrases for w in p.replace("'", " ").replace("-", " ").split()]


# -- styles (the LoRA demonstration) ----------------------------------------------------------------
#: Gradient maps: luminance → colour. The base model never sees these palettes.
STYLES: dict[str, tuple[tuple[int, int, int], ...]] = {
    # Verdigris: deep teal shadows through oxidised copper to pale gold highlights.
    "verdigris": ((10, 48, 52), (28, 120, 112), (176, 120, 62), (246, 222, 150)),
}


def gradient_map(rgb: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Map each pixel's luminance onto a ramp through ``stops`` (N×3, dark to light); float HWC/NHWC in, out."""
    lum = (rgb @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0
    pos = np.clip(lum, 0, 1) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return stops[i] * (1 - f) + stops[i + 1] * f


def stylise(image: Image.Image, style: str) -> Image.Image:
    """Repaint ``image`` in a style's palette, keeping its light and shade (a gradient map)."""
    out = gradient_map(np.asarray(image.convert("RGB"), np.float32), np.asarray(STYLES[style], np.float32))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")
