"""``lanskap train``: thin shell over lanskap.training (flags named as in the diffusers LoRA example)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lanskap.cli.config_flags import config_command
from lanskap.training.config import TrainConfig


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)


@config_command(TrainConfig, skip=("preset",))
def train_cmd(
    preset: str = typer.Option(None, "--preset", help="default (about 50 images) or thesis (the thesis's run)."),
    config: Path = typer.Option(None, "--config", help="TOML or YAML file of settings (flags override it)."),
    use_8bit_adam: bool = typer.Option(False, "--use-8bit-adam", help="Same as --optimizer adamw8bit."),
    no_validation: bool = typer.Option(False, "--no-validation", help="Render no validation images."),
    device: str = typer.Option(None, "--device", help="auto, cuda or cpu."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    given: dict[str, Any] | None = None,
) -> None:
    """Fine-tune on a captioned image set: a LoRA, an embedding or DreamBooth (thesis run: --preset thesis).

    Every TrainConfig setting is a flag of the same name (lanskap/training/config.py).
    """
    from lanskap.cli.common import quiet_libraries, wait_notice
    from lanskap.config import load_settings
    from lanskap.jobs import JobControl
    from lanskap.jobs.training import run_training
    from lanskap.training import build_config

    quiet_libraries(quiet)
    overrides = dict(given or {})
    if use_8bit_adam:
        overrides["optimizer"] = "adamw8bit"
    cfg = build_config(preset, config, overrides)
    if no_validation:
        cfg.validation_prompt = []
    progress = _Progress(quiet)
    try:
        settings = load_settings(device=device)
        control = JobControl(on_wait=wait_notice)
        result = run_training(cfg, settings, control=control, events=progress).result
    finally:
        progress.close()
    if not result.main_process:
        return
    for line in (f"steps: {result.steps}", f"final loss: {result.final_loss:.4f}" if result.final_loss else None):
        if line:
            typer.echo(line)
    makes = {"textual-inversion": "embedding", "dreambooth": "model" if cfg.full else "LoRA"}.get(cfg.method, "LoRA")
    for label, path in (
        (f"{makes} (diffusers)", result.lora),
        (f"{makes} (kohya/A1111)" if makes != "model" else "model (A1111 single file)", result.kohya),
        ("last checkpoint", result.checkpoint),
        ("loss curve", result.loss_curve),
        ("validation grid", result.validation_grid),
    ):
        if path:
            typer.echo(f"{label}: {path}")
    if result.interrupted:
        typer.echo(f"stopped early; continue with: lanskap train --out {result.out} --resume latest ...", err=True)
        raise typer.Exit(130)


class _Progress:
    """tqdm bars for caching and steps (step, loss, learning rate; tqdm adds it/s); notices as lines."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.cache_bar = None

    def __call__(self, event) -> None:  # type: ignore[no-untyped-def]
        from tqdm import tqdm

        if event.kind == "notice":
            (tqdm.write if self.bar else typer.echo)(event.message, file=None)
            return
        if self.quiet:
            return
        if event.kind == "cache":
            if self.cache_bar is None:
                self.cache_bar = tqdm(total=event.total, desc="caching latents", unit="img", leave=False)
            self.cache_bar.n = event.step
            self.cache_bar.refresh()
        elif event.kind == "step":
            if self.bar is None:
                self.bar = tqdm(total=event.total, initial=event.step - 1, desc="training", unit="step")
            m = event.metrics
            self.bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['lr']:.2e}", refresh=False)
            self.bar.update(event.step - self.bar.n)
        elif event.kind == "eval":
            line = f"step {event.step}: fixed-noise loss {event.metrics['eval_loss']:.4f}"
            (tqdm.write if self.bar else typer.echo)(line)
        elif event.kind in ("checkpoint", "validation"):
            what = "checkpoint" if event.kind == "checkpoint" else "validation images"
            (tqdm.write if self.bar else typer.echo)(f"step {event.step}: {what} → {event.path}")

    def close(self) -> None:
        for bar in (self.cache_bar, self.bar):
            if bar is not None:
                bar.close()
