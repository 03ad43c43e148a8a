"""A run's whole state on disk: starting or resuming a run, and saving a checkpoint.

A checkpoint holds what the method trains, the optimizer, the LR schedule, the
scaler, every process's random state and where the data stream stands, so a
resumed run continues exactly. It is built under a temp name and renamed when
whole (``training/checkpoint.py`` has the file-level helpers).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from lanskap.io import atomic_write_text
from lanskap.training import checkpoint as ckpt
from lanskap.training.config import config_yaml
from lanskap.training.context import TrainRun
from lanskap.training.events import TrainEvent


def start(run: TrainRun, resume_dir: Path | None, state: dict[str, Any]) -> None:
    """Restore a checkpoint (or start the folder), write the settings, and open TensorBoard."""
    session, cfg, layout = run.session, run.cfg, run.layout
    if resume_dir is not None:
        run.step = int(state["step"])
        run.last_checkpoint = resume_dir
        _restore(run, resume_dir)
        if session.main:
            run.metrics.truncate(run.step)
        session.say(f"resuming from {resume_dir.name} (step {run.step} of {cfg.max_train_steps})")
    elif session.main:
        layout.root.mkdir(parents=True, exist_ok=True)
        run.metrics.truncate(0)
    if session.main:
        atomic_write_text(layout.config, config_yaml(cfg))
        ckpt.clear_stale(layout.root)
    if cfg.report_to == "tensorboard":
        flat = {k: v for k, v in cfg.to_dict().items() if isinstance(v, int | float | str | bool)}
        session.accelerator.init_trackers("lanskap-lora", config=flat)
        run.tracker = session.accelerator.get_tracker("tensorboard", unwrap=True) if session.main else None


def _restore(run: TrainRun, folder: Path) -> None:
    nets, accelerator = run.nets, run.session.accelerator
    run.method.load_checkpoint(nets, folder)
    nets.optimizer.load_state_dict(ckpt.load_structured(folder, "optimizer"))
    nets.lr_scheduler.load_state_dict(ckpt.load_structured(folder, "scheduler"))
    if accelerator.scaler is not None and (folder / "scaler.json").is_file():
        accelerator.scaler.load_state_dict(ckpt.load_structured(folder, "scaler"))
    ckpt.set_rng_state(ckpt.load_structured(folder, f"rng-{accelerator.process_index}"), run.generator)


def save_checkpoint(run: TrainRun) -> Path:
    """Save the whole state at the current step; every process takes part (each has its random state)."""
    session, cfg, out, at = run.session, run.cfg, run.layout.root, run.step
    accelerator, main = session.accelerator, session.main
    tmp = ckpt.temp_dir(out, at)
    if main:
        ckpt.clear_stale(out)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    ckpt.save_structured(tmp, f"rng-{accelerator.process_index}", ckpt.rng_state(run.generator))
    final = out / ckpt.checkpoint_name(at)
    if main:
        run.method.save_checkpoint(run.nets, tmp)
        ckpt.save_structured(tmp, "optimizer", run.nets.optimizer.state_dict())
        ckpt.save_structured(tmp, "scheduler", run.nets.lr_scheduler.state_dict())
        if accelerator.scaler is not None:
            ckpt.save_structured(tmp, "scaler", accelerator.scaler.state_dict())
        (tmp / run.layout.config.name).write_text(config_yaml(cfg), encoding="utf-8")
        ckpt.write_state(tmp, _state(run))
    accelerator.wait_for_everyone()
    if main:
        if final.exists():
            ckpt.remove(final)
        tmp.rename(final)
        ckpt.prune(out, cfg.checkpoints_total_limit)
        session.emit(TrainEvent("checkpoint", step=at, total=cfg.max_train_steps, path=final))
    accelerator.wait_for_everyone()
    run.last_checkpoint = final
    return final


def _state(run: TrainRun) -> dict[str, Any]:
    cfg, at = run.cfg, run.step
    return {
        "step": at,
        "max_train_steps": cfg.max_train_steps,
        "loss": run.last_loss,
        "model": run.model.name,
        "model_hash": run.model.hash,
        "lora": run.method.resume_settings(),
        "fingerprint": run.tset.fingerprint,
        "num_processes": run.session.accelerator.num_processes,
        "micro_batches": at * cfg.gradient_accumulation_steps,
        "epoch": run.data.stream.locate(at * cfg.gradient_accumulation_steps)[0],
        "config": cfg.to_dict(),
        "saved_at": time.time(),
    }


def new_generator(run_seed: int, process_index: int, device: torch.device) -> torch.Generator:
    """The run's generator: latents, noise and timesteps; each process draws its own stream."""
    return torch.Generator(device=device).manual_seed(run_seed + 7919 * process_index)
