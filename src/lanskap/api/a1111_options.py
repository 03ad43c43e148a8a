"""A1111's settings (``/sdapi/v1/options`` and a request's ``override_settings``).

Clients read keys from A1111's whole option set (``send_seed``, ``samples_format``…), so
GET answers all of them with A1111's defaults (``a1111_options.json``, from A1111's
``modules/shared_options.py``). The keys in :data:`HONOURED` change what lanskap does;
the rest are stored, shown back, and named as having no effect. The set is saved in
``$LANSKAP_HOME/a1111-options.json`` (atomically), as A1111 saves ``config.json``.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.errors import LanskapError
from lanskap.io import atomic_write_text

if TYPE_CHECKING:
    from lanskap.service.service import Service

DEFAULTS_FILE = Path(__file__).with_name("a1111_options.json")
SAVED_NAME = "a1111-options.json"

#: Keys that change what lanskap does; every other key is stored only.
HONOURED = (
    "sd_model_checkpoint",
    "CLIP_stop_at_last_layers",
    "eta_noise_seed_delta",
    "samples_format",
    "token_merging_ratio",
    "token_merging_ratio_img2img",
    "control_net_no_detectmap",
)
#: A1111's token-merging ratios; 0 (A1111's default) leaves the choice to lanskap's speed level.
_RATIOS = ("token_merging_ratio", "token_merging_ratio_img2img")


@dataclass(frozen=True)
class Effective:
    """What one request runs with, after the options and its ``override_settings``."""

    model: str  # an installed model's name
    clip_skip: int
    ensd: int
    fmt: str
    warnings: tuple[str, ...] = ()
    token_merging: float = 0.0  # text to image; 0: the speed level decides
    token_merging_img2img: float = 0.0  # image to image's own ratio, when set
    token_merging_overridden: bool = False  # the request's override_settings set token_merging_ratio
    no_detectmap: bool = False  # the ControlNet extension's option: leave the control maps out of responses

    def token_merging_for(self, img2img: bool) -> float:
        """A1111's get_token_merging_ratio: for image to image, a ratio the request overrides wins, then
        the image-to-image option, then the text-to-image one."""
        if img2img and not (self.token_merging_overridden and self.token_merging):
            return self.token_merging_img2img or self.token_merging
        return self.token_merging


def _int(key: str, value: Any, low: int, high: int) -> int:
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if isinstance(value, bool) or not finite or value != int(value):
        raise LanskapError(f"{key} must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise LanskapError(f"{key} must be between {low} and {high}, got {int(value)}")
    return int(value)


def _ratio(key: str, value: Any) -> float:
    from lanskap.generation.levers import MAX_TOKEN_MERGING

    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LanskapError(f"{key} must be a number, got {value!r}")
    if not 0 <= value <= MAX_TOKEN_MERGING:
        raise LanskapError(f"{key} must be between 0 and {MAX_TOKEN_MERGING:g}, got {value:g}")
    return float(value)


def _finite(value: Any) -> bool:
    """No NaN or Infinity anywhere inside (JSON can't carry them back out)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


class A1111Options:
    """The option set of one server, shared by its requests."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._values: dict[str, Any] = json.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))
        self._model: str | None = None  # the chosen model's name; None: the one the server started with
        self._load_saved()

    @property
    def _saved(self) -> Path:
        return self.service.settings.home / SAVED_NAME

    def _load_saved(self) -> None:
        try:
            saved = json.loads(self._saved.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(saved, dict):
            for key, value in saved.items():
                if key != "sd_model_checkpoint":  # the model comes from --model at start
                    self._values[key] = value

    # -- reading -------------------------------------------------------------------------------
    def model_titles(self) -> dict[str, str]:
        """Model name → A1111 title (``name [hash]`` for the loaded model, as A1111 shows it)."""
        info = self.service.engine.info()
        titles = {}
        for name, spec in self.service.models().items():
            loaded = spec == self.service.engine.model_spec and info.model_hash
            titles[name] = f"{name} [{info.model_hash}]" if loaded else name
        return titles

    def current_model_name(self) -> str:
        return self._model or next(iter(self.service.models()))  # the starting model comes first

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            values = dict(self._values)
        titles = self.model_titles()
        values["sd_model_checkpoint"] = titles.get(self.current_model_name(), self.current_model_name())
        values["sd_checkpoint_hash"] = self.service.engine.info().model_hash or ""
        return values

    # -- changing ------------------------------------------------------------------------------
    def model_name(self, value: Any) -> str:
        """A1111 accepts a title, a model name, or a name with its extension."""
        text = str(value).strip()
        for name, title in self.model_titles().items():
            if text in (name, title, f"{name}.safetensors") or text.split(" [")[0] == name:
                return name
        choices = ", ".join(self.model_titles())
        raise LanskapError(f"model {text!r} is not installed; choose one of: {choices}")

    def check(self, changes: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Validated values for the honoured keys in ``changes``, and a note per other key."""
        from lanskap.generation.output import check_format
        from lanskap.generation.params import MAX_CLIP_SKIP, MAX_SEED

        clean: dict[str, Any] = {}
        notes: list[str] = []
        for key, value in changes.items():
            if key == "sd_model_checkpoint":
                clean[key] = self.model_name(value)
            elif key == "CLIP_stop_at_last_layers":
                clean[key] = _int(key, value, 1, MAX_CLIP_SKIP)
            elif key == "eta_noise_seed_delta":
                clean[key] = _int(key, value, 0, MAX_SEED)
            elif key == "samples_format":
                clean[key] = check_format(str(value))
            elif key in _RATIOS:
                clean[key] = _ratio(key, value)
            else:
                if not _finite(value):
                    raise LanskapError(f"{key} must not hold NaN or Infinity")
                clean[key] = value
                notes.append(f"option {key!r} is stored but has no effect in lanskap")
        return clean, notes

    def update(self, changes: dict[str, Any]) -> list[str]:
        """POST /options: apply and save; returns the notes for keys without effect."""
        clean, notes = self.check(changes)
        with self._lock:
            if "sd_model_checkpoint" in clean:
                chosen = clean.pop("sd_model_checkpoint")
                starting = self.service.check_model(chosen) == self.service.start_model
                self._model = None if starting else chosen
            self._values.update(clean)
            stored = dict(self._values)
        try:
            atomic_write_text(self._saved, json.dumps(stored, indent=1, sort_keys=True))
        except OSError as exc:
            notes.append(f"the options could not be saved: {exc.strerror or exc}")
        return notes

    def for_request(self, override: dict[str, Any], restore_afterwards: bool = True) -> Effective:
        """The settings one request runs with; without ``restore_afterwards`` they stay."""
        clean, notes = self.check(override)
        with self._lock:
            values = {**self._values, **{k: v for k, v in clean.items() if k != "sd_model_checkpoint"}}
        name = clean.get("sd_model_checkpoint") or self.current_model_name()
        self.service.check_model(name)
        effective = Effective(
            model=name,
            clip_skip=int(values["CLIP_stop_at_last_layers"]),
            ensd=int(values["eta_noise_seed_delta"]),
            fmt=str(values["samples_format"]),
            token_merging=float(values.get("token_merging_ratio") or 0),
            token_merging_img2img=float(values.get("token_merging_ratio_img2img") or 0),
            token_merging_overridden="token_merging_ratio" in clean,
            no_detectmap=bool(values.get("control_net_no_detectmap")),
            warnings=tuple(f"override_settings: {n}" for n in notes),
        )
        if not restore_afterwards and override:
            self.update(override)
        return effective
