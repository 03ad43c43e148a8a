"""ControlNet while denoising: each UNet call gets the units' residuals, as the extension adds them.

The UNet's ``forward`` is wrapped for one pipeline call (as the composer wraps it), so every mode
the engine runs (txt2img, img2img, both kinds of inpainting, the hires fix's second pass,
regional prompts) gets control the same way, with no ControlNet pipeline of its own. For each
call, every unit active at this step runs its ControlNet on the noisy latents (the first four
channels, as the extension does for a 9-channel inpainting UNet), the same timestep and the same
text conditioning, and its 13 residuals are scaled and summed into
``down_block_additional_residuals``/``mid_block_additional_residual``. The extension's rules:

- a unit acts at step ``i`` of ``n`` when ``start <= i / n <= end``;
- "Balanced": every residual times the weight;
- "My prompt is more important": soft injection, residual ``k`` of 13 times ``weight * 0.825**(12-k)``;
- "ControlNet is more important": soft injection, on the conditional half of the batch only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from lanskap.config import Settings
from lanskap.control import models, preprocess
from lanskap.control.depth import Estimators
from lanskap.control.units import ControlUnit
from lanskap.models.device import Placement
from lanskap.models.kept import KeptModels
from lanskap.patching import wrapped_forward

SOFT_BASE = 0.825  # the extension's (and ControlNet's own guess mode's) per-level decay


@dataclass
class ActiveUnit:
    """A unit ready to run: its network and its control map at the output size."""

    unit: ControlUnit
    net: nn.Module
    control: Image.Image  # the map, fitted to the first pass's size
    _tensors: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def tensor(self, width: int, height: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(1, 3, h, w) in [0, 1]; resized for a hires pass (the extension resizes the map likewise)."""
        key = (width, height)
        if key not in self._tensors:
            im = self.control if self.control.size == key else self.control.resize(key, Image.Resampling.LANCZOS)
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            self._tensors[key] = torch.from_numpy(arr).permute(2, 0, 1)[None].to(device, dtype)
        return self._tensors[key]


def scales(unit: ControlUnit, count: int) -> list[float]:
    """Per-residual weights, the mid block's last: flat, or the extension's soft decay."""
    if unit.soft:
        return [unit.weight * SOFT_BASE ** float(count - 1 - k) for k in range(count)]
    return [unit.weight] * count


@dataclass
class ControlHook:
    """The units of one pipeline call. ``images``: the batch's image count (a doubled batch is guided)."""

    units: list[ActiveUnit]
    images: int
    scale: int = 8  # pixels per latent
    step: int = 0
    steps: int = 0

    def next_step(self, steps: int) -> None:
        """Called after each sampling step with the pass's step count."""
        self.step += 1
        self.steps = steps

    def patched(self, unet: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Route ``unet``'s forward through :meth:`forward` for one pipeline call."""
        return wrapped_forward(unet, self.forward)

    def forward(self, original: Callable[..., Any], sample: torch.Tensor, timestep: Any,
                encoder_hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        n, _, h, w = sample.shape
        downs: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for au in self.units:
            if not au.unit.active(self.step, self.steps):
                continue
            cond = au.tensor(w * self.scale, h * self.scale, sample.device, sample.dtype).expand(n, -1, -1, -1)
            d, m = au.net(sample[:, :4], timestep, encoder_hidden_states=encoder_hidden_states,
                          controlnet_cond=cond, conditioning_scale=1.0, return_dict=False)  # fmt: skip
            weights = scales(au.unit, len(d) + 1)
            d = [r * s for r, s in zip(d, weights, strict=False)]
            m = m * weights[-1]
            if au.unit.cond_only and n == 2 * self.images:  # [uncond, cond]: the control acts on cond only
                mark = torch.cat([torch.zeros(n // 2), torch.ones(n // 2)]).to(sample.device, sample.dtype)
                d = [r * mark[:, None, None, None] for r in d]
                m = m * mark[:, None, None, None]
            downs = d if downs is None else [a + b for a, b in zip(downs, d, strict=True)]
            mid = m if mid is None else mid + m
        if downs is not None:
            kwargs["down_block_additional_residuals"] = tuple(downs)
            kwargs["mid_block_additional_residual"] = mid
        return original(sample, timestep, encoder_hidden_states, *args, **kwargs)


class Controls:
    """ControlNet models and depth networks on one device, for one engine (the last three nets kept)."""

    def __init__(self, settings: Settings, placement: Placement) -> None:
        self.settings = settings
        self.placement = placement
        self.estimators = Estimators(settings, placement)
        self._nets: KeptModels[nn.Module] = KeptModels(3)

    def resolve(self, unit: ControlUnit) -> models.ControlModel:
        return models.for_unit(unit, self.settings)

    def net(self, model: models.ControlModel, base_unet: nn.Module) -> nn.Module:
        # a single file takes its architecture from the base: the same file on another base is another net
        key = f"{model.path}:{model.hash}:{id(base_unet)}"
        return self._nets.get(key, lambda: models.load(model, base_unet, self.settings, self.placement))

    def detect(self, unit: ControlUnit, width: int, height: int) -> Image.Image:
        """The unit's preprocessed map, before fitting (what ``/controlnet/detect`` and the web app show)."""
        assert unit.image is not None
        res = preprocess.processor_res(unit, width, height)
        return preprocess.run(unit.image, unit.module, res, unit.threshold_a, unit.threshold_b, self.estimators)
