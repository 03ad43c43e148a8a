"""Training set-up: the processes and precision, the base model, and the networks to train.

Everything that can be refused is checked here, before a step runs: the precision the
device can give, the optimizer, and whether a checkpoint fits the run that resumes it.
The order of the calls that draw random numbers (the seed, then the adapters' initial
weights) is part of the result: the same seed gives the same run.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lanskap.errors import LanskapError
from lanskap.training import checkpoint as ckpt
from lanskap.training.context import Networks, Session
from lanskap.training.events import EventFn

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.models.loader import LoadedModel
    from lanskap.training.config import TrainConfig
    from lanskap.training.layout import RunLayout
    from lanskap.training.method import TrainingMethod
    from lanskap.training.sources import TrainingSet

#: Settings that decide which picture, noise and step come next; a resume must keep them.
ORDER_KEYS = ("seed", "train_batch_size", "gradient_accumulation_steps", "resolution", "bucketing", "bucket_step")


def resolve_precision(requested: str, on_cuda: bool) -> tuple[str, str | None]:
    """accelerate's mixed_precision for this device, and a notice when the request can't be met."""
    if requested == "auto":
        if on_cuda:
            return ("bf16" if torch.cuda.is_bf16_supported() else "fp16"), None
        return "no", None
    if requested == "fp16" and not on_cuda:
        return "no", "fp16 mixed precision needs a CUDA GPU; training in fp32 (bf16 mixed precision works on a CPU)"
    return requested, None


def find_resume(cfg: TrainConfig, layout: RunLayout) -> Path | None:
    """The checkpoint to resume from, or None for a new run (which must not overwrite an old one)."""
    resume_dir = ckpt.find_checkpoint(layout.root, cfg.resume_from_checkpoint) if cfg.resume_from_checkpoint else None
    has_run = bool(ckpt.list_checkpoints(layout.root)) or layout.finished
    if resume_dir is None and has_run:
        raise LanskapError(f"{layout.root} already holds a training run; resume it, or train into another folder")
    return resume_dir


def open_session(cfg: TrainConfig, settings: Settings, layout: RunLayout, events: EventFn | None) -> Session:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    on_cuda = settings.device != "cpu" and torch.cuda.is_available()
    mixed, precision_note = resolve_precision(cfg.mixed_precision, on_cuda)
    accelerator = Accelerator(
        mixed_precision=mixed,
        cpu=not on_cuda,
        log_with="tensorboard" if cfg.report_to == "tensorboard" else None,
        project_config=ProjectConfiguration(project_dir=str(layout.root), logging_dir=str(layout.logs)),
    )
    session = Session(accelerator, on_cuda, mixed, events)
    if precision_note:
        session.say(precision_note)
    return session


def choose_optimizer(name: str, on_cuda: bool) -> str:
    have_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if name == "auto":
        return "adamw8bit" if (on_cuda and have_bnb) else "adamw"
    if name == "adamw8bit" and not (on_cuda and have_bnb):
        raise LanskapError("the adamw8bit optimizer needs a CUDA GPU and the bitsandbytes package")
    return name


def load_base(session: Session, cfg: TrainConfig, settings: Settings) -> tuple[LoadedModel, TrainConfig]:
    """The base model, and the config as it will run (model, size, precision and optimizer filled in)."""
    from lanskap.models.device import Placement
    from lanskap.models.loader import load_model

    model = load_model(
        cfg.model or settings.model,
        Placement(session.device, session.weight_dtype),
        settings,
        prediction_type=cfg.prediction_type,
    )
    for n in model.notices:
        session.say(n)
    eff = replace(
        cfg,
        model=cfg.model or settings.model,
        resolution=cfg.resolution or model.native_size,
        mixed_precision=session.mixed,
        optimizer=choose_optimizer(cfg.optimizer, session.on_cuda),
        prediction_type=model.prediction_type,
        resume_from_checkpoint=None,
    )
    return model, eff


def resume_state(
    resume_dir: Path | None, eff: TrainConfig, method: TrainingMethod, tset: TrainingSet, model: LoadedModel, procs: int
) -> dict[str, Any]:
    """The checkpoint's saved state, once it is sure to fit this run ({} for a new run)."""
    if resume_dir is None:
        return {}
    state = ckpt.read_state(resume_dir)
    name = f"checkpoint-{state['step']}"
    if state.get("model_hash") != model.hash:
        raise LanskapError(f"{name} was trained on another base model ({state.get('model')}); resume with that model")
    if state.get("lora") != method.resume_settings():
        what = "LoRA settings" if method.name == "lora" else f"{method.name} settings"
        raise LanskapError(f"{name} has other {what} ({state.get('lora')}); resume with the same ones")
    if state.get("fingerprint") != tset.fingerprint:
        raise LanskapError(f"the training data changed since {name} (files or captions); resume needs the same data")
    saved = state.get("config", {})
    for key in ORDER_KEYS:
        if saved.get(key) != getattr(eff, key):
            raise LanskapError(f"the {key} setting differs from {name}'s ({saved.get(key)}); keep it to resume")
    if state.get("num_processes", 1) != procs:
        raise LanskapError(f"{name} was saved by {state.get('num_processes')} process(es); resume with as many")
    return state


def prepare_networks(session: Session, model: LoadedModel, method: TrainingMethod, cfg: TrainConfig) -> Networks:
    """Freeze the base, let the method add what trains, and build the optimizer and the LR schedule."""
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    pipe = model.pipe
    unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
    text_encoder_2 = getattr(pipe, "text_encoder_2", None)  # SDXL's bigG
    encoders = [text_encoder] if text_encoder_2 is None else [text_encoder, text_encoder_2]
    for module in (unet, vae, *encoders):
        module.requires_grad_(False)
    if text_encoder_2 is not None:
        _check_sdxl(method, model.name)
        if vae.dtype == torch.float16 and vae.config.force_upcast:
            vae.to(torch.float32)  # SDXL's VAE overflows in fp16 (its config says so): encode in fp32
    set_seed(cfg.seed)  # the trained parameters' initial values
    method.attach(unet, text_encoder, pipe.tokenizer)
    if text_encoder_2 is not None:
        method.attach_second(text_encoder_2)
    with_te = method.trains_text_encoder
    if session.mixed != "no":
        from diffusers.training_utils import cast_training_params

        cast_training_params([unet, *encoders] if with_te else [unet], dtype=torch.float32)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if with_te:
            for encoder in encoders:
                encoder.gradient_checkpointing_enable()
    if session.on_cuda and cfg.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    attention = ", ".join(sorted(processors))
    session.say(f"attention: {attention}; prediction type {model.prediction_type}; precision {session.mixed}")
    groups = method.param_groups(unet, text_encoder)
    optimizer = _optimizer(cfg, groups)
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=cfg.lr_warmup_steps,
        num_training_steps=cfg.max_train_steps,
        num_cycles=cfg.lr_num_cycles,
        power=cfg.lr_power,
    )
    accelerator = session.accelerator
    if with_te and text_encoder_2 is not None:
        unet, text_encoder, text_encoder_2, optimizer = accelerator.prepare(
            unet, text_encoder, text_encoder_2, optimizer
        )
    elif with_te:
        unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    elif method.trains_unet:
        unet, optimizer = accelerator.prepare(unet, optimizer)
    else:  # new token vectors only: a frozen UNet isn't wrapped (DDP refuses a module with nothing to train)
        optimizer = accelerator.prepare(optimizer)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type=model.prediction_type)
    return Networks(
        unet=unet,
        text_encoder=text_encoder,
        raw_unet=accelerator.unwrap_model(unet),
        raw_te=accelerator.unwrap_model(text_encoder),
        vae=vae,
        tokenizer=pipe.tokenizer,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        noise_scheduler=noise_scheduler,
        trainable=[p for g in groups for p in g["params"]],
        text_encoder_2=text_encoder_2,
        tokenizer_2=getattr(pipe, "tokenizer_2", None),
    )


def _check_sdxl(method: TrainingMethod, model_name: str) -> None:
    """SDXL trains LoRAs so far; the other methods say so in one line before anything is attached."""
    if method.name != "lora":
        raise LanskapError(f"{method.name} trains SD 1.x and 2.x models so far; {model_name} is SDXL (train a LoRA)")


def _optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    adam = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
    if cfg.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, **adam)
    return torch.optim.AdamW(groups, **adam)
