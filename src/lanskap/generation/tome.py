"""Token merging (ToMe for SD, Bolya & Hoffman 2023) for the UNet's self-attention.

Self-attention at the highest resolution costs the square of the token count (96×96 latents at
768 px: 9216 tokens). Neighbouring tokens of a picture are often near duplicates, so ToMe merges
the most similar ``ratio`` of them before the attention and copies the result back after it.

The merging itself is ``tomesd.merge.bipartite_soft_matching_random2d`` (pure torch). tomesd's
own patch for diffusers can't be used: it replaces ``BasicTransformerBlock.forward`` with a copy
of the 2023 diffusers code (attributes that no longer exist, none of today's norm types or
feed-forward chunking), and it reads the latent size from a hook on the UNet's ``__call__``,
which the panorama composer bypasses. So the method is applied here as an attention processor
around ``attn1`` that wraps whatever processor is set (LoRA layers stay inside it), with the
latent size taken from ``conv_in`` on every UNet call.

As in AUTOMATIC1111 (its ``token_merging_ratio`` option): only self-attention is merged (not
cross-attention or the MLP), the destination tokens are the top-left of each 2×2 cell (no
randomness, so a seed makes the same picture), and only the levels up to ``max_downsample``
(1 = the highest resolution) are touched.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from tomesd.merge import bipartite_soft_matching_random2d
from torch import nn


class _State:
    """What every merging processor of one UNet shares during a call: the latent size, the metric."""

    def __init__(self, ratio: float, max_downsample: int) -> None:
        self.ratio, self.max_downsample = ratio, max_downsample
        self.size: tuple[int, int] = (0, 0)
        self.metric: dict[int, torch.Tensor] = {}  # per transformer block: its input, ToMe's similarity metric
        self.merged = 0  # attention calls that merged (a test counts them)

    def on_conv_in(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        self.size = (int(args[0].shape[2]), int(args[0].shape[3]))

    def grid(self, tokens: int) -> tuple[int, int] | None:
        """The token grid (h, w) of a level with ``tokens`` tokens, or None above max_downsample."""
        h0, w0 = self.size
        if not h0 or not tokens:
            return None
        down = math.ceil(math.sqrt(h0 * w0 // tokens))
        if down > self.max_downsample:
            return None
        h, w = math.ceil(h0 / down), math.ceil(w0 / down)
        return (h, w) if h * w == tokens else None


class MergedSelfAttention:
    """``attn1``'s processor: merge tokens, run the wrapped processor, unmerge."""

    def __init__(self, inner: Any, state: _State, block: int) -> None:
        self.inner, self.state, self.block = inner, state, block

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:  # fmt: skip
        grid = self.state.grid(hidden_states.shape[1]) if hidden_states.ndim == 3 else None
        if grid is None or encoder_hidden_states is not None or attention_mask is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        h, w = grid
        metric = self.state.metric.get(self.block, hidden_states)
        r = int(hidden_states.shape[1] * self.state.ratio)
        merge, unmerge = bipartite_soft_matching_random2d(metric, w, h, 2, 2, r, no_rand=True)
        self.state.merged += 1
        return unmerge(self.inner(attn, merge(hidden_states), None, None, *args, **kwargs))


@contextlib.contextmanager
def token_merging(unet: nn.Module, ratio: float, max_downsample: int = 1) -> Iterator[_State]:
    """Merge ``ratio`` of the tokens in the self-attention of ``unet``'s upper levels while the block runs."""
    from diffusers.models.attention import BasicTransformerBlock

    state = _State(ratio, max_downsample)
    model: Any = unet
    hooks = [model.conv_in.register_forward_pre_hook(state.on_conv_in)]
    swapped: list[tuple[Any, Any]] = []
    try:
        blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
        for i, block in enumerate(blocks):
            hooks.append(block.register_forward_pre_hook(_keep_metric(state, i), with_kwargs=True))
            attn = block.attn1
            swapped.append((attn, attn.processor))
            attn.set_processor(MergedSelfAttention(attn.processor, state, i))
        yield state
    finally:
        for hook in hooks:
            hook.remove()
        for attn, processor in swapped:
            attn.set_processor(processor)
        state.metric.clear()


def _keep_metric(state: _State, index: int) -> Any:
    """A transformer block's pre-hook: its input is ToMe's similarity metric (tomesd uses the same)."""

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs.get("hidden_states")
        if isinstance(x, torch.Tensor):
            state.metric[index] = x

    return hook
