"""``lanskap img2img``, ``inpaint`` and ``outpaint``: generation that starts from a picture."""

from __future__ import annotations

from pathlib import Path

import typer

from lanskap.cli import options as o
from lanskap.cli.job import JobOptions, build_request, require_prompt, run_job


def register(app: typer.Typer) -> None:
    app.command("img2img")(img2img)
    app.command("inpaint")(inpaint)
    app.command("outpaint")(outpaint)


def _opts(**kw: object) -> JobOptions:
    from lanskap.generation.output import check_format

    kw["fmt"] = check_format(str(kw["fmt"]))
    kw["lora"] = kw["lora"] or []
    kw["lora_dir"] = kw["lora_dir"] or []
    return JobOptions(**kw)  # type: ignore[arg-type]


def img2img(
    image: Path = typer.Argument(..., help="The picture to start from (PNG, JPEG, WebP, BMP)."),
    prompt: str = typer.Argument(..., help="What it should become."),
    strength: float = o.STRENGTH,
    resize_mode: str = typer.Option(
        "just-resize", "--resize-mode", help="just-resize, crop-and-resize or resize-and-fill."
    ),
    negative_prompt: str = o.NEGATIVE,
    seed: int = o.SEED,
    steps: int = o.STEPS,
    guidance: float = o.GUIDANCE,
    width: int = o.WIDTH,
    height: int = o.HEIGHT,
    num_images: int = o.NUM_IMAGES,
    batch_size: int = o.BATCH_SIZE,
    scheduler: str = o.SCHEDULER,
    lora: list[str] = o.LORA,
    model: str = o.MODEL,
    model_config: str = o.MODEL_CONFIG,
    prediction_type: str = o.PREDICTION,
    device: str = o.DEVICE,
    dtype: str = o.DTYPE,
    out: Path = o.OUT,
    fmt: str = o.FORMAT,
    lora_dir: list[Path] = o.LORA_DIR,
    allow_pickle: bool = o.ALLOW_PICKLE,
    fallback: str = o.FALLBACK,
    no_watermark: bool = o.NO_WATERMARK,
    quiet: bool = o.QUIET,
    as_json: bool = o.JSON,
) -> None:
    """Repaint a picture from a prompt; --strength sets how much changes. Size defaults to the picture's."""
    from lanskap.generation.params import InitImage
    from lanskap.images import load_rgb

    opts = _opts(**{k: v for k, v in locals().items() if k in JobOptions.__dataclass_fields__})
    init = InitImage(load_rgb(image), 0.75 if strength is None else strength, resize_mode)
    request = build_request(
        {
            "prompt": require_prompt(prompt),
            "negative_prompt": negative_prompt,
            "seed": seed,
            "steps": steps,
            "guidance": guidance,
            "width": width,
            "height": height,
            "num_images": num_images,
            "batch_size": batch_size,
            "scheduler": scheduler,
            "init": init,
        },
        opts,
    )
    run_job(request, opts, "img2img")


def inpaint(
    image: Path = typer.Argument(..., help="The picture to repaint."),
    mask: Path = typer.Argument(..., help="Same size as IMAGE; white = repaint, black = keep."),
    prompt: str = typer.Argument(..., help="What to paint in the masked area."),
    strength: float = o.STRENGTH,
    mask_blur: float = o.MASK_BLUR,
    fill: str = o.FILL,
    only_masked: bool = typer.Option(False, "--only-masked", help="Work on the masked area only, at full resolution."),
    padding: int = typer.Option(32, "--padding", help="Context pixels around the masked area with --only-masked."),
    negative_prompt: str = o.NEGATIVE,
    seed: int = o.SEED,
    steps: int = o.STEPS,
    guidance: float = o.GUIDANCE,
    width: int = o.WIDTH,
    height: int = o.HEIGHT,
    num_images: int = o.NUM_IMAGES,
    batch_size: int = o.BATCH_SIZE,
    scheduler: str = o.SCHEDULER,
    lora: list[str] = o.LORA,
    model: str = o.MODEL,
    model_config: str = o.MODEL_CONFIG,
    prediction_type: str = o.PREDICTION,
    device: str = o.DEVICE,
    dtype: str = o.DTYPE,
    out: Path = o.OUT,
    fmt: str = o.FORMAT,
    lora_dir: list[Path] = o.LORA_DIR,
    allow_pickle: bool = o.ALLOW_PICKLE,
    fallback: str = o.FALLBACK,
    no_watermark: bool = o.NO_WATERMARK,
    quiet: bool = o.QUIET,
    as_json: bool = o.JSON,
) -> None:
    """Repaint the white part of MASK; the rest of IMAGE is kept. Works with base and inpainting models."""
    from lanskap.generation.params import InitImage, InpaintMask
    from lanskap.images import load_mask, load_rgb

    opts = _opts(**{k: v for k, v in locals().items() if k in JobOptions.__dataclass_fields__})
    init = InitImage(load_rgb(image), 0.75 if strength is None else strength)
    m = InpaintMask(load_mask(mask), 4 if mask_blur is None else mask_blur, fill or "original", only_masked, padding)
    request = build_request(
        {
            "prompt": require_prompt(prompt),
            "negative_prompt": negative_prompt,
            "seed": seed,
            "steps": steps,
            "guidance": guidance,
            "width": width,
            "height": height,
            "num_images": num_images,
            "batch_size": batch_size,
            "scheduler": scheduler,
            "init": init,
            "mask": m,
        },
        opts,
    )
    run_job(request, opts, "inpaint")


def outpaint(
    image: Path = typer.Argument(..., help="The picture to extend."),
    prompt: str = typer.Argument(..., help="What the new area shows."),
    left: int = typer.Option(0, "--left", help="Pixels to add on the left."),
    right: int = typer.Option(0, "--right", help="Pixels to add on the right."),
    up: int = typer.Option(0, "--up", help="Pixels to add at the top."),
    down: int = typer.Option(0, "--down", help="Pixels to add at the bottom."),
    overlap: int = typer.Option(8, "--overlap", help="Pixels of the original repainted across the seam."),
    strength: float = o.STRENGTH,
    mask_blur: float = o.MASK_BLUR,
    fill: str = o.FILL,
    negative_prompt: str = o.NEGATIVE,
    seed: int = o.SEED,
    steps: int = o.STEPS,
    guidance: float = o.GUIDANCE,
    num_images: int = o.NUM_IMAGES,
    batch_size: int = o.BATCH_SIZE,
    scheduler: str = o.SCHEDULER,
    lora: list[str] = o.LORA,
    model: str = o.MODEL,
    model_config: str = o.MODEL_CONFIG,
    prediction_type: str = o.PREDICTION,
    device: str = o.DEVICE,
    dtype: str = o.DTYPE,
    out: Path = o.OUT,
    fmt: str = o.FORMAT,
    lora_dir: list[Path] = o.LORA_DIR,
    allow_pickle: bool = o.ALLOW_PICKLE,
    fallback: str = o.FALLBACK,
    no_watermark: bool = o.NO_WATERMARK,
    quiet: bool = o.QUIET,
    as_json: bool = o.JSON,
) -> None:
    """Extend the canvas and paint the new area from the prompt, blending the seam."""
    from lanskap.generation.prepare import outpaint_inputs
    from lanskap.images import load_rgb

    opts = _opts(**{k: v for k, v in locals().items() if k in JobOptions.__dataclass_fields__})
    init, m = outpaint_inputs(
        load_rgb(image),
        left=left,
        right=right,
        up=up,
        down=down,
        overlap=overlap,
        blur=8 if mask_blur is None else mask_blur,
        strength=0.9 if strength is None else strength,
        fill=fill or "fill",
    )
    request = build_request(
        {
            "prompt": require_prompt(prompt),
            "negative_prompt": negative_prompt,
            "seed": seed,
            "steps": steps,
            "guidance": guidance,
            "num_images": num_images,
            "batch_size": batch_size,
            "scheduler": scheduler,
            "init": init,
            "mask": m,
        },
        opts,
    )
    run_job(request, opts, "outpaint")
