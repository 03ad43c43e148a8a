"""The LoRA training loop for SD 2.1 (and any SD 1.x/2.x diffusers model), on accelerate.

One function, :func:`train`, serves the CLI, the web app and the API. It checks
everything it can before loading a model, trains with the objective the base
model was made for (v-prediction for SD 2.1 768), saves whole-state checkpoints
that resume exactly, renders validation images through the same engine as
``lanskap generate``, and finishes with a diffusers LoRA, a kohya/A1111 export, a
loss curve and a grid of validation images. Run it under ``accelerate launch`` for
several GPUs or machines: every process takes its share of the batches.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from lanskap import joblog
from lanskap.config import Settings, load_settings
from lanskap.data.augment import Augment, center_crop, hflip, resize_cover
from lanskap.errors import LanskapError
from lanskap.images import load_rgb
from lanskap.io import atomic_write, atomic_write_text
from lanskap.training import checkpoint as ckpt
from lanskap.training.adapters import (
    DIFFUSERS_FILE,
    attach_lora,
    kohya_metadata,
    load_peft_state,
    lora_parameters,
    peft_state,
    save_diffusers,
    save_kohya,
    to_kohya,
)
from lanskap.training.batches import CachedMicroBatches, CaptionTokens, MicroBatches, Stream, to_tensor
from lanskap.training.buckets import plan as make_plan
from lanskap.training.config import TrainConfig, config_yaml
from lanskap.training.loss import add_noise_offset, diffusion_loss, min_snr_weights, training_target
from lanskap.training.monitor import MetricsLog, plot_loss, validation_grid
from lanskap.training.sources import TrainingSet, load_training_set

CONFIG_FILE = "train_config.yaml"
LOSS_PNG = "loss.png"
GRID_PNG = "validation_grid.png"
#: Settings that decide which picture, noise and step come next; a resume must keep them.
EVAL_IMAGES, EVAL_TIMESTEPS = 4, 5
ORDER_KEYS = ("seed", "train_batch_size", "gradient_accumulation_steps", "resolution", "bucketing", "bucket_step")


@dataclass
class TrainEvent:
    """Something a front end may show: a notice, caching progress, a finished step, a checkpoint."""

    kind: str  # notice | cache | step | eval | checkpoint | validation
    step: int = 0
    total: int = 0
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


EventFn = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    out: Path
    steps: int
    interrupted: bool
    lora: Path | None
    kohya: Path | None
    checkpoint: Path | None
    final_loss: float | None
    loss_curve: Path | None
    validation_grid: Path | None
    config: TrainConfig
    notices: list[str] = field(default_factory=list)
    main_process: bool = True  # False on the other ranks of an ``accelerate launch`` run


def resolve_precision(requested: str, on_cuda: bool) -> tuple[str, str | None]:
    """accelerate's mixed_precision for this device, and a notice when the request can't be met."""
    if requested == "auto":
        if on_cuda:
            return ("bf16" if torch.cuda.is_bf16_supported() else "fp16"), None
        return "no", None
    if requested == "fp16" and not on_cuda:
        return "no", "fp16 mixed precision needs a CUDA GPU; training in fp32 (try --mixed-precision bf16 on CPU)"
    return requested, None


def _has_run(out: Path) -> bool:
    return bool(ckpt.list_checkpoints(out)) or (out / DIFFUSERS_FILE).is_file()


def _identity(x: Any) -> Any:
    return x


class _Stop:
    """Set by Ctrl-C/SIGTERM or a cancel event; the loop saves a checkpoint at the next step boundary."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel
        self.requested = False

    @property
    def now(self) -> bool:
        return self.requested or bool(self.cancel and self.cancel.is_set())

    @contextlib.contextmanager
    def signals(self, say: Callable[[str], None]) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            say("stopping: a checkpoint is saved after this step (press Ctrl-C again to quit without one)")

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _choose_optimizer(name: str, on_cuda: bool) -> str:
    have_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if name == "auto":
        return "adamw8bit" if (on_cuda and have_bnb) else "adamw"
    if name == "adamw8bit" and not (on_cuda and have_bnb):
        raise LanskapError("--optimizer adamw8bit needs a CUDA GPU and the bitsandbytes package")
    return name


def _check_resume(state: dict[str, Any], eff: TrainConfig, tset: TrainingSet, model_hash: str, procs: int) -> None:
    name = f"checkpoint-{state['step']}"
    if state.get("model_hash") != model_hash:
        raise LanskapError(f"{name} was trained on another base model ({state.get('model')}); resume with that model")
    if state.get("lora") != eff.lora_settings():
        raise LanskapError(f"{name} has other LoRA settings ({state.get('lora')}); resume with the same ones")
    if state.get("fingerprint") != tset.fingerprint:
        raise LanskapError(f"the training data changed since {name} (files or captions); resume needs the same data")
    saved = state.get("config", {})
    for key in ORDER_KEYS:
        if saved.get(key) != getattr(eff, key):
            raise LanskapError(f"--{key.replace('_', '-')} differs from {name}'s ({saved.get(key)}); keep it to resume")
    if state.get("num_processes", 1) != procs:
        raise LanskapError(f"{name} was saved by {state.get('num_processes')} process(es); resume with as many")


def train(
    cfg: TrainConfig,
    settings: Settings | None = None,
    *,
    events: EventFn | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train a LoRA as ``cfg`` says; returns where everything was written."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    cfg.check()
    settings = settings or load_settings()
    out = Path(cfg.out).expanduser()
    tset = load_training_set(cfg.data, cfg.image_column, cfg.caption_column)
    resume_dir = ckpt.find_checkpoint(out, cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
    if resume_dir is None and _has_run(out):
        raise LanskapError(f"{out} already holds a training run; pass --resume latest to continue it, or another --out")

    on_cuda = settings.device != "cpu" and torch.cuda.is_available()
    mixed, precision_note = resolve_precision(cfg.mixed_precision, on_cuda)
    accelerator = Accelerator(
        mixed_precision=mixed,
        cpu=not on_cuda,
        log_with="tensorboard" if cfg.report_to == "tensorboard" else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    main = accelerator.is_main_process
    notices: list[str] = []

    def say(message: str, kind: str = "notice") -> None:
        if main:
            notices.append(message)
            if events:
                events(TrainEvent(kind, message=message))

    if precision_note:
        say(precision_note)
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed]

    from lanskap.models.device import Placement
    from lanskap.models.loader import load_model

    model = load_model(
        cfg.model or settings.model,
        Placement(accelerator.device, weight_dtype),
        settings,
        prediction_type=cfg.prediction_type,
    )
    for n in model.notices:
        say(n)
    optimizer_name = _choose_optimizer(cfg.optimizer, on_cuda)
    eff = replace(
        cfg,
        model=cfg.model or settings.model,
        resolution=cfg.resolution or model.native_size,
        mixed_precision=mixed,
        optimizer=optimizer_name,
        prediction_type=model.prediction_type,
        resume_from_checkpoint=None,
    )
    resolution = int(eff.resolution)  # type: ignore[arg-type]
    state: dict[str, Any] = {}
    if resume_dir is not None:
        state = ckpt.read_state(resume_dir)
        _check_resume(state, eff, tset, model.hash, accelerator.num_processes)

    pipe = model.pipe
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    set_seed(cfg.seed)  # the LoRA's initial A matrices
    attach_lora(unet, text_encoder if cfg.train_text_encoder else None, eff)
    if mixed != "no":
        from diffusers.training_utils import cast_training_params

        cast_training_params([unet, text_encoder] if cfg.train_text_encoder else [unet], dtype=torch.float32)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    if on_cuda and cfg.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    say(f"attention: {', '.join(sorted(processors))}; prediction type {model.prediction_type}; precision {mixed}")

    groups = [{"params": lora_parameters(unet), "lr": cfg.learning_rate}]
    if cfg.train_text_encoder:
        groups.append({"params": lora_parameters(text_encoder), "lr": cfg.text_encoder_lr or cfg.learning_rate})
    trainable = [p for g in groups for p in g["params"]]
    adam = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
    if optimizer_name == "adamw8bit":
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(groups, **adam)
    else:
        optimizer = torch.optim.AdamW(groups, **adam)
    from diffusers.optimization import get_scheduler

    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=cfg.lr_warmup_steps,
        num_training_steps=cfg.max_train_steps,
        num_cycles=cfg.lr_num_cycles,
        power=cfg.lr_power,
    )
    if cfg.train_text_encoder:
        unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    else:
        unet, optimizer = accelerator.prepare(unet, optimizer)
    raw_unet = accelerator.unwrap_model(unet)
    raw_te = accelerator.unwrap_model(text_encoder)

    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type=model.prediction_type)
    prediction_type = noise_scheduler.config.prediction_type
    timesteps_total = int(noise_scheduler.config.num_train_timesteps)

    records = tset.records
    plan, buckets = make_plan(
        [(r.width, r.height) for r in records], resolution, bucketing=cfg.bucketing, step=cfg.bucket_step
    )
    stream = Stream(plan, cfg.train_batch_size, cfg.seed, accelerator.process_index, accelerator.num_processes)
    aug = Augment(
        resolution,
        random_crop=not cfg.center_crop,
        crop_scale=(cfg.crop_scale, 1.0),
        flip=cfg.random_flip,
        jitter=cfg.color_jitter,
    )
    per_step = accelerator.num_processes * cfg.train_batch_size * cfg.gradient_accumulation_steps
    tokens = CaptionTokens(tokenizer, cfg.max_token_length)
    cut = sum(tokens.truncated(r.caption) for r in records)
    say(
        f"{len(records)} training images ({tset.kind}); {len(buckets)} bucket(s): "
        + ", ".join(f"{w}x{h}" for w, h in buckets[:6])
        + (" …" if len(buckets) > 6 else "")
        + f"; {stream.batches_per_epoch} batches per epoch"
        + (
            f"; {accelerator.num_processes} processes, {per_step} images per step"
            if accelerator.num_processes > 1
            else ""
        )
    )
    if cut:
        say(f"{cut} caption(s) are longer than {cfg.max_token_length} tokens and are cut; see --max-token-length")

    device = accelerator.device
    latent_cache: dict[tuple[int, bool], torch.Tensor] = {}
    text_cache: dict[str, torch.Tensor] = {}
    if cfg.cache_latents:
        variants = (False, True) if cfg.random_flip else (False,)
        with torch.no_grad():
            for i, rec in enumerate(records):
                w, h = plan.sizes[i]
                view = center_crop(resize_cover(load_rgb(rec.path), w, h), (w, h))
                pixels = torch.stack([to_tensor(hflip(view) if f else view) for f in variants])
                params = vae.encode(pixels.to(device, weight_dtype)).latent_dist.parameters
                for f, p in zip(variants, params, strict=True):
                    latent_cache[(i, f)] = p
                if events and main:
                    events(TrainEvent("cache", step=i + 1, total=len(records), message="caching latents"))
    if cfg.cache_text_embeddings:
        with torch.no_grad():
            for cap in sorted({r.caption for r in records}):
                z = _encode(text_encoder, tokens.batch([cap]).to(device), 1)
                text_cache[cap] = z[0]

    generator = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * accelerator.process_index)
    metrics = MetricsLog(out)
    step = 0
    if resume_dir is not None:
        step = int(state["step"])
        from safetensors.torch import load_file

        load_peft_state(raw_unet, load_file(str(resume_dir / "unet_lora.safetensors")))
        if cfg.train_text_encoder:
            load_peft_state(raw_te, load_file(str(resume_dir / "text_encoder_lora.safetensors")))
        optimizer.load_state_dict(ckpt.load_structured(resume_dir, "optimizer"))
        lr_scheduler.load_state_dict(ckpt.load_structured(resume_dir, "scheduler"))
        if accelerator.scaler is not None and (resume_dir / "scaler.json").is_file():
            accelerator.scaler.load_state_dict(ckpt.load_structured(resume_dir, "scaler"))
        ckpt.set_rng_state(ckpt.load_structured(resume_dir, f"rng-{accelerator.process_index}"), generator)
        if main:
            metrics.truncate(step)
        say(f"resuming from {resume_dir.name} (step {step} of {cfg.max_train_steps})")
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        metrics.truncate(0)
    if main:
        atomic_write_text(out / CONFIG_FILE, config_yaml(eff))
        ckpt.clear_stale(out)
    tracker = None
    if cfg.report_to == "tensorboard":
        flat = {k: v for k, v in eff.to_dict().items() if isinstance(v, int | float | str | bool)}
        accelerator.init_trackers("lanskap-lora", config=flat)
        tracker = accelerator.get_tracker("tensorboard", unwrap=True) if main else None

    started = time.time()
    joblog.reset_peak(accelerator.device)
    validation_dir = out / "validation"

    def lora_states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        return peft_state(raw_unet), (peft_state(raw_te) if cfg.train_text_encoder else None)

    engines: list[Any] = []  # one engine around the in-memory model, made at the first validation

    def validate(at: int) -> None:
        if not main or not cfg.validation_prompt:
            return
        from lanskap.generation.engine import Engine
        from lanskap.generation.params import GenerationRequest

        if cfg.cache_latents and on_cuda:
            vae.to(device)
        if not engines:
            engines.append(Engine.from_loaded(model, settings))
        engine = engines[0]
        folder = validation_dir / f"step-{at}"
        folder.mkdir(parents=True, exist_ok=True)
        was_training = raw_unet.training
        raw_unet.eval()
        raw_te.eval()
        shots = []
        try:
            for p, prompt in enumerate(cfg.validation_prompt):
                for seed in eff.seeds:
                    req = GenerationRequest(
                        prompt,
                        negative_prompt=cfg.validation_negative_prompt,
                        seed=seed,
                        steps=cfg.validation_inference_steps,
                        guidance=cfg.validation_guidance_scale,
                        width=resolution,
                        height=resolution,
                        watermark=False,
                    )
                    image = engine.generate(req).images[0]
                    dest = folder / f"p{p}-s{seed}.png"
                    atomic_write(dest, lambda fh, im=image: im.save(fh, format="PNG"))
                    shots.append(image)
        finally:
            raw_unet.train(was_training)
            raw_te.train(cfg.train_text_encoder and was_training)
            if cfg.cache_latents and on_cuda:
                vae.to("cpu")
        if tracker is not None and shots:
            import numpy as np

            tracker.add_images("validation", np.stack([np.asarray(im) for im in shots]), at, dataformats="NHWC")
        if events:
            events(TrainEvent("validation", step=at, total=cfg.max_train_steps, path=folder))

    eval_views: list[tuple[torch.Tensor, str]] = []
    if cfg.validation_loss and main:
        with torch.no_grad():
            for i in range(min(EVAL_IMAGES, len(records))):
                w, h = plan.sizes[i]
                view = center_crop(resize_cover(load_rgb(records[i].path), w, h), (w, h))
                mean = vae.encode(to_tensor(view)[None].to(device, weight_dtype)).latent_dist.mean
                eval_views.append((mean * vae.config.scaling_factor, records[i].caption))
    if cfg.cache_latents and on_cuda:
        vae.to("cpu")  # not needed on the GPU again until validation

    def evaluation_loss(at: int) -> None:
        """Loss on a few training images at fixed timesteps and noise: unlike the step loss, it isn't noisy."""
        if not main or not cfg.validation_loss:
            return
        gen = torch.Generator("cpu").manual_seed(cfg.seed + 12345)
        total_loss, n = 0.0, 0
        was_training = raw_unet.training
        raw_unet.eval()
        try:
            with torch.no_grad():
                for latents, caption in eval_views:
                    hidden = encode_captions([caption]).to(weight_dtype)
                    for k in range(EVAL_TIMESTEPS):
                        t = torch.tensor([int((k + 0.5) * timesteps_total / EVAL_TIMESTEPS)], device=device)
                        noise = torch.randn(latents.shape, generator=gen).to(device, latents.dtype)
                        noisy = noise_scheduler.add_noise(latents, noise, t)
                        pred = raw_unet(noisy, t, hidden, return_dict=False)[0]
                        target = training_target(noise_scheduler, latents, noise, t, prediction_type)
                        total_loss += float(diffusion_loss(pred, target))
                        n += 1
        finally:
            raw_unet.train(was_training)
        value = total_loss / max(n, 1)
        metrics.append({"step": at, "eval_loss": value})
        accelerator.log({"eval_loss": value}, step=at)
        if events:
            events(TrainEvent("eval", step=at, total=cfg.max_train_steps, metrics={"eval_loss": value}))

    def save_checkpoint(at: int, last_loss: float | None) -> Path:
        tmp = ckpt.temp_dir(out, at)
        if main:
            ckpt.clear_stale(out)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        ckpt.save_structured(tmp, f"rng-{accelerator.process_index}", ckpt.rng_state(generator))
        final = out / ckpt.checkpoint_name(at)
        if main:
            from safetensors.torch import save_file

            unet_state, te_state = lora_states()
            save_file(unet_state, str(tmp / "unet_lora.safetensors"))
            if te_state is not None:
                save_file(te_state, str(tmp / "text_encoder_lora.safetensors"))
            ckpt.save_structured(tmp, "optimizer", optimizer.state_dict())
            ckpt.save_structured(tmp, "scheduler", lr_scheduler.state_dict())
            if accelerator.scaler is not None:
                ckpt.save_structured(tmp, "scaler", accelerator.scaler.state_dict())
            save_diffusers(tmp, unet_state, te_state, eff)
            (tmp / CONFIG_FILE).write_text(config_yaml(eff), encoding="utf-8")
            ckpt.write_state(
                tmp,
                {
                    "step": at,
                    "max_train_steps": cfg.max_train_steps,
                    "loss": last_loss,
                    "model": model.name,
                    "model_hash": model.hash,
                    "lora": eff.lora_settings(),
                    "fingerprint": tset.fingerprint,
                    "num_processes": accelerator.num_processes,
                    "micro_batches": at * cfg.gradient_accumulation_steps,
                    "epoch": stream.locate(at * cfg.gradient_accumulation_steps)[0],
                    "config": eff.to_dict(),
                    "saved_at": time.time(),
                },
            )
        accelerator.wait_for_everyone()
        if main:
            if final.exists():
                import shutil

                shutil.rmtree(final)
            tmp.rename(final)
            ckpt.prune(out, cfg.checkpoints_total_limit)
            if events:
                events(TrainEvent("checkpoint", step=at, total=cfg.max_train_steps, path=final))
        accelerator.wait_for_everyone()
        return final

    def encode_captions(captions: list[str]) -> torch.Tensor:
        if text_cache:
            return torch.stack([text_cache[c] for c in captions])
        ids = tokens.batch(captions).to(device)
        if cfg.train_text_encoder:
            return _encode(text_encoder, ids, len(captions))
        with torch.no_grad():
            return _encode(text_encoder, ids, len(captions))

    def micro_loss(batch: dict[str, Any]) -> torch.Tensor:
        idx = batch["indices"]
        with torch.no_grad():
            if latent_cache:
                from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

                params = torch.stack([latent_cache[(i, f)] for i, f in zip(idx, batch["flipped"], strict=True)])
                latents = DiagonalGaussianDistribution(params).sample(generator)
            else:
                latents = vae.encode(batch["pixels"].to(device, weight_dtype)).latent_dist.sample(generator)
            latents = latents * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        noise = add_noise_offset(noise, cfg.noise_offset, generator)
        t = torch.randint(0, timesteps_total, (latents.shape[0],), generator=generator, device=device).long()
        noisy = noise_scheduler.add_noise(latents, noise, t)
        hidden = encode_captions([records[i].caption for i in idx])
        target = training_target(noise_scheduler, latents, noise, t, prediction_type)
        pred = unet(noisy, t, hidden, return_dict=False)[0]
        weights = min_snr_weights(noise_scheduler, t, cfg.snr_gamma, prediction_type) if cfg.snr_gamma else None
        return diffusion_loss(pred, target, weights)

    accum = cfg.gradient_accumulation_steps
    total = cfg.max_train_steps
    dataset_cls = CachedMicroBatches if latent_cache else MicroBatches
    loader = torch.utils.data.DataLoader(
        dataset_cls(stream, records, aug, start=step * accum, count=max(0, total - step) * accum),
        batch_size=None,
        shuffle=False,
        num_workers=0 if latent_cache else cfg.dataloader_num_workers,
        collate_fn=_identity,
    )
    batches = iter(loader)
    stop = _Stop(cancel)
    last_loss: float | None = None
    last_checkpoint: Path | None = resume_dir
    interrupted = False
    if step == 0:
        evaluation_loss(0)
        if cfg.validation_at_start:
            validate(0)
    unet.train()
    if cfg.train_text_encoder:
        text_encoder.train()
    tick = time.perf_counter()
    with stop.signals(say):
        while step < total:
            losses = []
            for a in range(accum):
                batch = next(batches)
                sync = contextlib.nullcontext() if a == accum - 1 else accelerator.no_sync(unet)
                with sync:
                    loss = micro_loss(batch)
                    accelerator.backward(loss / accum)
                losses.append(loss.detach())
            grad_norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = float(accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item())
            now = time.perf_counter()
            row = {
                "step": step,
                "loss": last_loss,
                "lr": float(lr_scheduler.get_last_lr()[0]),
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "epoch": stream.locate(step * accum - 1)[0],
                "seconds": round(now - tick, 4),
            }
            tick = now
            if main:
                metrics.append(row)
                accelerator.log({k: row[k] for k in ("loss", "lr", "grad_norm") if row[k] is not None}, step=step)
                if events:
                    events(TrainEvent("step", step=step, total=total, metrics=row))
            wants_stop = stop.now
            if accelerator.num_processes > 1:
                flag = torch.tensor([1.0 if wants_stop else 0.0], device=device)
                wants_stop = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
            if step % cfg.checkpointing_steps == 0 or step == total or wants_stop:
                last_checkpoint = save_checkpoint(step, last_loss)
                if not wants_stop:
                    evaluation_loss(step)
                    validate(step)
            if wants_stop and step < total:
                interrupted = True
                say(f"stopped at step {step}; continue with --resume latest")
                break

    lora_path = kohya_path = None
    if main:
        if not interrupted:
            unet_state, te_state = lora_states()
            lora_path = save_diffusers(out, unet_state, te_state, eff)
            meta = kohya_metadata(
                eff,
                prediction_type=prediction_type,
                resolution=resolution,
                model_name=model.name,
                model_hash=model.hash,
                num_images=len(records),
                steps=step,
                captions=[r.caption for r in records],
                started=started,
                sd2=model.cross_attention_dim != 768,
            )
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[cfg.save_precision]
            tensors = to_kohya(unet_state, te_state, eff.alpha, dtype)
            kohya_path = save_kohya(out / f"{cfg.output_name}.safetensors", tensors, meta)
        curve = plot_loss(metrics.read(), out / LOSS_PNG, title=f"{cfg.output_name}: loss")
        grid = validation_grid(validation_dir, out / GRID_PNG)
        joblog.append(
            settings.home,
            "training",
            {
                "out": str(out),
                "steps": step,
                "interrupted": interrupted,
                "final_loss": last_loss,
                "seconds": round(time.time() - started, 2),
                "device": str(accelerator.device),
                "num_processes": accelerator.num_processes,
                "config": asdict(eff),
                **joblog.peak_memory(accelerator.device),
            },
        )
    else:
        curve = grid = None
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(
        out=out,
        steps=step,
        interrupted=interrupted,
        lora=lora_path,
        kohya=kohya_path,
        checkpoint=last_checkpoint,
        final_loss=last_loss,
        loss_curve=curve,
        validation_grid=grid,
        config=eff,
        notices=notices,
        main_process=main,
    )


def _encode(text_encoder: Any, ids: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch · chunks, 77) ids → (batch, 77 · chunks, dim) hidden states."""
    from lanskap.prompts.encode import encode_rows

    z = encode_rows(text_encoder, ids)
    return z.reshape(batch, -1, z.shape[-1])
