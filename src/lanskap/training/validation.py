"""What a run measures while it trains: validation renders and the fixed-noise loss.

Validation images go through the same :class:`~lanskap.generation.engine.Engine` as
``lanskap generate``, around the model in memory, so they show what the LoRA does
when used. The fixed-noise loss uses the same few images, timesteps and noise at
every checkpoint: unlike the step loss, it isn't noisy, so a curve of it means something.
"""

from __future__ import annotations

import torch

from lanskap.io import atomic_write
from lanskap.training.context import TrainRun
from lanskap.training.data import EVAL_TIMESTEPS, encode_captions, text_encoders
from lanskap.training.events import TrainEvent
from lanskap.training.loss import diffusion_loss, training_target


def render_validation(run: TrainRun, at: int) -> None:
    """Render every validation prompt × seed at step ``at`` into the run's validation folder."""
    cfg, nets, session = run.cfg, run.nets, run.session
    if not session.main or not cfg.validation_prompt:
        return
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest

    on_gpu_again = cfg.cache_latents and session.on_cuda
    if on_gpu_again:
        nets.vae.to(session.device)
    encoders_back = bool(run.data.text_cache) and session.on_cuda  # cached captions: encoders wait on the CPU
    for encoder in text_encoders(nets) if encoders_back else []:
        encoder.to(session.device)
    if run.engine is None:
        run.engine = Engine.from_loaded(run.model, run.settings)
        run.engine.networks.extra = {e.name: e for e in run.method.embeddings()}  # the vectors in training
    folder = run.layout.validation_step(at)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = nets.raw_unet.training
    nets.raw_unet.eval()
    nets.raw_te.eval()
    shots = []
    try:
        for p, prompt in enumerate(cfg.validation_prompt):
            for seed in cfg.seeds:
                req = GenerationRequest(
                    run.method.caption(prompt) if run.method.embeddings() else prompt,
                    negative_prompt=cfg.validation_negative_prompt,
                    seed=seed,
                    steps=cfg.validation_inference_steps,
                    guidance=cfg.validation_guidance_scale,
                    width=run.resolution,
                    height=run.resolution,
                    watermark=False,
                )
                image = run.engine.generate(req).images[0]
                atomic_write(folder / f"p{p}-s{seed}.png", lambda fh, im=image: im.save(fh, format="PNG"))
                shots.append(image)
    finally:
        nets.raw_unet.train(was_training)
        nets.raw_te.train(run.method.trains_text_encoder and was_training)
        if on_gpu_again:
            nets.vae.to("cpu")
        for encoder in text_encoders(nets) if encoders_back else []:
            encoder.to("cpu")
    if run.tracker is not None and shots:
        import numpy as np

        run.tracker.add_images("validation", np.stack([np.asarray(im) for im in shots]), at, dataformats="NHWC")
    session.emit(TrainEvent("validation", step=at, total=cfg.max_train_steps, path=folder))


def evaluation_loss(run: TrainRun, at: int) -> None:
    """The loss on a few training images at fixed timesteps and noise, logged at step ``at``."""
    cfg, nets, session = run.cfg, run.nets, run.session
    if not session.main or not cfg.validation_loss:
        return
    gen = torch.Generator("cpu").manual_seed(cfg.seed + 12345)
    total_loss, n = 0.0, 0
    was_training = nets.raw_unet.training
    nets.raw_unet.eval()
    try:
        with torch.no_grad():
            for latents, caption in run.data.eval_views:
                cond = encode_captions(run, [caption]).to(session.weight_dtype)
                for k in range(EVAL_TIMESTEPS):
                    t = torch.tensor([int((k + 0.5) * nets.timesteps_total / EVAL_TIMESTEPS)], device=session.device)
                    noise = torch.randn(latents.shape, generator=gen).to(session.device, latents.dtype)
                    noisy = nets.noise_scheduler.add_noise(latents, noise, t)
                    noisy = noisy.to(session.weight_dtype)
                    pred = nets.raw_unet(noisy, t, cond.hidden, **cond.unet_kwargs(noisy), return_dict=False)[0]
                    target = training_target(nets.noise_scheduler, latents, noise, t, nets.prediction_type)
                    total_loss += float(diffusion_loss(pred, target))
                    n += 1
    finally:
        nets.raw_unet.train(was_training)
    value = total_loss / max(n, 1)
    run.metrics.append({"step": at, "eval_loss": value})
    session.accelerator.log({"eval_loss": value}, step=at)
    session.emit(TrainEvent("eval", step=at, total=cfg.max_train_steps, metrics={"eval_loss": value}))
