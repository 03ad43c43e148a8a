"""One optimizer step: the diffusion loss on each micro-batch, gradient accumulation, the update.

The loss is the one the base model was made for (v-prediction for SD 2.1 768),
with optional noise offset and min-SNR weighting. Every random draw (latent
sample, noise, timesteps) comes from the run's own generator, which checkpoints
save and resumes restore, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from lanskap.training.context import TrainRun
from lanskap.training.data import encode_captions
from lanskap.training.events import TrainEvent
from lanskap.training.loss import add_noise_offset, diffusion_loss, min_snr_weights, training_target


def _sample(run: TrainRun, params: torch.Tensor) -> torch.Tensor:
    """Scaled latents drawn from cached latent distributions, with the run's generator."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    return DiagonalGaussianDistribution(params).sample(run.generator) * run.nets.vae.config.scaling_factor


def _predict(run: TrainRun, latents: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, ...]:
    """Noise ``latents`` at random timesteps and run the UNet on them: (prediction, target, timesteps)."""
    nets, gen = run.nets, run.generator
    noise = torch.randn(latents.shape, generator=gen, device=latents.device, dtype=latents.dtype)
    noise = add_noise_offset(noise, run.cfg.noise_offset, gen)
    t = torch.randint(0, nets.timesteps_total, (latents.shape[0],), generator=gen, device=latents.device).long()
    noisy = nets.noise_scheduler.add_noise(latents, noise, t)
    cond = encode_captions(run, captions)
    target = training_target(nets.noise_scheduler, latents, noise, t, nets.prediction_type)
    return nets.unet(noisy, t, cond.hidden, **cond.unet_kwargs(noisy), return_dict=False)[0], target, t


def micro_loss(run: TrainRun, batch: dict[str, Any]) -> torch.Tensor:
    nets, cfg, idx = run.nets, run.cfg, batch["indices"]
    with torch.no_grad():
        if run.data.latent_cache:
            cache = run.data.latent_cache
            latents = _sample(run, torch.stack([cache[(i, f)] for i, f in zip(idx, batch["flipped"], strict=True)]))
        else:
            pixels = batch["pixels"].to(run.session.device, nets.vae.dtype)
            latents = nets.vae.encode(pixels).latent_dist.sample(run.generator) * nets.vae.config.scaling_factor
        latents = latents.to(run.session.weight_dtype)  # an SDXL VAE kept in fp32 hands fp32 latents
    pred, target, t = _predict(run, latents, [run.data.records[i].caption for i in idx])
    weights = min_snr_weights(nets.noise_scheduler, t, cfg.snr_gamma, nets.prediction_type) if cfg.snr_gamma else None
    loss = diffusion_loss(pred, target, weights)
    if run.data.prior_latents:
        loss = loss + cfg.prior_loss_weight * prior_loss(run, batch["k"], len(idx))
    return loss


def prior_loss(run: TrainRun, k: int, n: int) -> torch.Tensor:
    """DreamBooth's prior term: the plain loss on ``n`` class pictures (cycled through by micro-batch)."""
    cache = run.data.prior_latents
    with torch.no_grad():
        latents = _sample(run, torch.stack([cache[(k * n + j) % len(cache)] for j in range(n)]))
    pred, target, _ = _predict(run, latents, [str(run.cfg.class_prompt)] * n)
    return diffusion_loss(pred, target)


def optimizer_step(run: TrainRun, batches: Iterator[dict[str, Any]], seconds_since: float) -> dict[str, Any]:
    """Accumulate the gradients of one step's micro-batches, update, and log the step's row."""
    nets, accelerator, accum = run.nets, run.session.accelerator, run.cfg.gradient_accumulation_steps
    losses = []
    for a in range(accum):
        batch = next(batches)
        sync = contextlib.nullcontext() if a == accum - 1 else accelerator.no_sync(nets.unet)
        with sync:
            loss = micro_loss(run, batch)
            accelerator.backward(loss / accum)
        losses.append(loss.detach())
    if not run.method.trains_unet and accelerator.num_processes > 1:
        for p in nets.trainable:  # no DDP wrapper averages these: do it here
            if p.grad is not None:
                p.grad = accelerator.reduce(p.grad, reduction="mean")
    max_norm = run.cfg.max_grad_norm
    grad_norm = accelerator.clip_grad_norm_(nets.trainable, max_norm) if max_norm > 0 else None
    nets.optimizer.step()
    nets.lr_scheduler.step()
    nets.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.last_loss = float(accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item())
    row = {
        "step": run.step,
        "loss": run.last_loss,
        "lr": float(nets.lr_scheduler.get_last_lr()[0]),
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "epoch": run.data.stream.locate(run.step * accum - 1)[0],
        "seconds": round(time.perf_counter() - seconds_since, 4),
    }
    if run.session.main:
        run.metrics.append(row)
        accelerator.log({k: row[k] for k in ("loss", "lr", "grad_norm") if row[k] is not None}, step=run.step)
        run.session.emit(TrainEvent("step", step=run.step, total=run.cfg.max_train_steps, metrics=row))
    return row


def stop_agreed(run: TrainRun, wants_stop: bool) -> bool:
    """On several processes, every one stops when any one was asked to (they must save together)."""
    accelerator = run.session.accelerator
    if accelerator.num_processes == 1:
        return wants_stop
    flag = torch.tensor([1.0 if wants_stop else 0.0], device=run.session.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def train_mode(run: TrainRun) -> None:
    run.nets.unet.train()
    if run.method.trains_text_encoder:
        run.nets.text_encoder.train()
        if run.nets.text_encoder_2 is not None:
            run.nets.text_encoder_2.train()
