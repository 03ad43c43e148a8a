"""``lanskap mini``: train lanskap-mini, measure its prompt following, write scene datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lanskap.cli.config_flags import config_command
from lanskap.cli.options import LEVER_FLAGS, SPEED
from lanskap.mini.config import MiniConfig

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="lanskap-mini, the small built-in landscape model.")


_STAGE_NAMES = {
    "render": "rendering scenes",
    "vae": "VAE",
    "encode": "encoding latents",
    "decoder": "VAE decoder",
    "unet": "UNet + text",
}


class _Bars:
    """One tqdm bar per training stage."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.stage = quiet, None, ""

    def __call__(self, stage: str, done: int, total: int, metrics: dict[str, float]) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            desc = _STAGE_NAMES.get(stage, stage)
            self.bar, self.stage = tqdm(total=total, desc=desc, dynamic_ncols=True), stage
        assert self.bar is not None
        self.bar.n = done
        if "loss" in metrics:
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@app.command("train")
@config_command(MiniConfig, skip=("seed",))
def train_cmd(
    out: Path = typer.Option(None, "--out", help="Run folder [$LANSKAP_HOME/training/lanskap-mini]."),
    seed: int = typer.Option(0, "--seed", help="Decides every weight [0: the shipped model].", show_default=False),
    unet_channels: str = typer.Option(
        None, "--unet-channels", help="UNet channels per level, three multiples of 16 [64,128,192]."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    given: dict[str, Any] | None = None,
) -> None:
    """Train lanskap-mini from scratch (one to two hours on a 2-core CPU, minutes on a GPU).

    Every MiniConfig setting with help is a flag of the same name (lanskap/mini/config.py).
    """
    from dataclasses import replace

    given = dict(given or {})
    if unet_channels:
        given["unet_channels"] = _channels(unet_channels)
    cfg = replace(MiniConfig(seed=seed), **given).validate()  # before torch loads: a bad value answers at once

    from lanskap.cli.common import quiet_libraries
    from lanskap.config import load_settings
    from lanskap.mini.train import LOSS_PLOTS, train_mini

    quiet_libraries(True)
    out = out or load_settings().home / "training" / "lanskap-mini"
    bars = _Bars(quiet)
    try:
        model = train_mini(out, cfg, bars)
    finally:
        bars.close()
    typer.echo(f"lanskap-mini trained: {model}")
    curves = [out / name for name, _ in LOSS_PLOTS.values() if (out / name).is_file()]
    typer.echo(f"loss curves: {', '.join(map(str, curves))}")
    typer.echo(f"try it: lanskap generate 'a castle by a lake at sunset' --model {model}")


def _channels(text: str) -> tuple[int, int, int]:
    from lanskap.errors import LanskapError

    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise LanskapError(f"--unet-channels must look like 64,128,192, got {text!r}") from None
    if len(values) != 3:
        raise LanskapError(f"--unet-channels needs three numbers, got {text!r}")
    return values  # type: ignore[return-value]


@app.command("score")
def score_cmd(
    model: str = typer.Option("lanskap-mini", "--model", help="Model to measure."),
    count: int = typer.Option(40, "--count", help="Held-out prompts."),
    seed: int = typer.Option(1, "--seed", help="Image seed of the first prompt (then +1 each)."),
    start: int = typer.Option(
        None, "--start", help="Seed of the first held-out scene, at least 10^9 [10^9]; another start, another set."
    ),
    steps: int = typer.Option(20, "--steps", help="Sampling steps."),
    guidance: float = typer.Option(7.5, "--cfg-scale", "--guidance", help="Guidance scale."),
    sampler: str = typer.Option(None, "--sampler", help="Sampler [the engine's default]."),
    lora: list[str] = typer.Option(None, "--lora", metavar="<str>", help="NAME[:SCALE], repeatable."),
    out: Path = typer.Option(None, "--out", help="Write follow.json and a contact sheet follow.png here."),
    device: str = typer.Option(None, "--device", help="auto, cuda or cpu."),
    speed: str = SPEED,
    cache_interval: int = LEVER_FLAGS[0][2],
    cache_start: float = LEVER_FLAGS[1][2],
    token_merging: float = LEVER_FLAGS[2][2],
    token_merging_downsample: int = LEVER_FLAGS[3][2],
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure prompt following: generate held-out prompts and read the attributes back.

    It takes generate's speed options, so a speed lever's quality gate is one command.
    """
    from lanskap.cli.common import quiet_libraries
    from lanskap.errors import LanskapError
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest, LoraSpec
    from lanskap.mini.follow import HELD_OUT_SEED, measure, save_report

    quiet_libraries(True)
    if count < 1:
        raise LanskapError("--count must be at least 1")
    start = HELD_OUT_SEED if start is None else start
    if start < HELD_OUT_SEED:  # below it are the seeds training renders: not held out
        raise LanskapError(f"--start must be {HELD_OUT_SEED} or more; lower scene seeds are training scenes")
    engine = Engine(model, device=device, fallback="none", speed_level=speed)
    loras = tuple(LoraSpec.parse(x) for x in lora or [])
    extra: dict[str, Any] = {"scheduler": sampler} if sampler else {}
    levers = {"cache_interval": cache_interval, "cache_start": cache_start, "token_merging": token_merging}
    extra.update({k: v for k, v in levers.items() if v is not None})
    if token_merging_downsample is not None:
        extra["token_merging_downsample"] = token_merging_downsample

    def generate(prompt: str, image_seed: int):  # type: ignore[no-untyped-def]
        req = GenerationRequest(prompt, seed=image_seed, steps=steps, guidance=guidance, loras=loras, **extra)
        return engine.generate(req.validate()).images[0]

    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=count, desc="prompts", dynamic_ncols=True)
    try:
        tick = (lambda d, n: bar.update(1)) if bar else None
        report, images = measure(generate, count, seed=seed, start=start, progress=tick)
    finally:
        if bar:
            bar.close()
    typer.echo(report.summary())
    if out:
        json_path, png = save_report(report, images, out)
        typer.echo(f"report: {json_path}; contact sheet: {png}")


@app.command("dataset")
def dataset_cmd(
    out: Path = typer.Argument(..., help="New folder for the imagefolder (train/ and test/)."),
    count: int = typer.Option(60, "--count", help="Training images."),
    test: int = typer.Option(12, "--test", help="Test images (for lanskap evaluate)."),
    style: str = typer.Option(None, "--style", help="Repaint in a style the base never saw: verdigris."),
    size: int = typer.Option(128, "--size", help="Image side in pixels."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Write captioned procedural scenes (optionally in a new style) for lanskap train/evaluate."""
    from lanskap.mini.dataset import trigger, write_scene_set

    folder = write_scene_set(out, count, test=test, style=style, size=size, overwrite=overwrite)
    typer.echo(f"{count} training + {test} test scenes in {folder}")
    if style:
        typer.echo(f"every caption ends with '{trigger(style)}'")
