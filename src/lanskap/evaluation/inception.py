"""The FID Inception-v3 network (pool3, 2048-d), written in plain torch.

pytorch-fid builds it on torchvision, which can't be installed here (its CUDA
build breaks transformers and there is no CPU build), so the architecture is
written out with torchvision's module names: the standard
``pt_inception-2015-12-05`` state dict loads into it unchanged. It includes
pytorch-fid's FID-specific blocks (average pools that exclude padding, a max
pool in the last block). ``width`` < 1 builds the tiny test variant.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lanskap.errors import LanskapError, SettingError


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool: int, c: callable) -> None:  # type: ignore[valid-type]
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, c(64), kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, c(48), kernel_size=1)
        self.branch5x5_2 = BasicConv2d(c(48), c(64), kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, c(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(c(64), c(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(c(96), c(96), kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, c(pool), kernel_size=1)
        self.out_channels = c(64) + c(64) + c(96) + c(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    def __init__(self, cin: int, c: callable) -> None:  # type: ignore[valid-type]
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, c(384), kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, c(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(c(64), c(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(c(96), c(96), kernel_size=3, stride=2)
        self.out_channels = c(384) + c(96) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int, c: callable) -> None:  # type: ignore[valid-type]
        super().__init__()
        c7 = c(c7)
        self.branch1x1 = BasicConv2d(cin, c(192), kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, c(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, c(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, c(192), kernel_size=1)
        self.out_channels = 4 * c(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int, c: callable) -> None:  # type: ignore[valid-type]
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, c(192), kernel_size=1)
        self.branch3x3_2 = BasicConv2d(c(192), c(320), kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, c(192), kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(c(192), c(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(c(192), c(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(c(192), c(192), kernel_size=3, stride=2)
        self.out_channels = c(320) + c(192) + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """pytorch-fid's FIDInceptionE_1 (avg pool, padding excluded) or _2 (max pool)."""

    def __init__(self, cin: int, c: callable, max_pool: bool) -> None:  # type: ignore[valid-type]
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, c(320), kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, c(384), kernel_size=1)
        self.branch3x3_2a = BasicConv2d(c(384), c(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(c(384), c(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, c(448), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(c(448), c(384), kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(c(384), c(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(c(384), c(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, c(192), kernel_size=1)
        self.out_channels = c(320) + 4 * c(384) + c(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(b3),
                self.branch3x3_2b(b3),
                self.branch3x3dbl_3a(d),
                self.branch3x3dbl_3b(d),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """Inception-v3 up to pool3; ``forward`` takes RGB in [0, 1] and returns (N, features)."""

    def __init__(self, width: float = 1.0, num_classes: int = 1008) -> None:
        super().__init__()
        self.width = width

        def c(n: int) -> int:
            return max(2, round(n * width))

        self.Conv2d_1a_3x3 = BasicConv2d(3, c(32), kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(c(32), c(32), kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(c(32), c(64), kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(c(64), c(80), kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(c(80), c(192), kernel_size=3)
        self.Mixed_5b = InceptionA(c(192), 32, c)
        self.Mixed_5c = InceptionA(self.Mixed_5b.out_channels, 64, c)
        self.Mixed_5d = InceptionA(self.Mixed_5c.out_channels, 64, c)
        self.Mixed_6a = InceptionB(self.Mixed_5d.out_channels, c)
        self.Mixed_6b = InceptionC(self.Mixed_6a.out_channels, 128, c)
        self.Mixed_6c = InceptionC(self.Mixed_6b.out_channels, 160, c)
        self.Mixed_6d = InceptionC(self.Mixed_6c.out_channels, 160, c)
        self.Mixed_6e = InceptionC(self.Mixed_6d.out_channels, 192, c)
        self.Mixed_7a = InceptionD(self.Mixed_6e.out_channels, c)
        self.Mixed_7b = InceptionE(self.Mixed_7a.out_channels, c, max_pool=False)
        self.Mixed_7c = InceptionE(self.Mixed_7b.out_channels, c, max_pool=True)
        self.features = self.Mixed_7c.out_channels
        self.fc = nn.Linear(self.features, num_classes)  # unused for FID; kept so the weights load

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # pytorch-fid's normalisation
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def save_inception(model: FIDInceptionV3, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(
            {"architecture": "FIDInceptionV3", "width": model.width, "num_classes": model.fc.out_features}, indent=2
        )
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


def _from_hub(ref: Path | str) -> Path:
    """A local path as is; ``owner/name`` that isn't a local path is looked up in the HF cache/hub."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    from lanskap.models.resolve import HUB_ID

    if HUB_ID.match(str(ref)):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(str(ref)))
        except Exception:  # offline, missing repo: one message below
            raise SettingError(
                f"Inception model {ref!r} is not available offline: run `hf download {ref}` on a connected "
                "machine, or give a local file as the Inception model",
                "inception_model",
            ) from None
    return path


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    """A tensors-only ``torch.load`` (the pickle opt-in is checked before); an unreadable file is one line."""
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise LanskapError(f"{path.name} is not FID Inception-v3 weights: torch could not read it ({reason})") from None


def load_inception(path: Path | str, *, allow_pickle: bool = False) -> FIDInceptionV3:
    """Load from a lanskap folder (config + safetensors) or pytorch-fid's ``.pth`` (pickle opt-in)."""
    from lanskap.models.safety import check_allowed, read_safetensors_header, sniff

    path = _from_hub(path)
    if path.is_dir():
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise LanskapError(f"{path} is not an Inception model folder (config.json + model.safetensors)")
        cfg = json.loads((path / "config.json").read_text())
        weights = path / "model.safetensors"
        read_safetensors_header(weights)
        from safetensors.torch import load_file

        model = FIDInceptionV3(width=cfg.get("width", 1.0), num_classes=cfg.get("num_classes", 1008))
        state = load_file(str(weights))
    elif path.is_file():
        check_allowed(path, allow_pickle)  # by name and by content: a renamed pickle is still one
        if path.suffix == ".safetensors" or sniff(path) == "safetensors":
            from safetensors.torch import load_file

            read_safetensors_header(path)
            state = load_file(str(path))
        else:
            state = _torch_load(path)
        if not isinstance(state, dict) or "fc.weight" not in state or "Conv2d_1a_3x3.conv.weight" not in state:
            raise LanskapError(f"{path.name} is not FID Inception-v3 weights (no fc/Conv2d_1a_3x3 tensors)")
        width = state["Conv2d_1a_3x3.conv.weight"].shape[0] / 32  # 1.0 for the real weights
        model = FIDInceptionV3(width=width, num_classes=int(state["fc.weight"].shape[0]))
    else:
        raise SettingError(
            f"Inception weights not found: {path}; give the FID weights (pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth, with pickle files allowed, or a converted .safetensors) "
            "as the Inception model",
            "inception_model",
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.endswith("num_batches_tracked")]:
        raise LanskapError(f"{path.name} is not FID Inception-v3 weights ({len(missing)} missing tensors)")
    return model.eval()


def inception_features(
    model: FIDInceptionV3,
    paths: list[Path],
    *,
    device: str = "cpu",
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Pool3 features of every file, as pytorch-fid reads them: RGB, [0, 1], no resize before the net.

    Consecutive pictures of one size share a batch (the net resizes to 299 itself), so
    mixed sizes work and no image is dropped.
    """
    from lanskap.images import load_rgb

    model = model.to(device)
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            with torch.no_grad():
                x = torch.from_numpy(np.stack(batch)).to(device)
                out.append(model(x).double().cpu().numpy())
            batch.clear()

    for i, p in enumerate(paths):
        arr = np.asarray(load_rgb(p), np.float32).transpose(2, 0, 1) / 255.0
        if batch and (arr.shape != batch[0].shape or len(batch) >= batch_size):
            flush()
        batch.append(arr)
        if progress and (i + 1) % batch_size == 0:
            progress(i + 1, len(paths))
    flush()
    if progress:
        progress(len(paths), len(paths))
    return np.concatenate(out)


def weights_hash(path: Path) -> str:
    """Short SHA-256 of the weights file, for the report."""
    from lanskap.models.hashing import sha256_file

    path = Path(path)
    return sha256_file(path / "model.safetensors" if path.is_dir() else path)[:10]


def import_inception(src: Path, out: Path, *, allow_pickle: bool = False) -> Path:
    """Convert pytorch-fid's ``.pth`` once into a safetensors folder, so later runs need no pickle.

    The file is read with ``weights_only=True`` (tensors only, no code) and checked by loading
    it into the network; the folder appears only when complete.
    """
    import os
    import shutil

    out = Path(out)
    if out.exists():
        raise LanskapError(f"{out} already exists; choose a new folder")
    model = load_inception(src, allow_pickle=allow_pickle)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_inception(model, tmp)
    os.replace(tmp, out)
    return out
