"""Pick the device and dtype a pipeline runs in.

``auto`` means: CUDA in fp16 (SD 2.1 then needs upcast attention, set by the
loader), Apple MPS in fp16, and fp32 on every CPU. bf16 on a CPU is opt-in (``--dtype bf16``):
where it is emulated it is far slower, and where it is native (AVX512-BF16, AMX) it still makes a
seed's pixels differ from an fp32 machine's, and its paths with LoRA and the prompt encoder are
not yet proven (a full test run on such a CPU met bf16/fp32 mismatches).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lanskap.errors import LanskapError, SettingError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEVICES = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return {v: k for k, v in DTYPES.items()}[self.dtype]


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """Turn user choices into a concrete device and dtype, or raise a LanskapError."""
    device = (device or "auto").lower()
    dtype = (dtype or "auto").lower()
    if device not in DEVICES:
        raise LanskapError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if dtype not in ("auto", *DTYPES):
        raise LanskapError(f"unknown dtype {dtype!r}; choose auto, fp32, fp16 or bf16")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise SettingError("the cuda device was asked for, but no CUDA GPU is available to torch", "device")
    elif device == "mps" and not mps_ok:
        raise SettingError("the mps device was asked for, but Apple MPS is not available", "device")
    if dtype == "auto":
        dtype = "fp16" if device in ("cuda", "mps") else "fp32"
    if device == "cpu" and dtype == "fp16":
        raise SettingError("fp16 is not supported on CPU; use fp32 or bf16", "dtype")
    return Placement(torch.device(device), DTYPES[dtype])
