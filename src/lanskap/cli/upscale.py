"""``lanskap upscale``: enlarge pictures with an upscaler (A1111's Extras), or SD upscale them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lanskap.cli.compose import NAMES as COMPOSE_NAMES
from lanskap.cli.job import JobOptions
from lanskap.cli.options import job_command
from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.gallery import Gallery


def register(app: typer.Typer) -> None:
    app.command("upscale")(upscale)


@job_command(
    sizes=False,
    exclude=("num_images", "batch_size", "ensd", "tiling", "style", "fallback", *COMPOSE_NAMES),
    helps={"steps": "SD upscale: steps per tile [20].", "seed": "SD upscale: seed of the first tile (tile k: +k)."},
)
def upscale(
    images: list[Path] = typer.Argument(..., help="Pictures to enlarge (PNG, JPEG, WebP, BMP)."),
    scale: float = typer.Option(2.0, "--scale", help="Upscale by this factor, 1-8."),
    to: str = typer.Option(None, "--to", help="Upscale to WxH instead (0 for one side keeps the ratio)."),
    no_crop: bool = typer.Option(False, "--no-crop", help="With --to: keep the whole picture, don't crop to WxH."),
    upscaler: str = typer.Option("Lanczos", "--upscaler", "-u", help="A name from 'lanskap models upscalers'."),
    upscaler_2: str = typer.Option("None", "--upscaler-2", help="A second upscaler, blended in."),
    visibility_2: float = typer.Option(0.0, "--visibility-2", help="How much of the second upscaler shows, 0-1."),
    sd: bool = typer.Option(False, "--sd", help="SD upscale: repaint the enlarged picture tile by tile (img2img)."),
    prompt: str = typer.Option("", "--prompt", "-p", help="SD upscale: what the picture shows."),
    tile: int = typer.Option(512, "--tile", help="SD upscale: tile size in pixels (multiple of 8)."),
    overlap: int = typer.Option(64, "--overlap", help="SD upscale: pixels the tiles overlap (blended)."),
    denoise: float = typer.Option(0.35, "--denoise", help="SD upscale: how much each tile is repainted, 0-1."),
    *,
    job: JobOptions,
    fields: dict,
) -> None:
    """Upscale pictures; each result goes into the gallery, linked to its source, with its infotext."""
    from lanskap.cli.common import quiet_libraries, step_bar, wait_notice
    from lanskap.gallery import Gallery
    from lanskap.generation.engine import Engine
    from lanskap.generation.output import check_format, ensure_writable_dir
    from lanskap.generation.upscale_params import TiledPass, UpscaleRequest
    from lanskap.gpulock import gpu_lock
    from lanskap.images import load_rgb
    from lanskap.jobs import JobControl
    from lanskap.jobs.generation import output_folder
    from lanskap.jobs.upscale import UpscaleSource, check_sizes, check_upscale, run_upscale

    fmt = check_format(job.fmt)
    settings = job.settings()
    width = height = 0
    if to is not None:
        from lanskap.cli.common import parse_size

        width, height = parse_size(to, "the size to upscale to must be WIDTHxHEIGHT (0 for one side keeps the ratio)")
    tiled = None
    if sd:
        from lanskap.cli.job import build_request

        req = build_request(
            {**fields, "prompt": prompt, "width": tile, "height": tile, "steps": fields.get("steps") or 20}, job
        )
        tiled = TiledPass(req, denoise, overlap)
    elif prompt:
        raise LanskapError("a prompt is for SD upscale; add --sd, or leave the prompt out")
    request = UpscaleRequest(upscaler, scale, width, height, not no_crop, upscaler_2, visibility_2, tiled,
                             watermark=not job.no_watermark)  # fmt: skip
    request = check_upscale(request, settings)
    gallery = None if job.no_gallery else Gallery.open(settings)
    sources = [UpscaleSource(load_rgb(p), p.name, _infotext(p), _gallery_id(gallery, p), p) for p in images]
    check_sizes(request, [s.image for s in sources])
    folder = ensure_writable_dir(output_folder(settings, "upscale", job.out))
    quiet_libraries(job.quiet)
    with gpu_lock(settings.home, on_wait=wait_notice):
        engine = Engine(settings=settings, prediction_type=job.prediction_type)
        with step_bar(job.quiet, "upscaling") as report:
            output = run_upscale(engine, sources, request, folder, fmt=fmt, gallery=gallery, source="cli",
                                 control=JobControl(report=report))  # fmt: skip
    if job.as_json:
        typer.echo(json.dumps(output.summary(), indent=2))
        return
    for path in output.paths:
        typer.echo(str(path))
    for notice in output.notices:
        typer.secho(notice, err=True, fg=typer.colors.YELLOW)
    if not job.quiet:
        sizes = ", ".join(f"{im.width}x{im.height}" for im in output.images)
        typer.secho(f"{len(output.paths)} picture(s) upscaled ({sizes}) in {output.seconds:.1f}s", err=True)


def _gallery_id(gallery: Gallery | None, path: Path) -> int | None:
    """A picture that is in the gallery is linked to by its id, as the web app and API link theirs."""
    entry = gallery.by_path(path) if gallery is not None else None
    return entry.id if entry is not None else None


def _infotext(path: Path) -> str | None:
    """The picture's own parameters, carried on into the upscaled one (none for a foreign picture)."""
    from lanskap.generation.output import read_infotext

    try:
        return read_infotext(path) or None
    except LanskapError:
        return None
