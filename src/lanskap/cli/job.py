"""Run one generation job for the CLI: settings, request, engine, progress, files, summary.

Every generating command (generate, img2img, inpaint, outpaint) ends here, so
they share validation, LoRA checks, progress bars, file naming and output.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import typer

from lanskap.errors import LanskapError


@dataclass
class JobOptions:
    """The flags every generating command has, as typed by the user (None = not given)."""

    model: str | None = None
    model_config: str | None = None
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
    no_watermark: bool = False
    no_gallery: bool = False
    quiet: bool = False
    as_json: bool = False

    def settings(self) -> Any:
        from lanskap.config import load_settings

        return load_settings(
            model=self.model,
            model_config=self.model_config,
            device=self.device,
            dtype=self.dtype,
            output_dir=self.out,
            allow_pickle=self.allow_pickle,
            fallback=self.fallback,
            lora_dirs=self.lora_dir or None,
            low_memory=self.low_memory,
            compile=self.compile,
            threads=self.threads,
        )


def request_fields(fields: dict[str, Any], opts: JobOptions) -> dict[str, Any]:
    """The given request fields (None = default) plus the LoRA and watermark flags."""
    from lanskap.generation.params import LoraSpec

    clean = {k: v for k, v in fields.items() if v is not None}
    clean["loras"] = tuple(LoraSpec.parse(s) for s in opts.lora or [])
    if opts.no_watermark:
        clean["watermark"] = False
    return clean


def build_request(fields: dict[str, Any], opts: JobOptions) -> Any:
    """A validated GenerationRequest from the given fields (None = default) and the LoRA flags."""
    from lanskap.generation.params import GenerationRequest

    return GenerationRequest(**request_fields(fields, opts)).validate()


def run_job(request: Any, opts: JobOptions, mode_folder: str, settings: Any = None, replay: Any = None) -> None:
    """Load the model, generate ``request`` with a progress bar, save and report the images."""
    run_jobs([request], opts, mode_folder, settings=settings, replay=replay)


def run_jobs(
    requests: list[Any],
    opts: JobOptions,
    mode_folder: str,
    settings: Any = None,
    replay: Any = None,
    shard: Any = None,
) -> None:
    """Generate ``requests`` (this process's share of them, under ``accelerate launch``) with one engine."""
    from lanskap.gallery import Gallery
    from lanskap.gallery.record import save_result
    from lanskap.generation.lora import resolve_lora
    from lanskap.generation.output import check_format, ensure_writable_dir
    from lanskap.prompts.lora_tags import extract_lora_tags
    from lanskap.prompts.styles import apply_styles

    fmt = check_format(opts.fmt)  # before anything slow
    settings = settings or opts.settings()
    requests = [apply_styles(r, opts.style or [], settings.home)[0] for r in requests]
    # Fail on missing LoRAs (on any line, on any process) before spending time loading the base model.
    for request in requests:
        for spec in [*extract_lora_tags(request.prompt)[1], *request.loras]:
            resolve_lora(spec.name, settings)
    folder = ensure_writable_dir(opts.out or settings.outputs / mode_folder / date.today().isoformat())
    gallery = None if opts.no_gallery else Gallery(settings.home)
    mine = shard.take(requests) if shard is not None else requests
    if shard is not None and shard.world > 1:
        from accelerate import PartialState

        PartialState()  # puts this process on its own GPU (cuda:LOCAL_RANK)

    from lanskap.cli.common import quiet_libraries, wait_notice
    from lanskap.gpulock import gpu_lock

    quiet_libraries(opts.quiet)
    start, count = time.perf_counter(), 0
    # One model job at a time, also across processes (the web app, the API, other CLI runs).
    with gpu_lock(settings.home, on_wait=wait_notice):
        engine = _engine(opts, settings, replay)
        for request in mine:
            result = _generate(engine, request, opts)
            saved = save_result(result, folder, fmt, gallery, source="cli")
            count += len(saved)
            _report(result, [path for path, _ in saved], [e.id for _, e in saved if e is not None], opts, len(mine))
    if shard is not None and not opts.quiet:
        where = f"process {shard.rank + 1} of {shard.world}: " if shard.world > 1 else ""
        typer.secho(
            f"{where}{len(mine)} of {len(requests)} prompt(s), {count} image(s) in {time.perf_counter() - start:.1f}s",
            err=True,
        )


def _report(result: Any, paths: list[Path], ids: list[int], opts: JobOptions, jobs: int) -> None:
    if opts.as_json:
        summary = {
            "images": [str(p) for p in paths],
            "gallery_ids": ids,
            "seeds": result.seeds,
            "mode": result.request.mode,
            "size": list(result.images[0].size),
            "model": result.model_name,
            "model_hash": result.model_hash,
            "seconds": round(result.seconds, 3),
            "device": result.device,
            "dtype": result.dtype,
            "loras": [lo.__dict__ for lo in result.loras],
            "infotexts": result.infotexts,
            "notices": result.notices,
        }
        # One indented object for one job; JSON lines (one per prompt) for a prompt file.
        typer.echo(json.dumps(summary, indent=2 if jobs == 1 else None))
        return
    for p in paths:
        typer.echo(str(p))
    if not opts.quiet:
        typer.secho(
            f"{len(paths)} image(s), seed {result.seeds[0]}, {result.seconds:.1f}s on {result.device}/{result.dtype}",
            err=True,
        )


def require_prompt(prompt: str | None) -> str:
    if not prompt or not prompt.strip():
        raise LanskapError("give a PROMPT")
    return prompt


def _engine(opts: JobOptions, settings: Any, replay: Any) -> Any:
    """Load the model once (while holding the GPU lock) and say what was loaded."""
    from lanskap.generation.engine import Engine

    engine = Engine(settings=settings, prediction_type=opts.prediction_type)
    loaded = engine.load()
    for notice in loaded.notices:
        typer.secho(notice, err=True, fg=typer.colors.YELLOW)
    if replay is not None and replay.model_hash and replay.model_hash != loaded.hash:
        typer.secho(
            f"note: the image was made with model hash {replay.model_hash}; {loaded.name} is "
            f"{loaded.hash}, so pixels will differ",
            err=True,
            fg=typer.colors.YELLOW,
        )
    return engine


def _generate(engine: Any, request: Any, opts: JobOptions) -> Any:
    """Generate one request with a progress bar, then show the notices the model didn't already give."""
    from lanskap.cli.common import step_bar

    with step_bar(opts.quiet, "generating") as update:
        result = engine.generate(request, progress=update)
    for notice in result.notices[len(engine.model.notices) :]:
        if not opts.quiet:
            typer.secho(notice, err=True, fg=typer.colors.YELLOW)
    return result
