"""A1111's upscalers by name: what is installed, and enlarging a picture with one.

``None``, ``Lanczos`` and ``Nearest`` are Pillow resizes; the ``Latent …`` modes resize SD latents
(hires fix only); ``SD x4`` is Stability's x4 upscaler through diffusers; every ESRGAN-family file
in ``$LANSKAP_HOME/upscalers`` is an upscaler named after the file. :func:`upscale` follows A1111's
``Upscaler.upscale``: run the model until the picture is at least the target (at most three
times), then Lanczos to the target, each side rounded down to a multiple of 8.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from lanskap.errors import CancelledError, LanskapError, SettingError

if TYPE_CHECKING:
    import torch

    from lanskap.config import Settings
    from lanskap.models.device import Placement
from lanskap.models.kept import KeptModels

#: A1111's ``shared.latent_upscale_modes``: name → (torch interpolation mode, antialias).
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PLAIN = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
SD_X4 = "SD x4"
SD_X4_FOLDER = "sd-x4"
FILE_SUFFIXES = (".safetensors", ".pth", ".pt")
ESRGAN_TILE, ESRGAN_OVERLAP = 192, 16  # input pixels per tile (A1111's ESRGAN defaults: 192, 8)

#: Reports (done, total, what) while an upscaler works tile by tile.
Tick = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Upscaler:
    """One named upscaler; ``scale`` is its model's own factor (None for resizes)."""

    name: str
    kind: str  # none, plain, latent, esrgan, sdx4
    scale: int | None = None
    path: Path | None = None

    def to_a1111(self) -> dict[str, object]:
        """As A1111's ``/sdapi/v1/upscalers`` lists it."""
        path = str(self.path) if self.path is not None and self.kind == "esrgan" else None
        return {"name": self.name, "model_name": self.kind if self.kind in ("esrgan", "sdx4") else None,
                "model_path": path, "model_url": None, "scale": self.scale or 4}  # fmt: skip


#: The resizes every install has, in A1111's order.
BUILTIN = (Upscaler("None", "none"), Upscaler("Lanczos", "plain", 4), Upscaler("Nearest", "plain", 4))


def model_files(settings: Settings) -> list[Path]:
    """Upscaler files in ``$LANSKAP_HOME/upscalers`` (links out of the folder are not followed)."""
    from lanskap.folders import walk

    root = settings.upscalers_dir
    if not root.is_dir():
        return []
    files, _ = walk(root, recursive=False)
    return [p for p in files if p.suffix.lower() in FILE_SUFFIXES]


def sd_x4_source(settings: Settings) -> str:
    """What SD x4 loads: the folder in ``upscalers/sd-x4`` if present, else the ``sd_upscaler`` setting."""
    local = settings.upscalers_dir / SD_X4_FOLDER
    return str(local) if (local / "model_index.json").is_file() else settings.sd_upscaler


def sd_x4_installed(settings: Settings) -> bool:
    source = sd_x4_source(settings)
    if Path(source).is_dir():
        return (Path(source) / "model_index.json").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(source, "model_index.json"), str)
    except Exception:  # a malformed id: not installed
        return False


def installed(settings: Settings) -> list[Upscaler]:
    """A1111's upscaler list: the resizes, SD x4 when it is here, then each model file."""
    found = list(BUILTIN)
    if sd_x4_installed(settings):
        found.append(Upscaler(SD_X4, "sdx4", 4))
    found += [Upscaler(p.stem, "esrgan", _guess_scale(p.stem), p) for p in model_files(settings)]
    return found


def _guess_scale(stem: str) -> int:
    import re

    m = re.search(r"(?:^|[^0-9])([1248])x|x([1248])(?:[^0-9]|$)", stem.lower())
    return int(m[1] or m[2]) if m else 4


def find(name: str, settings: Settings, *, latent: bool = False) -> Upscaler:
    """The upscaler called ``name`` (case-insensitive, as A1111 matches), or a one-line error listing them.

    ``latent`` allows the latent modes (hires fix); extras and SD upscale work on pictures.
    """
    if latent and name in LATENT_MODES:
        return Upscaler(name, "latent", 2)
    for up in BUILTIN:  # the common case needs no folder scan
        if up.name.lower() == name.lower():
            return up
    choices = installed(settings)
    for up in choices:
        if up.name.lower() == name.lower():
            return up
    if name.lower() == SD_X4.lower():
        return Upscaler(SD_X4, "sdx4", 4)  # not here yet: loading says why it can't be had
    names = [u.name for u in choices] + (list(LATENT_MODES) if latent else [])
    raise SettingError(f"unknown upscaler {name!r}; choose one of: {', '.join(names)}", "upscaler")


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """A1111's destination: each side times ``scale``, rounded down to a multiple of 8."""
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


class Runner:
    """Runs upscalers on one device, keeping the last few loaded models."""

    def __init__(self, settings: Settings, placement: Placement) -> None:
        self.settings = settings
        self.placement = placement
        self._models: KeptModels[object] = KeptModels(2)

    def _model(self, up: Upscaler) -> object:
        def load() -> object:
            if up.kind == "esrgan":
                from lanskap.upscale.loading import load_esrgan

                assert up.path is not None
                return load_esrgan(up.path, self.settings, self.placement)
            from lanskap.upscale.sdx4 import load_sd_x4

            return load_sd_x4(sd_x4_source(self.settings), self.settings, self.placement)

        return self._models.get(f"{up.kind}:{up.path or up.name}", load)

    def check(self, up: Upscaler) -> None:
        """Load ``up``'s model now, so a bad file is reported before any work is done."""
        if up.kind in ("esrgan", "sdx4"):
            self._model(up)

    def upscale(
        self,
        image: Image.Image,
        up: Upscaler,
        size: tuple[int, int],
        *,
        tick: Tick | None = None,
        cancel: threading.Event | None = None,
        prompt: str = "",
        seed: int = 0,
    ) -> Image.Image:
        """``image`` enlarged to ``size`` with ``up`` (A1111's loop: the model at most three times)."""
        if up.kind == "latent":
            raise LanskapError(f"{up.name} works on latents and is for hires fix only; choose an image upscaler")
        image = image.convert("RGB")
        if up.kind in ("esrgan", "sdx4"):
            for _ in range(3):
                if image.width >= size[0] and image.height >= size[1]:
                    break
                if cancel is not None and cancel.is_set():
                    raise CancelledError("upscaling interrupted")
                before = image.size
                image = self._run_model(image, up, tick, cancel, prompt, seed)
                if image.size == before:
                    break
        if image.size != size:
            method = PLAIN.get(up.name) if up.kind == "plain" else Image.Resampling.LANCZOS
            image = image.resize(size, method or Image.Resampling.LANCZOS)
        return image

    def _run_model(
        self, image: Image.Image, up: Upscaler, tick: Tick | None, cancel: threading.Event | None, prompt: str,
        seed: int,
    ) -> Image.Image:  # fmt: skip
        model = self._model(up)
        if up.kind == "esrgan":
            from lanskap.upscale.loading import run_tiled

            return run_tiled(model, image, self.placement, tick=tick, cancel=cancel)  # type: ignore[arg-type]
        from lanskap.upscale.sdx4 import run_sd_x4

        return run_sd_x4(model, image, prompt=prompt, seed=seed, tick=tick, cancel=cancel)


def latent_resize(latents: torch.Tensor, mode: str, height: int, width: int) -> torch.Tensor:
    """Hires fix's latent upscale, as A1111 does it (``F.interpolate`` at 1/8 of the target size)."""
    from torch.nn import functional as F

    how, antialias = LATENT_MODES[mode]
    return F.interpolate(latents, size=(height // 8, width // 8), mode=how, antialias=antialias)
