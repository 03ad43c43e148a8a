"""Hypernetworks applied to the UNet's attention, as A1111 applies them.

A1111 passes the attention's context through a hypernetwork's k network before ``to_k`` and its v
network before ``to_v`` (``apply_hypernetworks``), each ``x + linear(x) * strength``, for every
attention whose context width the hypernetwork has a pair for: the cross-attention (context: the
text, 1024 wide on SD 2.x) and, where the file has 320/640/1280 pairs, the self-attention too
(its context is the image features). Several hypernetworks chain, in the prompt's order.

diffusers has no hypernetwork support, so this is written here as an attention processor: it
wraps whatever processor the attention has (LoRA layers and token merging stay inside) and feeds
``to_k`` and ``to_v`` the transformed contexts through forward pre-hooks for that one call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lanskap.models.family import width_label
from lanskap.models.hypernetwork import Hypernetwork, HypernetworkError

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel


@dataclass(frozen=True)
class ActiveHypernet:
    net: Hypernetwork
    strength: float


def check_width(net: Hypernetwork, text_width: int, model_name: str) -> None:
    """Refuse a hypernetwork with no pair for this model's text width: made for another base."""
    if text_width not in net.layers:
        made = [w for w in net.widths if w in (768, 1024, 2048)]
        made_for = width_label(made[0]) if made else "another base"
        raise HypernetworkError(
            f"hypernetwork {net.name!r} was made for {made_for} (context widths {net.widths}); "
            f"{model_name!r} has {text_width}-wide text"
        )


class HypernetProcessor:
    """An attention processor that runs the wrapped one with the hypernetworks' k and v contexts."""

    def __init__(self, inner: Any, active: list[ActiveHypernet]) -> None:
        self.inner = inner
        self.active = active

    def _chain(self, width: int, which: int) -> list[torch.nn.Module]:
        return [a.net.layers[width][which] for a in self.active if width in a.net.layers]

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:  # fmt: skip
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        k_nets, v_nets = self._chain(context.shape[-1], 0), self._chain(context.shape[-1], 1)
        if not k_nets:
            return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)

        def through(nets: list[torch.nn.Module]) -> Any:
            def pre(_module: torch.nn.Module, inputs: tuple) -> tuple:
                x = inputs[0]
                for net in nets:
                    x = net(x)
                return (x, *inputs[1:])

            return pre

        handles = [attn.to_k.register_forward_pre_hook(through(k_nets)),
                   attn.to_v.register_forward_pre_hook(through(v_nets))]  # fmt: skip
        try:
            return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        finally:
            for h in handles:
                h.remove()


@contextlib.contextmanager
def applied(unet: UNet2DConditionModel, active: list[ActiveHypernet]) -> Iterator[None]:
    """The UNet with these hypernetworks on its attention for one pipeline call, then as it was."""
    if not active:
        yield
        return
    for a in active:
        for net in a.net.networks():
            net.strength = a.strength
            net.to(unet.device)
    before = dict(unet.attn_processors)
    unet.set_attn_processor({name: HypernetProcessor(p, active) for name, p in before.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(before)


def infotext(active: list[ActiveHypernet]) -> dict[str, str | None]:
    """A1111's keys: ``Hypernet`` (names), ``Hypernet hash`` and ``Hypernet strength``."""
    if not active:
        return {}
    strengths = [f"{a.strength:g}" for a in active]
    return {
        "Hypernet": ", ".join(a.net.name for a in active),
        "Hypernet hash": ", ".join(a.net.shorthash for a in active),
        "Hypernet strength": ", ".join(strengths),
    }
