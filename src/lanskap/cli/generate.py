"""``lanskap generate``: text to image (or ``--from`` an image's recorded parameters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lanskap.cli.job import JobOptions, build_request, run_job
from lanskap.cli.options import job_command
from lanskap.errors import LanskapError


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


@job_command()
def generate(
    prompt: str = typer.Argument(None, help="What to draw, any length, A1111 syntax. Optional with --from."),
    from_image: Path = typer.Option(None, "--from", help="Regenerate the image whose parameters this holds."),
    *,
    job: JobOptions,
    fields: dict[str, Any],
) -> None:
    """Generate images from a text prompt."""
    from lanskap.generation.output import read_infotext
    from lanskap.generation.replay import replay_from_infotext

    settings = job.settings()
    merged: dict[str, Any] = {}
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
        merged.update(replay.fields)
        merged["num_images"] = 1
        if job.model is None and replay.model:
            settings.model = replay.model
    elif not prompt:
        raise LanskapError("give a PROMPT, or --from IMAGE")
    merged.update({k: v for k, v in {"prompt": prompt, **fields}.items() if v is not None})
    run_job(build_request(merged, job), job, "txt2img", settings=settings, replay=replay)
