"""Training as a job: a named run folder checked once, the GPU lock, the trainer, the published LoRA."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lanskap.errors import LanskapError
from lanskap.gpulock import gpu_lock
from lanskap.io import atomic_write
from lanskap.jobs.control import JobControl
from lanskap.names import check_name, child

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.training.config import TrainConfig
    from lanskap.training.events import EventFn, TrainEvent, TrainResult


@dataclass
class TrainingOutput:
    result: TrainResult
    published: Path | None  # the LoRA copied into the LoRA folder, ready for the Generate page


def named_run(settings: Settings, cfg: TrainConfig, name: str, *, resume: bool = False) -> TrainConfig:
    """``cfg`` training into ``$LANSKAP_HOME/training/NAME`` (the servers' way: names, never paths)."""
    run_dir = child(settings.training_dir, check_name(name, "run name"), "run name")
    cfg = replace(cfg, out=str(run_dir), resume_from_checkpoint="latest" if resume else cfg.resume_from_checkpoint)
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise LanskapError(f"a training run named {name!r} already exists; resume it or choose another name")
    if resume and not run_dir.is_dir():
        raise LanskapError(f"no training run named {name!r} to resume")
    cfg.check()
    return cfg


def run_training(
    cfg: TrainConfig,
    settings: Settings,
    *,
    control: JobControl | None = None,
    events: EventFn | None = None,
    publish_as: str | None = None,
) -> TrainingOutput:
    """Train under the GPU lock; a finished run's LoRA is copied into the LoRA folder as ``publish_as``.

    ``events`` sees every trainer event (the CLI's bars); ``control`` gets the progress in steps.
    """
    from lanskap.training import train

    control = control or JobControl()

    def relay(e: TrainEvent) -> None:
        if e.kind == "step":
            control.report(e.step, e.total, f"step {e.step} of {e.total}, loss {e.metrics.get('loss', 0):.4f}")
        elif e.kind == "cache":
            control.report(0, cfg.max_train_steps, f"caching latents {e.step}/{e.total}")
        elif e.message:
            control.note(e.message)
        if events is not None:
            events(e)

    with gpu_lock(settings.home, on_wait=control.on_wait):  # train() checks cfg before it loads anything
        result = train(cfg, settings, events=relay, cancel=control.cancel)
    published = None
    if publish_as is not None and not result.interrupted and result.kohya is not None:
        if cfg.method == "dreambooth" and cfg.full and result.lora is not None:
            published = publish_model(settings, result.lora, publish_as)
        else:
            published = publish_lora(settings, result.kohya, publish_as, publish_folder(settings, cfg))
    return TrainingOutput(result, published)


def publish_model(settings: Settings, folder: Path, name: str) -> Path:
    """Copy a fine-tuned model's diffusers folder into the models folder (whole, then renamed)."""
    from lanskap.io import atomic_dir

    dest = child(settings.models_dir, name, "model name")
    if dest.exists():
        raise LanskapError(f"a model named {name!r} already exists in {settings.models_dir}")
    with atomic_dir(dest) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
    return dest


def publish_folder(settings: Settings, cfg: TrainConfig) -> Path:
    """Where a finished run's file goes to be used: an embedding, a whole model or a LoRA."""
    if cfg.method == "textual-inversion":
        return settings.embeddings_dir
    return settings.default_lora_dir


def publish_lora(settings: Settings, source: Path, name: str, folder: Path | None = None) -> Path:
    """Copy a trained file into the folder it is used from (atomically: a reader never sees half a file)."""
    dest = child(folder or settings.default_lora_dir, f"{name}.safetensors", "LoRA name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src:
        atomic_write(dest, lambda fh: shutil.copyfileobj(src, fh))
    return dest
