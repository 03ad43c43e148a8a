"""Composition while denoising: windows over a panorama, prompts by region.

Both are done the same way: the UNet's ``forward`` is replaced, for one pipeline call, by one
that runs the real UNet on crops of the latents (windows) with one or more conditionings (the
base prompt, each region's prompt), and fuses the predictions into one for the whole canvas,
weighted per pixel. The sampler then takes its step on the whole canvas, as it would on one frame.

Why the predictions and not the denoised latents (MultiDiffusion's own formulation, which
diffusers' panorama pipeline follows by stepping a saved scheduler per window): for the
first-order samplers the two are the same step, and fusing the prediction keeps every other
sampler (multistep, ancestral, SDE, second order) and every mode (img2img, both kinds of
inpainting) unchanged, since the pipeline never knows. Memory is bounded by the window batch.

Window weights fall off towards each window's edges, where the model sees least context, so an
overlap blends from one window into the next; region masks are feathered the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lanskap.generation.panorama import Panorama, starts
from lanskap.generation.regions import Layout
from lanskap.patching import wrapped_forward


@dataclass(frozen=True)
class Conditioning:
    """One region's prompt, encoded: conditional and unconditional (1, tokens, dim)."""

    cond: torch.Tensor
    uncond: torch.Tensor
    region: int  # index into the layout's regions (its box or mask, and its weight)

    def hidden(self, batch: int, guided: bool) -> torch.Tensor:
        """The encoder states a pipeline batch of ``batch`` images would pass (uncond first when guided)."""
        cond = self.cond.expand(batch, -1, -1)
        return torch.cat([self.uncond.expand(batch, -1, -1), cond]) if guided else cond


@dataclass(frozen=True)
class Window:
    rows: torch.Tensor  # latent row indices (wrapping where the canvas wraps)
    cols: torch.Tensor
    y: int
    x: int


@dataclass
class _Plan:
    """Everything that depends only on the latent size, made once per size."""

    windows: list[Window]
    weight: torch.Tensor  # (1, 1, wh, ww): a window's own weight map
    masks: list[torch.Tensor]  # per region (1, 1, h, w), weight included
    base: torch.Tensor  # (1, 1, h, w): the base prompt's share


def _falloff(n: int, wrap_whole: bool) -> np.ndarray:
    """1-D window weight: highest in the middle, low (never zero) at the edges."""
    if wrap_whole:
        return np.ones(n, np.float32)
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.maximum(4 * t * (1 - t), 0.02).astype(np.float32)


@dataclass
class Composer:
    """Fuses windowed, regional predictions; see the module docstring.

    ``images`` is the pipeline batch's image count, so a doubled batch is known to be guided.
    """

    panorama: Panorama | None
    native: int  # the model's native size in pixels
    wrap: str  # axes the canvas wraps around: "", "x", "y" or "xy"
    images: int
    scale: int = 8  # pixels per latent
    layout: Layout | None = None
    regions: list[Conditioning] = field(default_factory=list)
    calls: int = 0  # UNet calls made (a benchmark reports them)
    _plans: dict[tuple[int, int], _Plan] = field(default_factory=dict)

    def window_count(self, width: int, height: int) -> int:
        return len(self._plan(height // self.scale, width // self.scale, torch.device("cpu")).windows)

    def unet_wrap(self, width: int, height: int) -> str:
        """The axes on which the UNet's own padding should wrap: where one window spans a wrapping side."""
        if self.panorama is None:
            return self.wrap
        window, _ = self.panorama.layout(self.native, width, height)
        return "".join(a for a, side in (("x", width), ("y", height)) if a in self.wrap and window >= side)

    def _plan(self, h: int, w: int, device: torch.device) -> _Plan:
        key = (h, w)
        if key not in self._plans:
            self._plans[key] = self._make_plan(h, w, device)
        return self._plans[key]

    def _make_plan(self, h: int, w: int, device: torch.device) -> _Plan:
        if self.panorama is None:
            wh, ww, stride = h, w, max(h, w)
        else:
            window, stride_px = self.panorama.layout(self.native, w * self.scale, h * self.scale)
            wh = ww = window // self.scale
            wh, ww, stride = min(wh, h), min(ww, w), stride_px // self.scale
        wx, wy = "x" in self.wrap, "y" in self.wrap
        windows = []
        for y in starts(h, wh, stride, wy):
            for x in starts(w, ww, stride, wx):
                rows = torch.arange(y, y + wh, device=device) % h
                cols = torch.arange(x, x + ww, device=device) % w
                windows.append(Window(rows, cols, y, x))
        fy, fx = _falloff(wh, wh >= h), _falloff(ww, ww >= w)
        weight = torch.from_numpy(np.outer(fy, fx)).to(device)[None, None]
        masks = []
        for c in self.regions:
            assert self.layout is not None
            region = self.layout.regions[c.region]
            m = region.soft_mask(w, h) * region.weight
            masks.append(torch.from_numpy(m).to(device)[None, None])
        if masks:
            covered = torch.stack([m.clamp(max=1) for m in masks]).sum(0).clamp(max=1)
            assert self.layout is not None
            base = (1 - covered) + self.layout.base * covered
        else:
            base = torch.ones(1, 1, h, w, device=device)
        return _Plan(windows, weight, masks, base)

    def patched(self, unet: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Route ``unet``'s forward through :meth:`forward` while the block runs."""
        return wrapped_forward(unet, lambda original, *a, **k: self.forward(original, unet, *a, **k))

    def forward(self, original: Callable[..., Any], unet: nn.Module, sample: torch.Tensor, timestep: Any,
                encoder_hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        """The UNet's output for the whole canvas, fused from windows and prompts."""
        return_dict = kwargs.pop("return_dict", True)
        n, _, h, w = sample.shape
        plan = self._plan(h, w, sample.device)
        guided = n == 2 * self.images
        out_channels = int(getattr(unet.config, "out_channels", sample.shape[1]))
        total = torch.zeros(n, out_channels, h, w, device=sample.device, dtype=torch.float32)
        weights = torch.zeros(1, 1, h, w, device=sample.device, dtype=torch.float32)
        prompts: list[tuple[torch.Tensor, torch.Tensor]] = [(encoder_hidden_states, plan.base)]
        for c, mask in zip(self.regions, plan.masks, strict=True):
            hidden = c.hidden(n // 2 if guided else n, guided).to(sample.device, encoder_hidden_states.dtype)
            prompts.append((hidden, mask))
        size = self.panorama.batch if self.panorama is not None else 1
        for i in range(0, len(plan.windows), size):
            chunk = plan.windows[i : i + size]
            crops = torch.cat([sample[:, :, win.rows[:, None], win.cols[None, :]] for win in chunk])
            for hidden, mask in prompts:
                local = [mask[:, :, win.rows[:, None], win.cols[None, :]] * plan.weight for win in chunk]
                used = [j for j, m in enumerate(local) if float(m.max()) > 1e-4]
                if not used:
                    continue
                picked = crops if len(used) == len(chunk) else torch.cat([crops[j * n : (j + 1) * n] for j in used])
                k = len(used)
                pred = original(picked, _repeat(timestep, n, k), hidden.repeat(k, 1, 1), *args,
                                **_repeat_kwargs(kwargs, n, k), return_dict=False)[0]  # fmt: skip
                self.calls += 1
                for slot, j in enumerate(used):
                    win = chunk[j]
                    idx = (slice(None), slice(None), win.rows[:, None], win.cols[None, :])
                    total[idx] += pred[slot * n : (slot + 1) * n].float() * local[j]
                    weights[idx] += local[j]
        fused = (total / weights.clamp(min=1e-8)).to(sample.dtype)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=fused)
        return (fused,)


def _repeat(value: Any, n: int, k: int) -> Any:
    """A per-image tensor (first dimension ``n``) repeated for ``k`` windows; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n and k > 1:
        return value.repeat(k, *([1] * (value.ndim - 1)))
    return value


def _repeat_kwargs(kwargs: dict[str, Any], n: int, k: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, dict) and key != "cross_attention_kwargs":
            out[key] = {kk: _repeat(vv, n, k) for kk, vv in value.items()}
        else:
            out[key] = _repeat(value, n, k)
    return out
