"""``lanskap img2img``, ``inpaint`` and ``outpaint``: generation that starts from a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lanskap.cli.job import JobOptions, build_request, require_prompt, run_job
from lanskap.cli.options import FILL, MASK_BLUR, STRENGTH, job_command


def register(app: typer.Typer) -> None:
    app.command("img2img")(img2img)
    app.command("inpaint")(inpaint)
    app.command("outpaint")(outpaint)
    app.command("depth2img")(depth2img)


def _value(given: float | None, default: float) -> float:
    return default if given is None else given


@job_command()
def img2img(
    image: Path = typer.Argument(..., help="The picture to start from (PNG, JPEG, WebP, BMP)."),
    prompt: str = typer.Argument(..., help="What it should become."),
    strength: float = STRENGTH,
    resize_mode: str = typer.Option(
        "just-resize", "--resize-mode", help="just-resize, crop-and-resize, resize-and-fill."
    ),
    *,
    job: JobOptions,
    fields: dict[str, Any],
) -> None:
    """Repaint a picture from a prompt; --strength sets how much changes. Size defaults to the picture's."""
    from lanskap.generation.params import InitImage
    from lanskap.images import load_rgb

    init = InitImage(load_rgb(image), _value(strength, 0.75), resize_mode)
    request = build_request({**fields, "prompt": require_prompt(prompt), "init": init}, job)
    run_job(request, job, "img2img")


@job_command()
def inpaint(
    image: Path = typer.Argument(..., help="The picture to repaint."),
    mask: Path = typer.Argument(..., help="Same size as IMAGE; white = repaint, black = keep."),
    prompt: str = typer.Argument(..., help="What to paint in the masked area."),
    strength: float = STRENGTH,
    mask_blur: float = MASK_BLUR,
    fill: str = FILL,
    only_masked: bool = typer.Option(False, "--only-masked", help="Work on the masked area only, at full resolution."),
    padding: int = typer.Option(32, "--padding", help="Context pixels around the masked area with --only-masked."),
    *,
    job: JobOptions,
    fields: dict[str, Any],
) -> None:
    """Repaint the white part of MASK; the rest of IMAGE is kept. Works with base and inpainting models."""
    from lanskap.generation.params import InitImage, InpaintMask
    from lanskap.images import load_mask, load_rgb

    init = InitImage(load_rgb(image), _value(strength, 0.75))
    m = InpaintMask(load_mask(mask), _value(mask_blur, 4), fill or "original", only_masked, padding)
    request = build_request({**fields, "prompt": require_prompt(prompt), "init": init, "mask": m}, job)
    run_job(request, job, "inpaint")


@job_command(sizes=False)
def outpaint(
    image: Path = typer.Argument(..., help="The picture to extend."),
    prompt: str = typer.Argument(..., help="What the new area shows."),
    left: int = typer.Option(0, "--left", help="Pixels to add on the left."),
    right: int = typer.Option(0, "--right", help="Pixels to add on the right."),
    up: int = typer.Option(0, "--up", help="Pixels to add at the top."),
    down: int = typer.Option(0, "--down", help="Pixels to add at the bottom."),
    overlap: int = typer.Option(8, "--overlap", help="Pixels of the original repainted across the seam."),
    strength: float = STRENGTH,
    mask_blur: float = MASK_BLUR,
    fill: str = FILL,
    *,
    job: JobOptions,
    fields: dict[str, Any],
) -> None:
    """Extend the canvas and paint the new area from the prompt, blending the seam."""
    from lanskap.generation.prepare import outpaint_inputs
    from lanskap.images import load_rgb

    init, m = outpaint_inputs(
        load_rgb(image),
        left=left,
        right=right,
        up=up,
        down=down,
        overlap=overlap,
        blur=_value(mask_blur, 8),
        strength=_value(strength, 0.9),
        fill=fill or "fill",
    )
    request = build_request({**fields, "prompt": require_prompt(prompt), "init": init, "mask": m}, job)
    run_job(request, job, "outpaint")


@job_command()
def depth2img(
    image: Path = typer.Argument(..., help="The picture whose depth and composition to keep."),
    prompt: str = typer.Argument(..., help="What it should become."),
    strength: float = STRENGTH,
    depth_map: Path = typer.Option(None, "--depth-map", help="A depth picture (white near) instead of the estimate."),
    save_depth: bool = typer.Option(False, "--save-depth", help="Save the depth map used beside the images."),
    *,
    job: JobOptions,
    fields: dict[str, Any],
) -> None:
    """Repaint a picture keeping its depth, with an SD 2 depth model (the depth_model setting unless --model)."""
    from lanskap.generation.params import DepthInput, InitImage
    from lanskap.images import load_rgb

    settings = job.settings()
    if job.model is None:
        settings.model = settings.depth_model
    if job.fallback is None:
        settings.fallback = "none"  # no stand-in model runs depth2img: say the depth model is missing
    if job.model_config is None:
        settings.model_config = settings.depth_model  # a single-file depth checkpoint takes a depth model's configs
    given = load_rgb(depth_map, what="depth map") if depth_map is not None else None
    init = InitImage(load_rgb(image), _value(strength, 0.8))
    fields = {**fields, "prompt": require_prompt(prompt), "init": init, "depth": DepthInput(given)}
    job.save_maps = job.save_maps or save_depth
    run_job(build_request(fields, job), job, "depth2img", settings=settings)
