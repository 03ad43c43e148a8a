"""A ControlNet unit: what it holds, its bounds, and how the extension writes it down.

The fields, their names, their defaults and the values of ``control_mode`` and
``resize_mode`` are the sd-webui-controlnet extension's (``external_code.ControlNetUnit``),
because that is what API clients send and what A1111 infotexts hold
(``ControlNet 0: "Module: canny, Model: …, Weight: 1, …"``). Every front builds units here, and
:meth:`ControlUnit.validate` is the one place their bounds and messages are defined.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any

from PIL import Image

from lanskap.errors import LanskapError

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
HR_OPTIONS = ("Both", "Low res only", "High res only")
#: Older and shorter names clients send; the extension's aliases, and lanskap's CLI words.
_RESIZE_ALIASES = {
    "inner fit (scale to fit)": "Crop and Resize",
    "outer fit (shrink to fit)": "Resize and Fill",
    "scale to fit (inner fit)": "Crop and Resize",
    "envelope (outer fit)": "Resize and Fill",
    "just resize (latent upscale)": "Just Resize",
    "just-resize": "Just Resize",
    "crop": "Crop and Resize",
    "crop-and-resize": "Crop and Resize",
    "fill": "Resize and Fill",
    "resize-and-fill": "Resize and Fill",
}
_MODE_ALIASES = {"balanced": CONTROL_MODES[0], "prompt": CONTROL_MODES[1], "control": CONTROL_MODES[2]}
MAX_UNITS = 3  # the web app's unit count; the API and CLI take up to this many too
MAX_WEIGHT = 2.0
#: How far a control image's aspect may differ from the output's when it is stretched ("Just Resize").
ASPECT_TOLERANCE = 0.05
MIN_PROCESSOR_RES, MAX_PROCESSOR_RES = 64, 2048
MAX_THRESHOLD = 10_000.0  # canny's thresholds run past 255 (gradient strength); no slider goes further


def control_mode(value: str | int) -> str:
    """The extension's control mode for a name, an alias or its index (0, 1, 2)."""
    if isinstance(value, bool):
        raise LanskapError(f"unknown control mode {value!r}; use one of {', '.join(CONTROL_MODES)}")
    if isinstance(value, int) and 0 <= value < len(CONTROL_MODES):
        return CONTROL_MODES[value]
    text = str(value).strip()
    for mode in CONTROL_MODES:
        if text.lower() == mode.lower():
            return mode
    if text.lower() in _MODE_ALIASES:
        return _MODE_ALIASES[text.lower()]
    raise LanskapError(f"unknown control mode {value!r}; use one of {', '.join(CONTROL_MODES)}")


def resize_mode(value: str | int) -> str:
    """The extension's resize mode for a name, an alias or its index (0, 1, 2; 3 is "Just Resize")."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3:
        return RESIZE_MODES[0] if value == 3 else RESIZE_MODES[value]
    text = str(value).strip()
    for mode in RESIZE_MODES:
        if text.lower() == mode.lower():
            return mode
    if text.lower() in _RESIZE_ALIASES:
        return _RESIZE_ALIASES[text.lower()]
    raise LanskapError(f"unknown control resize mode {value!r}; use one of {', '.join(RESIZE_MODES)}")


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit. ``image`` is the picture given (before its preprocessor); None only
    while settings restored from an infotext wait for their picture. ``model`` empty: the one
    installed ControlNet made for this preprocessor's kind (``models.pick``). ``threshold_a``,
    ``threshold_b`` at -1: the preprocessor's own defaults."""

    image: Image.Image | None
    module: str = "none"
    model: str = ""
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = CONTROL_MODES[0]
    resize_mode: str = "Crop and Resize"
    processor_res: int = 512
    threshold_a: float = -1
    threshold_b: float = -1
    pixel_perfect: bool = False
    hr_option: str = "Both"

    @property
    def soft(self) -> bool:
        """The extension's soft injection: deeper residuals weigh more (both non-balanced modes)."""
        return self.control_mode != CONTROL_MODES[0]

    @property
    def cond_only(self) -> bool:
        """The extension's CFG injection: the unit acts on the conditional half of the batch only."""
        return self.control_mode == CONTROL_MODES[2]

    def active(self, step: int, steps: int) -> bool:
        """Whether the unit acts at ``step`` (0-based) of ``steps``: the extension's rule."""
        done = step / steps if steps else 0.0
        return self.weight > 0 and self.guidance_start <= done <= self.guidance_end

    def validate(self, width: int | None = None, height: int | None = None, index: int = 0) -> ControlUnit:
        """Raise a one-line LanskapError naming the first bad field; return the unit, names made canonical."""
        from lanskap.control.preprocess import canonical

        where = f"ControlNet unit {index}"
        unit = replace(
            self,
            module=canonical(self.module),
            control_mode=control_mode(self.control_mode),
            resize_mode=resize_mode(self.resize_mode),
        )
        if unit.image is None:
            raise LanskapError(f"{where} has no control image")
        if not isinstance(unit.image, Image.Image):
            raise LanskapError(f"{where}: the control image must be a picture")
        if unit.weight != unit.weight or not 0.0 <= unit.weight <= MAX_WEIGHT:
            raise LanskapError(f"{where}: weight must be between 0 and {MAX_WEIGHT:g}, got {unit.weight:g}")
        for name, value in (("start", unit.guidance_start), ("end", unit.guidance_end)):
            if value != value or not 0.0 <= value <= 1.0:
                raise LanskapError(f"{where}: {name} must be between 0 and 1 (a share of the steps), got {value:g}")
        if unit.guidance_start >= unit.guidance_end:
            raise LanskapError(f"{where}: start ({unit.guidance_start:g}) must be before end ({unit.guidance_end:g})")
        if unit.hr_option not in HR_OPTIONS:
            raise LanskapError(f"{where}: unknown hires option {unit.hr_option!r}; use one of {', '.join(HR_OPTIONS)}")
        for name, value in (("threshold A", unit.threshold_a), ("threshold B", unit.threshold_b)):
            if value != value or not -1 <= value <= MAX_THRESHOLD:
                raise LanskapError(f"{where}: {name} must be -1 (the preprocessor's default) to {MAX_THRESHOLD}")
        if not unit.pixel_perfect and not MIN_PROCESSOR_RES <= unit.processor_res <= MAX_PROCESSOR_RES:
            raise LanskapError(
                f"{where}: preprocessor resolution must be between {MIN_PROCESSOR_RES} and {MAX_PROCESSOR_RES}, "
                f"got {unit.processor_res}"
            )
        if width and height:
            unit.check_aspect(width, height, where)
        return unit

    def check_aspect(self, width: int, height: int, where: str = "ControlNet unit") -> None:
        """A stretched control image must have about the output's shape, or its structure is distorted."""
        if self.resize_mode != RESIZE_MODES[0] or self.image is None:
            return
        w, h = self.image.size
        if abs((w / h) / (width / height) - 1) > ASPECT_TOLERANCE:
            raise LanskapError(
                f"{where}: the control image is {w}x{h} but the output is {width}x{height}; with "
                '"Just Resize" it would be stretched (give a picture of the same shape, or crop or fill instead)'
            )

    def fields(self) -> dict[str, Any]:
        """The extension's infotext fields, in its order (the picture is never written)."""
        out: dict[str, Any] = {
            "Module": self.module,
            "Model": self.model or "None",
            "Weight": _num(self.weight),
            "Resize Mode": self.resize_mode,
            "Processor Res": self.processor_res,
            "Threshold A": _num(self.threshold_a),
            "Threshold B": _num(self.threshold_b),
            "Guidance Start": _num(self.guidance_start),
            "Guidance End": _num(self.guidance_end),
            "Pixel Perfect": self.pixel_perfect,
            "Control Mode": self.control_mode,
        }
        if self.hr_option != "Both":
            out["Hr Option"] = self.hr_option
        return {k: v for k, v in out.items() if v != "-1"}

    def infotext(self) -> str:
        """``Module: canny, Model: name [hash], Weight: 1, …``: the extension's serialize_unit."""
        return ", ".join(f"{k}: {v}" for k, v in self.fields().items())


def _num(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def infotext(units: tuple[ControlUnit, ...]) -> dict[str, str]:
    """``ControlNet 0``, ``ControlNet 1``, …: one infotext entry per unit."""
    return {f"ControlNet {i}": unit.infotext() for i, unit in enumerate(units)}


#: The unit fields an infotext entry may set (every field but the picture).
_FIELDS = frozenset(f.name for f in dataclass_fields(ControlUnit)) - {"image"}


def parse_unit(text: str) -> ControlUnit:
    """The unit an infotext entry describes, without its picture (the extension's parse_unit)."""
    values: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if not sep:
            raise LanskapError(f"cannot read ControlNet settings {text[:80]!r}")
        name = "_".join(key.lower().split())
        if name not in _FIELDS:
            continue  # a field of a newer extension: not one lanskap acts on
        values[name] = _parse_value(name, value.strip())
    try:
        unit = ControlUnit(image=None, **values)
        return replace(unit, control_mode=control_mode(unit.control_mode), resize_mode=resize_mode(unit.resize_mode))
    except (TypeError, ValueError):
        raise LanskapError(f"cannot read ControlNet settings {text[:80]!r}") from None


def _parse_value(name: str, value: str) -> Any:
    if name == "pixel_perfect":
        return value == "True"
    if name in ("weight", "guidance_start", "guidance_end", "threshold_a", "threshold_b"):
        return float(value)
    if name == "processor_res":
        return int(float(value))
    if name == "model" and value == "None":
        return ""
    return value


def from_infotext(params: dict[str, str]) -> tuple[ControlUnit, ...]:
    """Every ``ControlNet N`` entry of a parsed infotext, in order."""
    keys = sorted((k for k in params if k.startswith("ControlNet ") and k[11:].isdigit()), key=lambda k: int(k[11:]))
    return tuple(parse_unit(params[k].strip('"')) for k in keys)
