"""The engine's side of structure control: ready a request's ControlNet units and its depth map.

Both are extra conditioning of the same denoising (``control/hook.py`` feeds the units to the
UNet; the depth map is the depth pipeline's fifth input channel), made once per job before any
step runs, so a missing model or a bad picture is reported before sampling starts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from lanskap.control import preprocess
from lanskap.control.hook import ActiveUnit, ControlHook, Controls
from lanskap.control.models import check_base
from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.generation.params import GenerationRequest
    from lanskap.generation.prepare import Prepared
    from lanskap.models.loader import LoadedModel


def check_mode(m: LoadedModel, req: GenerationRequest) -> GenerationRequest:
    """A depth model runs depth2img only; depth2img runs on a depth model only (each one line)."""
    from lanskap.generation.params import DepthInput

    if m.depth:
        if req.init is None or req.mask is not None:
            raise LanskapError(
                f"{m.name} is an SD 2 depth model: it repaints a picture keeping its depth (depth2img); "
                "give it a picture, or use another model for text-to-image and inpainting"
            )
        return req if req.depth is not None else replace(req, depth=DepthInput())
    if req.depth is not None:
        raise LanskapError(
            f"depth2img needs an SD 2 depth model (such as sd2-community/stable-diffusion-2-depth); {m.name} is not one"
        )
    if req.control and int(m.pipe.unet.config.in_channels) not in (4, 9):
        raise LanskapError(f"ControlNet can't steer {m.name}: its UNet is not a Stable Diffusion UNet")
    return req


def ready_units(
    controls: Controls, m: LoadedModel, req: GenerationRequest, prep: Prepared
) -> tuple[list[ActiveUnit], dict[str, Image.Image]]:
    """Each unit's network (its base checked) and its control map at the processing size, and the maps
    as the preprocessors made them (to show and save)."""
    assert req.width is not None and req.height is not None
    active: list[ActiveUnit] = []
    maps: dict[str, Image.Image] = {}
    for i, unit in enumerate(req.control):
        unit = unit.validate(req.width, req.height, i)
        model = controls.resolve(unit)
        check_base(model, m.cross_attention_dim, m.name)
        net = controls.net(model, m.pipe.unet)
        shown = controls.detect(unit, req.width, req.height)
        maps[f"ControlNet {i}"] = shown
        active.append(ActiveUnit(replace(unit, model=model.title), net, _fitted(shown, unit.resize_mode, req, prep)))
    return active, maps


def _fitted(shown: Image.Image, mode: str, req: GenerationRequest, prep: Prepared) -> Image.Image:
    """The map at the processing size; for "only masked" inpainting, cut as the picture is cut."""
    assert req.width is not None and req.height is not None
    if prep.region is None or req.init is None:
        return preprocess.fit(shown, req.width, req.height, mode)
    full = preprocess.fit(shown, req.init.image.width, req.init.image.height, mode)
    return full.crop(prep.region).resize((req.width, req.height), Image.Resampling.LANCZOS)


def hook(units: list[ActiveUnit], images: int, scale: int, second_pass: bool) -> ControlHook | None:
    """The hook of one pipeline call, with the units its pass takes (the extension's ``hr_option``)."""
    skip = "Low res only" if second_pass else "High res only"
    chosen = [u for u in units if u.unit.hr_option != skip]
    return ControlHook(chosen, images, scale) if chosen else None


def depth_map(controls: Controls, m: LoadedModel, req: GenerationRequest) -> tuple[torch.Tensor, Image.Image]:
    """depth2img's depth: the given picture, else the model's own estimator (or the configured MiDaS).

    Returns the (1, h, w) map the pipeline takes and its picture (white near), for --save-depth.
    """
    from lanskap.control.depth import to_image

    assert req.depth is not None and req.init is not None and req.width and req.height
    if req.depth.map is not None:
        grey = req.depth.map.convert("L").resize((req.width, req.height), Image.Resampling.LANCZOS)
        tensor = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None]
        return tensor, grey
    picture = req.init.image.convert("RGB").resize((req.width, req.height), Image.Resampling.LANCZOS)
    own = m.source / "depth_estimator" if m.source.is_dir() else None
    if own is not None and (own / "config.json").is_file():
        est = controls.estimators.own(own, m.source / "feature_extractor")
    else:
        est = controls.estimators.get("depth_midas")
    depth = est.predict(picture)
    return depth, to_image(depth, picture.size)
