"""Run one generation job for the CLI: settings, request, engine, progress, files, summary.

Every generating command (generate, img2img, inpaint, outpaint) ends here, so
they share validation, LoRA checks, progress bars, file naming and output.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lanskap.cli.common import step_bar
from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.generation.batchfile import Shard
    from lanskap.generation.engine import Engine, GenerationResult
    from lanskap.generation.params import GenerationRequest
    from lanskap.generation.replay import Replay
    from lanskap.jobs.generation import GenerationOutput


@dataclass
class JobOptions:
    """The flags every generating command has, as typed by the user (None = not given)."""

    model: str | None = None
    model_config: str | None = None
    model_family: str | None = None
    vae: str | None = None
    prediction_type: str | None = None
    device: str | None = None
    dtype: str | None = None
    out: Path | None = None
    fmt: str = "png"
    lora: list[str] = field(default_factory=list)
    lora_dir: list[Path] = field(default_factory=list)
    style: list[str] = field(default_factory=list)
    allow_pickle: bool | None = None
    fallback: str | None = None
    low_memory: str | None = None
    compile: bool | None = None
    threads: int | None = None
    speed: str | None = None
    no_watermark: bool = False
    no_gallery: bool = False
    save_maps: bool = False  # the ControlNet and depth maps beside the images
    quiet: bool = False
    as_json: bool = False

    def settings(self) -> Settings:
        from lanskap.config import load_settings

        return load_settings(
            model=self.model,
            model_config=self.model_config,
            model_family=self.model_family,
            vae=self.vae,
            device=self.device,
            dtype=self.dtype,
            output_dir=self.out,
            allow_pickle=self.allow_pickle,
            fallback=self.fallback,
            lora_dirs=self.lora_dir or None,
            low_memory=self.low_memory,
            compile=self.compile,
            threads=self.threads,
            speed_level=self.speed,
        )


def request_fields(fields: dict[str, Any], opts: JobOptions) -> dict[str, Any]:
    """The given request fields (None = default) plus the LoRA and watermark flags."""
    from lanskap.cli.compose import compose_fields
    from lanskap.cli.control import control_fields
    from lanskap.generation.params import LoraSpec

    clean = {k: v for k, v in fields.items() if v is not None}
    compose_fields(clean)
    control_fields(clean)
    clean["loras"] = tuple(LoraSpec.parse(s) for s in opts.lora or [])
    if opts.no_watermark:
        clean["watermark"] = False
    return clean


def build_request(fields: dict[str, Any], opts: JobOptions) -> GenerationRequest:
    """A validated GenerationRequest from the given fields (None = default) and the LoRA flags."""
    from lanskap.generation.params import GenerationRequest, left_unset

    clean = request_fields(fields, opts)
    return GenerationRequest(**clean, model_defaults=left_unset(clean)).validate()


def run_job(
    request: GenerationRequest,
    opts: JobOptions,
    mode_folder: str,
    settings: Settings | None = None,
    replay: Replay | None = None,
) -> None:
    """Load the model, generate ``request`` with a progress bar, save and report the images."""
    run_jobs([request], opts, mode_folder, settings=settings, replay=replay)


def run_jobs(
    requests: list[GenerationRequest],
    opts: JobOptions,
    mode_folder: str,
    settings: Settings | None = None,
    replay: Replay | None = None,
    shard: Shard | None = None,
) -> None:
    """Generate ``requests`` (this process's share of them, under ``accelerate launch``) with one engine."""
    from lanskap.cli.common import quiet_libraries, wait_notice
    from lanskap.gallery import Gallery
    from lanskap.generation.output import check_format, ensure_writable_dir
    from lanskap.gpulock import gpu_lock
    from lanskap.jobs import JobControl
    from lanskap.jobs.generation import check_generation, output_folder, run_generation

    fmt = check_format(opts.fmt)  # before anything slow
    settings = settings or opts.settings()
    # Every line is checked (LoRAs too, on any process) before time goes into loading the base model.
    requests = [check_generation(r, settings, styles=opts.style) for r in requests]
    folder = ensure_writable_dir(output_folder(settings, mode_folder, opts.out))
    gallery = None if opts.no_gallery else Gallery.open(settings)
    mine = shard.take(requests) if shard is not None else requests
    if shard is not None and shard.world > 1:
        from accelerate import PartialState

        PartialState()  # puts this process on its own GPU (cuda:LOCAL_RANK)
    quiet_libraries(opts.quiet)
    start, count = time.perf_counter(), 0
    # Held over the load and every prompt, so another process can't take the GPU in between.
    with gpu_lock(settings.home, on_wait=wait_notice):
        engine = _engine(opts, settings, replay)
        for request in mine:
            with step_bar(opts.quiet, "generating") as report:
                output = run_generation(engine, request, folder, fmt=fmt, gallery=gallery, source="cli",
                                        control=JobControl(report=report))  # fmt: skip
            _notices(output.result, engine, opts)
            if opts.save_maps and output.paths and output.result.maps:
                from lanskap.cli.control import save_maps

                for path in save_maps(output.result.maps, output.paths[0]):
                    typer.secho(f"map: {path}", err=True)
            count += len(output.paths)
            _report(output, opts, len(mine))
    if shard is not None and not opts.quiet:
        where = f"process {shard.rank + 1} of {shard.world}: " if shard.world > 1 else ""
        typer.secho(
            f"{where}{len(mine)} of {len(requests)} prompt(s), {count} image(s) in {time.perf_counter() - start:.1f}s",
            err=True,
        )


def _report(output: GenerationOutput, opts: JobOptions, jobs: int) -> None:
    if opts.as_json:
        # One indented object for one job; JSON lines (one per prompt) for a prompt file.
        typer.echo(json.dumps(output.summary(), indent=2 if jobs == 1 else None))
        return
    for p in output.paths:
        typer.echo(str(p))
    if not opts.quiet:
        result = output.result
        typer.secho(
            f"{len(output.paths)} image(s), seed {result.seeds[0]}, {result.seconds:.1f}s "
            f"on {result.device}/{result.dtype}",
            err=True,
        )


def require_prompt(prompt: str | None) -> str:
    if not prompt or not prompt.strip():
        raise LanskapError("give a PROMPT")
    return prompt


def _engine(opts: JobOptions, settings: Settings, replay: Replay | None) -> Engine:
    """Load the model once (while holding the GPU lock) and say what was loaded."""
    from lanskap.generation.engine import Engine

    engine = Engine(settings=settings, prediction_type=opts.prediction_type)
    # Each notice as it arises: a fallback is said before the fallback model's loading bars.
    engine.on_notice = lambda notice: typer.secho(notice, err=True, fg=typer.colors.YELLOW)
    loaded = engine.load()
    if replay is not None and replay.model_hash and replay.model_hash != loaded.hash:
        typer.secho(
            f"note: the image was made with model hash {replay.model_hash}; {loaded.name} is "
            f"{loaded.hash}, so pixels will differ",
            err=True,
            fg=typer.colors.YELLOW,
        )
    return engine


def _notices(result: GenerationResult, engine: Engine, opts: JobOptions) -> None:
    """The notices of a job that the model's load didn't already give."""
    for notice in result.notices[len(engine.model.notices) :]:
        if not opts.quiet:
            typer.secho(notice, err=True, fg=typer.colors.YELLOW)
