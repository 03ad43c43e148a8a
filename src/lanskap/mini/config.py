"""What decides lanskap-mini's weights: the settings of ``lanskap mini train``, without torch.

Kept apart from the trainer so the CLI can build its flags from these fields (and check them)
without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lanskap.errors import LanskapError
from lanskap.fields import setting
from lanskap.mini import model as arch

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MiniConfig:
    """Everything that decides the weights. The shipped model's card holds the ones that made it."""

    seed: int = setting(0, "Decides every weight (0: the shipped model).")
    scenes: int = setting(12000, "Procedural training scenes.")
    vae_steps: int = setting(2000, "VAE optimizer steps.")
    vae_batch: int = 8
    vae_crop: int = 64
    vae_lr: float = 1e-3
    vae_recolour: float = 0.5  # share of VAE crops repainted in random colours (see ``recolour``)
    decoder_steps: int = setting(300, "Decoder-only steps on whole scenes after encoding (0 skips; polish_decoder).")
    decoder_batch: int = 4
    decoder_lr: float = 3e-4
    steps: int = setting(2400, "UNet + text encoder optimizer steps.")
    batch: int = setting(32, "UNet batch size.")
    lr: float = setting(4e-4, "UNet + text encoder learning rate.", aliases=("--learning-rate",))
    warmup: int = 150
    ema: float = 0.999
    uncond: float = 0.1
    #: Min-SNR-γ loss weighting (Hang et al. 2023), off at 0: the plain v-prediction loss, SD 2.1's own,
    #: which the shipped weights use. For v-prediction min-SNR weighs a timestep min(SNR, γ)/(SNR + 1),
    #: about SNR itself (0.005-0.05) at the noisiest ones, where the prompt has to decide the sky; there
    #: the model then learns to read the sky from the seed's noise instead (docs/tutorial-mini.md).
    min_snr_gamma: float = setting(0.0, "Min-SNR-γ loss weighting, e.g. 5 (0: off, the plain v-prediction loss).")
    snapshot_every: int = setting(600, "Save the EMA weights every N steps, to watch quality during a run.")
    #: End after this many steps, keeping the schedule of ``steps`` (the result equals that snapshot).
    stop_after: int | None = setting(None, "End at step N on the steps schedule (= that step's snapshot).")
    #: UNet channels per level (32×32, 16×16, 8×8 latents); multiples of 16.
    unet_channels: tuple[int, int, int] = arch.UNET_CHANNELS
    #: A lanskap-mini folder (or "lanskap-mini", the shipped one) whose VAE to reuse instead of fitting one.
    vae_from: str | None = setting(
        None, "Reuse this lanskap-mini's VAE (a folder, or lanskap-mini) instead of fitting one."
    )
    #: "no" (fp32) or "bf16": autocast the UNet and text encoder's forward pass (fp32 master weights).
    #: Faster on CPUs with native bf16 (AVX512-BF16, AMX) and on recent GPUs; slower where it is emulated.
    mixed_precision: str = setting("no", "no (fp32) or bf16: faster on CPUs with native bf16 and on GPUs.")
    #: Where to train: auto (a CUDA GPU when torch sees one), cuda or cpu. Random draws stay on
    #: the CPU, so a GPU run sees the same batches, noise and timesteps as a CPU run.
    device: str = setting("auto", "auto (a CUDA GPU when there is one), cuda or cpu.")

    def validate(self) -> MiniConfig:
        if self.decoder_steps < 0:
            raise LanskapError(f"decoder_steps must be 0 or more, got {self.decoder_steps}")
        for name in ("scenes", "vae_steps", "vae_batch", "decoder_batch", "steps", "batch"):
            if getattr(self, name) < 1:
                raise LanskapError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vae_crop % 8 or not 16 <= self.vae_crop <= arch.SIZE:
            raise LanskapError(f"vae_crop must be a multiple of 8 between 16 and {arch.SIZE}")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.steps:
            raise LanskapError(f"stop_after must be between 1 and steps ({self.steps}), got {self.stop_after}")
        if not 0 <= self.vae_recolour <= 1:
            raise LanskapError(f"vae_recolour must be in [0, 1], got {self.vae_recolour}")
        if not 0 <= self.uncond < 1:
            raise LanskapError(f"uncond must be in [0, 1), got {self.uncond}")
        if not 0 <= self.min_snr_gamma <= 100:
            raise LanskapError(f"min_snr_gamma must be between 0 (off) and 100, got {self.min_snr_gamma}")
        if len(self.unet_channels) != 3 or any(c < 16 or c % 16 for c in self.unet_channels):
            raise LanskapError(f"unet_channels must be three multiples of 16, got {list(self.unet_channels)}")
        if self.mixed_precision not in ("no", "bf16"):
            raise LanskapError(f"mixed_precision must be no or bf16, got {self.mixed_precision!r}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise LanskapError(f"device must be auto, cuda or cpu, got {self.device!r}")
        return self

    def torch_device(self) -> torch.device:
        """Where to train; ``auto`` takes a CUDA GPU when there is one (never MPS, untried for training)."""
        import torch

        from lanskap.models.device import resolve_placement

        choice = self.device if self.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
        return resolve_placement(choice, "fp32").device

    def command(self) -> str:
        """The ``lanskap mini train`` line that makes these weights (options that differ from the defaults)."""
        parts = [f"lanskap mini train --seed {self.seed} --steps {self.steps} --scenes {self.scenes}"]
        default = MiniConfig()
        for name, flag in _WEIGHT_FLAGS:
            value = getattr(self, name)
            value = tuple(value) if isinstance(value, list) else value  # unet_channels read back from JSON
            if value == getattr(default, name):
                continue
            if isinstance(value, bool):
                parts.append(flag)  # an on/off switch: the flag alone
            else:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
                parts.append(f"{flag} {shown:g}" if isinstance(value, float) else f"{flag} {shown}")
        return " ".join(parts)


#: MiniConfig fields that change the weights, with their ``lanskap mini train`` option, in card order.
_WEIGHT_FLAGS = (
    ("vae_steps", "--vae-steps"),
    ("decoder_steps", "--decoder-steps"),
    ("batch", "--batch"),
    ("lr", "--learning-rate"),
    ("stop_after", "--stop-after"),
    ("unet_channels", "--unet-channels"),
    ("vae_from", "--vae-from"),
    ("min_snr_gamma", "--min-snr-gamma"),
    ("mixed_precision", "--mixed-precision"),
)
