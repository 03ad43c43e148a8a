"""Speed and memory levers for a loaded pipeline, decided once per model load.

Each lever is on by default only where ``benchmarks/generate.py`` showed that it pays and
that the image stays the same as in fp32 (``docs/performance.md`` has the numbers and the
thresholds); the others are options. The decisions are pure functions of the device, the
free memory and the options, so they can be tested without the hardware they are for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.config import CHOICES, SpeedOptions  # noqa: F401 - re-exported: callers import them from here

if TYPE_CHECKING:
    import torch

    from lanskap.models.device import Placement

#: GPUs with less free memory than this at load time (the 4-8 GB cards) get the low-memory mode.
LOW_MEMORY_BELOW_GIB = 9.0
#: The VAE decoder's peak, per output pixel: about six live activations of 128 channels at
#: full resolution (its last up block), which is where decoding a large image runs out.
VAE_BYTES_PER_PIXEL_PER_BYTE = 128 * 6


@dataclass
class SpeedPlan:
    """The levers in force for one loaded model, with the reason for each."""

    low_memory: bool = False
    offload: bool = False  # model CPU offload (CUDA only)
    channels_last: bool = False
    fuse_lora: bool = False
    compile: bool = False
    threads: int | None = None
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        on = [
            name
            for name, flag in (
                ("low-memory", self.low_memory),
                ("cpu-offload", self.offload),
                ("channels-last", self.channels_last),
                ("fused-lora", self.fuse_lora),
                ("compile", self.compile),
            )
            if flag
        ]
        threads = f", {self.threads} threads" if self.threads else ""
        return (", ".join(on) or "no extra levers") + threads


def free_memory_gib(device: torch.device) -> float | None:
    """Free memory where the model will live: the GPU's, or the system's available RAM."""
    import torch  # here, not at the top: settings are checked without loading torch

    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**30
    if device.type == "cpu":
        import psutil

        return psutil.virtual_memory().available / 2**30
    return None


def make_plan(placement: Placement, options: SpeedOptions, free_gib: float | None) -> SpeedPlan:
    """Decide the levers for ``placement`` with ``free_gib`` free memory (None = unknown)."""
    options.validate()
    cuda = placement.device.type == "cuda"
    plan = SpeedPlan(compile=options.compile, threads=options.threads)
    if options.low_memory == "on":
        plan.low_memory = True
        plan.reasons.append("low-memory mode: asked for")
    elif options.low_memory == "auto" and cuda and free_gib is not None and free_gib < LOW_MEMORY_BELOW_GIB:
        plan.low_memory = True
        plan.reasons.append(
            f"low-memory mode: only {free_gib:.1f} GiB free on the GPU (under {LOW_MEMORY_BELOW_GIB:g}); "
            "set low-memory mode off to disable"
        )
    plan.offload = plan.low_memory and cuda
    # channels_last: benchmarks/generate.py measured no gain on CPU (oneDNN reorders anyway); on
    # CUDA it is unmeasured so far, and a lever is on by default only once measured, so auto = off.
    plan.channels_last = options.channels_last == "on"
    # Fusing saves the LoRA's extra matmuls on every step and unfusing to switch costs a pass over
    # the weights; off by default until benchmarks/generate.py --lora shows it pays (GPU).
    plan.fuse_lora = options.fuse_lora == "on" and not plan.offload
    if options.fuse_lora == "on" and plan.offload:
        plan.reasons.append("LoRA fusing is skipped with CPU offload (the weights move every step)")
    if plan.compile and plan.offload:
        plan.compile = False
        plan.reasons.append("torch.compile is skipped with CPU offload (the hooks move modules every step)")
    return plan


def apply_plan(pipe: Any, plan: SpeedPlan, placement: Placement, cache_dir: Path | None = None) -> None:
    """Put the pipeline on its device with the planned levers."""
    import torch

    if plan.threads:
        torch.set_num_threads(plan.threads)
    if plan.offload:
        pipe.enable_model_cpu_offload(device=placement.device)
    else:
        pipe.to(placement.device)
    if plan.low_memory:
        pipe.enable_attention_slicing()
        pipe.vae.enable_tiling()
        pipe.vae.enable_slicing()
    if plan.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if plan.compile:
        if cache_dir is not None:  # compiled kernels are reused across runs
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "inductor"))
        # In place (nn.Module.compile), so the UNet keeps its class, config and LoRA layers.
        pipe.unet.compile(fullgraph=False, dynamic=False)


def configure_vae(pipe: Any, plan: SpeedPlan, width: int, height: int, batch: int, free: float | None) -> str | None:
    """Tile or slice the VAE decode only when this batch would not fit otherwise.

    Both change nothing when the image fits, but tiling blends tile seams and slicing
    serialises the batch, so they are off unless needed. ``free`` is in GiB (None: unknown).
    Returns a notice when either is turned on.
    """
    if plan.low_memory:
        return None  # already on for every image
    itemsize = next(pipe.vae.parameters()).element_size()
    per_image = width * height * VAE_BYTES_PER_PIXEL_PER_BYTE * itemsize / 2**30
    slicing = tiling = False
    if free is not None and per_image * batch > free / 2:
        slicing = batch > 1
        tiling = per_image > free / 2
    (pipe.vae.enable_slicing if slicing else pipe.vae.disable_slicing)()
    (pipe.vae.enable_tiling if tiling else pipe.vae.disable_tiling)()
    if tiling or slicing:
        what = " and ".join(w for w, on in (("tiled", tiling), ("one image at a time", slicing)) if on)
        return f"VAE decode {what}: {width}x{height} x{batch} needs about {per_image * batch:.1f} GiB"
    return None
