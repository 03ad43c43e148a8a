"""Regional prompts: parts of the canvas, each with its own prompt, over the base prompt.

Each region is a rectangle in fractions of the canvas (or a painted mask). While denoising, the
model runs once with the base prompt and once with each region's prompt, and the predictions are
mixed by the regions' soft masks (MultiDiffusion's region-based control; ``generation/compose.py``
does it). Inside a region its prompt leads and the base prompt keeps ``base`` of a say (A1111's
Regional Prompter calls it the base ratio), so the picture stays one scene; the masks' edges are
feathered, so the borders blend.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from lanskap.errors import LanskapError
from lanskap.prompts.lora_tags import extract_lora_tags

#: The default limit on regions in one request (each costs one more model call a step);
#: the ``max_regions`` setting changes it.
MAX_REGIONS = 8
DEFAULT_BASE = 0.2
#: The largest side a painted mask is recorded at (infotext, gallery).
MASK_SIDE = 256
#: Feathering of a region's edge, as a fraction of the canvas's shorter side.
FEATHER = 0.04


@dataclass(frozen=True)
class Region:
    """One region: ``box`` is (left, top, right, bottom) in [0, 1]; ``mask`` (white = in) replaces it."""

    prompt: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    negative_prompt: str = ""  # empty: the request's negative prompt
    weight: float = 1.0
    mask: Image.Image | None = field(default=None, compare=False)

    def validate(self) -> None:
        x0, y0, x1, y1 = self.box
        if not all(0.0 <= v <= 1.0 for v in self.box) or any(v != v for v in self.box):
            raise LanskapError(f"region {_fmt_box(self.box)} lies outside the canvas: each value must be in [0, 1]")
        if x1 <= x0 or y1 <= y0:
            raise LanskapError(f"region {_fmt_box(self.box)} has no area: right must exceed left, bottom exceed top")
        if not 0.0 < self.weight <= 10.0 or self.weight != self.weight:
            raise LanskapError(f"region weight must be above 0 and at most 10, got {self.weight:g}")
        if not self.prompt.strip():
            raise LanskapError(f"region {_fmt_box(self.box)} has an empty prompt")
        try:
            (self.prompt + self.negative_prompt).encode("utf-8")
        except UnicodeEncodeError:
            raise LanskapError("a region's prompt holds something that is not text (a lone surrogate)") from None
        if extract_lora_tags(self.prompt)[1] or extract_lora_tags(self.negative_prompt)[1]:
            raise LanskapError("a region's prompt cannot load a LoRA; put <lora:…> tags in the base prompt")
        if self.mask is not None and self.mask.convert("L").getbbox() is None:
            raise LanskapError("a region's painted mask is empty (all black)")

    def soft_mask(self, width: int, height: int) -> np.ndarray:
        """The region as weights in [0, 1] on a ``width`` x ``height`` grid, its edge feathered."""
        if self.mask is not None:
            m = self.mask.convert("L").resize((width, height), Image.Resampling.BILINEAR)
        else:
            x0, y0, x1, y1 = self.box
            m = Image.new("L", (width, height), 0)
            box = (round(x0 * width), round(y0 * height), round(x1 * width) - 1, round(y1 * height) - 1)
            m.paste(255, (box[0], box[1], max(box[0], box[2]) + 1, max(box[1], box[3]) + 1))
        radius = FEATHER * min(width, height)
        if radius >= 0.5:
            m = m.filter(ImageFilter.GaussianBlur(radius))
        return np.asarray(m, dtype=np.float32) / 255.0


def _fmt_box(box: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in box)


def parse(text: str) -> Region:
    """``LEFT,TOP,RIGHT,BOTTOM[,WEIGHT]:PROMPT[;NEGATIVE]``, as the CLI's ``--region`` takes it."""
    head, sep, rest = text.partition(":")
    if not sep:
        raise LanskapError(f"a region is LEFT,TOP,RIGHT,BOTTOM:PROMPT (fractions of the canvas), not {text!r}")
    try:
        numbers = [float(v) for v in head.split(",")]
    except ValueError:
        raise LanskapError(f"a region's box must be numbers (LEFT,TOP,RIGHT,BOTTOM), not {head!r}") from None
    if len(numbers) not in (4, 5):
        raise LanskapError(f"a region's box is 4 numbers (and an optional weight), not {len(numbers)}")
    prompt, _, negative = rest.partition(";")
    box = (numbers[0], numbers[1], numbers[2], numbers[3])
    region = Region(prompt.strip(), box, negative.strip(), numbers[4] if len(numbers) == 5 else 1.0)
    region.validate()
    return region


@dataclass(frozen=True)
class Layout:
    """The regions of one request, and how much the base prompt keeps inside them."""

    regions: tuple[Region, ...]
    base: float = DEFAULT_BASE

    def validate(self, limit: int = MAX_REGIONS) -> None:
        if not self.regions:
            raise LanskapError("a region layout needs at least one region")
        if len(self.regions) > limit:
            raise LanskapError(f"{len(self.regions)} regions is more than the limit of {limit}")
        if not 0.0 <= self.base <= 1.0 or self.base != self.base:
            raise LanskapError(f"the base prompt's share in regions must be between 0 and 1, got {self.base:g}")
        for region in self.regions:
            region.validate()

    def infotext(self) -> dict[str, str]:
        text = json.dumps(self.to_list(), ensure_ascii=False, separators=(",", ":"))
        return {"Regions": text, "Region base": f"{self.base:g}"}

    def to_list(self) -> list[dict[str, object]]:
        return [_to_json(r) for r in self.regions]


def _to_json(r: Region) -> dict[str, object]:
    d: dict[str, object] = {"box": list(r.box), "prompt": r.prompt}
    if r.negative_prompt:
        d["negative_prompt"] = r.negative_prompt
    if r.weight != 1.0:
        d["weight"] = r.weight
    if r.mask is not None:  # kept small (at most 256 px a side; feathered anyway), and stable on a round trip
        small = r.mask.convert("L")
        if max(small.size) > MASK_SIDE:
            scale = MASK_SIDE / max(small.size)
            small = small.resize((max(1, round(small.width * scale)), max(1, round(small.height * scale))))
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
        d["mask"] = base64.b64encode(buf.getvalue()).decode("ascii")
    return d


def from_list(items: object, base: float = DEFAULT_BASE) -> Layout:
    """A layout from its JSON form (the infotext's ``Regions`` and the API's ``regions``)."""
    if not isinstance(items, list):
        raise LanskapError("regions must be a list of {box, prompt} objects")
    regions = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise LanskapError("each region needs a prompt (text) and a box [left, top, right, bottom]")
        box = item.get("box", [0, 0, 1, 1])
        if not isinstance(box, list | tuple) or len(box) != 4 or not all(isinstance(v, int | float) for v in box):
            raise LanskapError("a region's box is four numbers: [left, top, right, bottom], fractions of the canvas")
        mask = _mask(item["mask"]) if item.get("mask") else None
        weight = item.get("weight", 1.0)
        if not isinstance(weight, int | float):
            raise LanskapError("a region's weight must be a number")
        negative = item.get("negative_prompt", "")
        b = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        regions.append(Region(item["prompt"], b, str(negative or ""), float(weight), mask))
    return Layout(tuple(regions), base)


def _mask(data: object) -> Image.Image:
    from lanskap.images import open_image

    try:
        raw = base64.b64decode(str(data), validate=True)
    except ValueError:
        raise LanskapError("a region's mask must be a base64 PNG") from None
    return open_image(io.BytesIO(raw), "region mask").convert("L")  # size-checked before decoding


def from_infotext(p: dict[str, str]) -> Layout | None:
    if "Regions" not in p:
        return None
    try:
        return from_list(json.loads(p["Regions"]), float(p.get("Region base", DEFAULT_BASE)))
    except ValueError:
        raise LanskapError("the image's Regions parameter is malformed") from None
