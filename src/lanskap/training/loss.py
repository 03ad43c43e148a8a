"""The diffusion training objective, kept apart from the loop so it can be checked by hand.

SD 2.1 (768) is a v-prediction model: its UNet predicts v = α·ε − σ·x₀, so the
target must follow the scheduler's ``prediction_type``, and min-SNR-γ weighting
(Hang et al. 2023) divides by SNR + 1 for v instead of by SNR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from diffusers import DDPMScheduler


def snr(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at each timestep."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas / (1 - alphas)


def training_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def min_snr_weights(
    scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Per-sample loss weights min(SNR, γ)/SNR (ε) or min(SNR, γ)/(SNR + 1) (v)."""
    s = snr(scheduler, timesteps)
    clipped = torch.minimum(s, torch.full_like(s, gamma))
    return clipped / (s + 1) if prediction_type == "v_prediction" else clipped / s


def add_noise_offset(noise: torch.Tensor, offset: float, generator: torch.Generator | None) -> torch.Tensor:
    """Noise offset (Guttenberg 2023): a per-channel constant lets the model learn very dark and bright images.

    Draws nothing when off, so a run without it keeps its random stream.
    """
    if offset <= 0:
        return noise
    b, c = noise.shape[:2]
    coarse = torch.randn((b, c, 1, 1), generator=generator, device=noise.device, dtype=noise.dtype)
    return noise + offset * coarse  # broadcasts exactly (bilinear upsampling of it is off by an ulp in fp32)


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error in fp32, optionally weighted per sample."""
    if weights is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
    return (per_sample * weights).mean()
