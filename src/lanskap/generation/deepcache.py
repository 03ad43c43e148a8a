"""Feature caching (DeepCache, Ma et al. 2023): the UNet's deep blocks run every N steps only.

Adjacent denoising steps change the UNet's deep, low-resolution features very little. So on a
*full* step every block runs and each deep block's output is kept; on the steps in between
only the shallow path runs (the time embedding, ``conv_in``, the first down block, the last up
block and the output layers) and the deep blocks hand back what they made on the last full
step. The first and the last step are always full, so the composition is set and the last
details are drawn with the whole network.

Why not the ``deepcache`` package (0.1.1, 2023): it was evaluated against diffusers 0.42 and
can't be used as it is. It finds the step by looking the timestep up in
``scheduler.timesteps``, which is wrong for second-order samplers (they visit timesteps
twice); it keys its cache by block only, so the windows and region prompts of a panorama
(several UNet calls per step, ``generation/compose.py``) would read each other's features;
its state outlives a pipeline call; and it replaces ``unet.forward``, which the composer
also patches. Here the engine tells the cache when a step ends (its step callback), the cache
is keyed by the call's place within the step, and it lives for one pipeline call.

The deep blocks are ``down_blocks[1:]``, ``mid_block`` and ``up_blocks[:-1]``: DeepCache's
shallowest branch, which its paper measured as the best trade of speed for fidelity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


class FeatureCache:
    """One pipeline call's cache of deep-block outputs; see the module docstring."""

    def __init__(self, unet: nn.Module, interval: int, start: float = 0.0) -> None:
        if interval < 2:
            raise ValueError("a cache interval below 2 caches nothing")
        self.unet, self.interval = unet, interval
        # Unknown until the step callback says (after the first step, which is always full).
        self.steps = 1 << 30
        self.start = start  # the share of the steps run in full first, where the layout and colours settle
        self.step = 0  # the pipeline's step index
        self.call = -1  # the UNet call within this step (a panorama makes several)
        self.full = True
        self.store: dict[tuple[int, int], Any] = {}
        self.shapes: dict[int, torch.Size] = {}  # each call's input shape on the last full step
        self.full_calls = self.cached_calls = 0

    def is_full(self, step: int) -> bool:
        """Whether ``step`` runs every block: those before ``start``, then every interval-th, and the last."""
        if step < self.start * self.steps:
            return True
        first = int(self.start * self.steps + 0.999999)
        return (step - first) % self.interval == 0 or step >= self.steps - 1

    def next_step(self, steps: int | None = None) -> None:
        """The engine's step callback says a step ended (and, once known, how many there are)."""
        self.step += 1
        self.call = -1
        if steps:
            self.steps = steps

    def _begin_call(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        """``conv_in``'s pre-hook: the start of one UNet call (the composer calls forward directly)."""
        self.call += 1
        shape = args[0].shape
        # A call the last full step didn't make, or made with another shape, runs in full.
        self.full = self.is_full(self.step) or self.shapes.get(self.call) != shape
        if self.full:
            self.shapes[self.call] = shape
            self.full_calls += 1
        else:
            self.cached_calls += 1

    def _block(self, index: int, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        key = (self.call, index)
        if self.full or key not in self.store:
            out = original(*args, **kwargs)
            self.store[key] = out
            return out
        return self.store[key]

    def deep_blocks(self) -> list[nn.Module]:
        unet: Any = self.unet
        blocks = [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]
        return [b for b in blocks if b is not None]

    @contextlib.contextmanager
    def attached(self) -> Iterator[FeatureCache]:
        """Route the deep blocks through the cache while the block runs; restore them after."""
        unet: Any = self.unet
        hook = unet.conv_in.register_forward_pre_hook(self._begin_call)
        patched = []
        try:
            for index, block in enumerate(self.deep_blocks()):
                had = "forward" in block.__dict__
                original = block.forward
                block.forward = _router(self, index, original)
                patched.append((block, had, original))
            yield self
        finally:
            hook.remove()
            for block, had, original in patched:
                if had:
                    block.forward = original
                else:
                    del block.forward
            self.store.clear()


def _router(cache: FeatureCache, index: int, original: Callable[..., Any]) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return cache._block(index, original, *args, **kwargs)

    return forward
