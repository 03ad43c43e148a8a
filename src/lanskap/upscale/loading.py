"""ESRGAN-family upscaler files: loaded safely, run tile by tile.

A ``.safetensors`` file is checked and read without code; a ``.pth``/``.pt`` file is read with
torch's weights-only unpickler, which refuses anything but tensors and plain containers, so a
file that needs real pickling is refused with one line rather than run.
"""

from __future__ import annotations

import pickle
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from lanskap.errors import CancelledError, CorruptFileError, UnsafeFileError
from lanskap.upscale.rrdbnet import RRDBNet, build, unwrap
from lanskap.upscale.tiles import Blender, grid

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.models.device import Placement
    from lanskap.upscale.upscalers import Tick


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in an upscaler file, without running any code from it."""
    from lanskap.models.safety import read_safetensors_header, sniff

    kind = sniff(path)
    if path.suffix.lower() == ".safetensors" or kind == "safetensors":
        from safetensors.torch import load_file

        read_safetensors_header(path)
        try:
            return load_file(str(path))
        except Exception as exc:  # the header was sound; the data is not
            raise CorruptFileError(f"{path.name} is corrupt: {str(exc).splitlines()[0][:120]}") from None
    if kind not in ("zip", "pickle"):
        raise CorruptFileError(f"{path.name} is neither a safetensors file nor a torch .pth file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4": the weights-only unpickler reads it
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafeFileError(
            f"{path.name} holds more than weights (it needs full unpickling, which can run code); "
            "convert it to .safetensors",
        ) from None
    except Exception as exc:
        raise CorruptFileError(f"{path.name} is corrupt or truncated: {str(exc).splitlines()[0][:120]}") from None
    return unwrap(state)


def load_esrgan(path: Path, settings: Settings, placement: Placement) -> RRDBNet:
    """An RRDBNet from ``path`` on the engine's device (fp16 on a GPU, fp32 on the CPU)."""
    net = build(unwrap(read_weights(Path(path))))
    dtype = placement.dtype if placement.device.type == "cuda" else torch.float32
    return net.to(placement.device, dtype)


def _to_tensor(image: Image.Image, net: RRDBNet) -> torch.Tensor:
    p = next(net.parameters())
    arr = np.asarray(image.convert("RGB"), np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(p.device, p.dtype)


def _to_image(t: torch.Tensor) -> Image.Image:
    arr = t[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.rint(arr * 255).astype(np.uint8), "RGB")


def run_tiled(
    net: RRDBNet,
    image: Image.Image,
    placement: Placement,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    tick: Tick | None = None,
    cancel: threading.Event | None = None,
) -> Image.Image:
    """``image`` enlarged by the net's scale, one tile at a time, the tiles blended (memory: one tile)."""
    from lanskap.upscale.upscalers import ESRGAN_OVERLAP, ESRGAN_TILE

    tile, overlap = tile or ESRGAN_TILE, overlap if overlap is not None else ESRGAN_OVERLAP
    scale = net.scale
    step = net.shape.unshuffle  # pixel-unshuffle needs sides divisible by it
    w, h = image.size
    pad_w, pad_h = (-w) % step, (-h) % step
    if pad_w or pad_h:  # edge-extend to a multiple, crop after
        arr = np.pad(np.asarray(image.convert("RGB")), ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        image = Image.fromarray(arr, "RGB")
    tile = max(step, tile // step * step)
    boxes = grid(image.width, image.height, tile, tile, overlap)
    out_boxes = [b.scaled(scale) for b in boxes]
    blender = Blender(image.width * scale, image.height * scale, out_boxes)
    with torch.inference_mode():
        for n, (box, out_box) in enumerate(zip(boxes, out_boxes, strict=True), 1):
            if cancel is not None and cancel.is_set():
                raise CancelledError("upscaling interrupted")
            blender.add(out_box, _to_image(net(_to_tensor(box.crop(image), net))))
            if tick is not None:
                tick(n, len(boxes), f"tile {n} of {len(boxes)}")
    result = blender.image()
    return result.crop((0, 0, w * scale, h * scale)) if pad_w or pad_h else result
