"""``lanskap generate``: text to image (or ``--from`` an image's recorded parameters)."""

from __future__ import annotations

from pathlib import Path

import typer

from lanskap.cli import options as o
from lanskap.cli.job import JobOptions, build_request, run_job
from lanskap.errors import LanskapError


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    prompt: str = typer.Argument(None, help="What to draw, any length, A1111 syntax. Optional with --from."),
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
    from_image: Path = typer.Option(None, "--from", help="Regenerate the image whose parameters this holds."),
    lora_dir: list[Path] = o.LORA_DIR,
    allow_pickle: bool = o.ALLOW_PICKLE,
    fallback: str = o.FALLBACK,
    no_watermark: bool = o.NO_WATERMARK,
    quiet: bool = o.QUIET,
    as_json: bool = o.JSON,
) -> None:
    """Generate images from a text prompt."""
    from lanskap.generation.output import check_format, read_infotext
    from lanskap.generation.replay import replay_from_infotext

    opts = JobOptions(
        model, model_config, prediction_type, device, dtype, out, check_format(fmt),
        lora or [], lora_dir or [], allow_pickle, fallback, no_watermark, quiet, as_json,
    )  # fmt: skip
    settings = opts.settings()
    fields: dict = {}
    replay = None
    if from_image is not None:
        text = read_infotext(from_image)
        if not text:
            raise LanskapError(f"{from_image} holds no generation parameters")
        replay = replay_from_infotext(text)
        if replay.source_mode != "txt2img":
            typer.secho(
                f"note: {from_image.name} was made by {replay.source_mode}; this remakes it as text-to-image "
                f"with the same prompt, seed and settings",
                err=True,
                fg=typer.colors.YELLOW,
            )
        fields.update(replay.fields)
        fields["num_images"] = 1
        if model is None and replay.model:
            settings.model = replay.model
    elif not prompt:
        raise LanskapError("give a PROMPT, or --from IMAGE")
    given = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "width": width,
        "height": height,
        "num_images": num_images,
        "batch_size": batch_size,
        "scheduler": scheduler,
    }
    fields.update({k: v for k, v in given.items() if v is not None})
    request = build_request(fields, opts)
    run_job(request, opts, "txt2img", settings=settings, replay=replay)
