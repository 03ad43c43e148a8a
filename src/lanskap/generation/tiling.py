"""Seamless tiling: A1111's ``tiling``, along x, y or both.

Every padded convolution of the UNet and the VAE pads circularly along the chosen axes (and with
zeros along the other), so the picture's right edge continues into its left edge and it repeats
without a seam. A1111 patches ``Conv2d._conv_forward`` the same way (its ``make_circular_asymm``);
diffusers has no option for it. The patch lives only for one generation, under the engine's lock,
and comes off again whatever happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lanskap.errors import LanskapError

AXES = ("", "x", "y", "xy")


def check(axes: str) -> str:
    if axes not in AXES:
        raise LanskapError(f"tiling must be x, y or xy (or empty for none), not {axes!r}")
    return axes


def _forward(conv: nn.Conv2d, axes: str) -> Any:
    ph, pw = conv.padding  # type: ignore[misc]

    def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = F.pad(x, (pw, pw, 0, 0), mode="circular" if "x" in axes else "constant")
        x = F.pad(x, (0, 0, ph, ph), mode="circular" if "y" in axes else "constant")
        return F.conv2d(x, weight, bias, conv.stride, 0, conv.dilation, conv.groups)

    return conv_forward


@contextlib.contextmanager
def tiled(modules: list[nn.Module | None], axes: str) -> Iterator[None]:
    """Make every zero-padded Conv2d in ``modules`` wrap around along ``axes`` while the block runs."""
    if not axes:
        yield
        return
    patched: list[nn.Conv2d] = []
    try:
        for module in modules:
            for conv in module.modules() if module is not None else ():
                padding = getattr(conv, "padding", None)
                wraps = isinstance(conv, nn.Conv2d) and isinstance(padding, tuple) and any(padding)
                if wraps and conv.padding_mode == "zeros":
                    conv._conv_forward = _forward(conv, axes)  # type: ignore[method-assign]
                    patched.append(conv)
        yield
    finally:
        for conv in patched:
            del conv._conv_forward  # back to the class's own method


def infotext(axes: str) -> dict[str, str]:
    """A1111 writes ``Tiling: True`` (both axes); one axis is lanskap's ``Tiling: x`` or ``y``."""
    if not axes:
        return {}
    return {"Tiling": "True" if axes == "xy" else axes}


def from_infotext(value: str | None) -> str:
    if value is None:
        return ""
    return {"true": "xy", "false": ""}.get(value.lower(), value.lower() if value.lower() in AXES else "")
