"""RRDBNet (ESRGAN, Real-ESRGAN x4plus/x2plus, 4x-UltraSharp-style files) in plain torch.

Written by hand because spandrel, the usual loader for these files, requires torchvision, which
has no CPU build here and breaks transformers. The layers and their names follow Real-ESRGAN's
``RRDBNet`` (``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``, ``conv_upN``, ``conv_hr``,
``conv_last``); files in the original ESRGAN layout (``model.0``, ``model.1.sub.N.RDBK.convJ.0``,
...) are renamed to them on load. The scale, width, depth and pixel-unshuffle are read from the
state dict's shapes, so any file of this family loads without a config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lanskap.errors import CorruptFileError


class ResidualDenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


@dataclass(frozen=True)
class Shape:
    """What a state dict says about its network."""

    in_nc: int  # input channels after pixel-unshuffle (3, 12 or 48)
    out_nc: int
    nf: int
    gc: int
    nb: int
    ups: int  # 2x nearest-upsampling stages

    @property
    def unshuffle(self) -> int:
        return {3: 1, 12: 2, 48: 4}.get(self.in_nc, 1)

    @property
    def scale(self) -> int:
        return 2**self.ups // self.unshuffle


class RRDBNet(nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape
        self.conv_first = nn.Conv2d(shape.in_nc, shape.nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(shape.nf, shape.gc) for _ in range(shape.nb)))
        self.conv_body = nn.Conv2d(shape.nf, shape.nf, 3, 1, 1)
        for i in range(1, shape.ups + 1):
            setattr(self, f"conv_up{i}", nn.Conv2d(shape.nf, shape.nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(shape.nf, shape.nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(shape.nf, shape.out_nc, 3, 1, 1)

    @property
    def scale(self) -> int:
        return self.shape.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1], NCHW; the result is ``scale`` times larger, also in about [0, 1]."""
        r = self.shape.unshuffle
        if r > 1:
            x = F.pixel_unshuffle(x, r)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(1, self.shape.ups + 1):
            up = getattr(self, f"conv_up{i}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_CONV = re.compile(r"^model\.(\d+)\.(weight|bias)$")


def _from_old_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original ESRGAN names (``model.N`` sequential) → Real-ESRGAN's."""
    out: dict[str, torch.Tensor] = {}
    convs: dict[int, dict[str, torch.Tensor]] = {}
    body_end = None
    for key, value in sd.items():
        m = _OLD_RDB.match(key)
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        m = re.match(r"^model\.1\.sub\.(\d+)\.(weight|bias)$", key)
        if m:  # the trunk's closing conv: the shortcut block's last entry
            body_end = int(m[1])
            out[f"conv_body.{m[2]}"] = value
            continue
        m = _OLD_CONV.match(key)
        if m:
            convs.setdefault(int(m[1]), {})[m[2]] = value
            continue
        raise CorruptFileError(f"unexpected weight {key!r} for an ESRGAN model")
    if body_end is None or 0 not in convs or len(convs) < 3:
        raise CorruptFileError("not an ESRGAN (RRDBNet) model: its trunk or its last layers are missing")
    order = sorted(i for i in convs if i > 1)
    names = [f"conv_up{i}" for i in range(1, len(order) - 1)] + ["conv_hr", "conv_last"]
    for name, index in zip(["conv_first", *names], [0, *order], strict=True):
        for kind, value in convs[index].items():
            out[f"{name}.{kind}"] = value
    return out


def _shape(sd: dict[str, torch.Tensor]) -> Shape:
    try:
        first = sd["conv_first.weight"]
        nb = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
        gc = sd["body.0.rdb1.conv1.weight"].shape[0]
        ups = sum(1 for k in sd if re.fullmatch(r"conv_up\d+\.weight", k))
        return Shape(first.shape[1], sd["conv_last.weight"].shape[0], first.shape[0], gc, nb, ups)
    except (KeyError, ValueError, IndexError):
        raise CorruptFileError("not an ESRGAN (RRDBNet) model: its layers don't match the architecture") from None


def unwrap(state: object) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: Real-ESRGAN wraps them in ``params_ema`` or ``params``."""
    if isinstance(state, dict):
        for key in ("params_ema", "params", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptFileError("the file holds no plain tensors (not an upscaler's weights)")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def build(state: dict[str, torch.Tensor]) -> RRDBNet:
    """An RRDBNet with these weights, whichever of the two layouts they come in."""
    sd = _from_old_layout(state) if "model.0.weight" in state else dict(state)
    net = RRDBNet(_shape(sd))
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CorruptFileError(f"the weights don't fit an ESRGAN (RRDBNet) model: {first}") from None
    return net.eval().requires_grad_(False)


def old_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Real-ESRGAN names → the original ESRGAN layout (for tests: files as 4x-UltraSharp ships them)."""
    out: dict[str, torch.Tensor] = {}
    ups = sum(1 for k in state if re.fullmatch(r"conv_up\d+\.weight", k))
    index = {"conv_first": 0, "conv_hr": 3 * ups + 2, "conv_last": 3 * ups + 4}
    index |= {f"conv_up{i}": 3 * i for i in range(1, ups + 1)}
    nb = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    for key, value in state.items():
        m = re.match(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)$", key)
        if m:
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = value
        elif key.startswith("conv_body."):
            out[f"model.1.sub.{nb}.{key.split('.')[1]}"] = value
        else:
            name, kind = key.split(".")
            out[f"model.{index[name]}.{kind}"] = value
    return out
