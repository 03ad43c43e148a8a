"""``lanskap generate``: text to image (or ``--from`` an image's recorded parameters, or ``--prompts`` a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lanskap.cli.job import JobOptions, build_request, request_fields, run_job, run_jobs
from lanskap.cli.options import job_command
from lanskap.errors import LanskapError


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


@job_command()
def generate(
    prompt: str = typer.Argument(None, help="What to draw, any length, A1111 syntax. Optional with --from."),
    from_image: Path = typer.Option(None, "--from", help="Regenerate the image whose parameters this holds."),
    prompts_file: Path = typer.Option(
        None,
        "--prompts",
        help="A .txt, .jsonl or .csv of prompts, one job per line; shared out under `accelerate launch`.",
    ),
    *,
    job: JobOptions,
    fields: dict[str, Any],
) -> None:
    """Generate images from a text prompt."""
    from lanskap.generation.output import read_infotext
    from lanskap.generation.replay import replay_from_infotext

    settings = job.settings()
    if prompts_file is not None:
        from lanskap.generation.batchfile import Shard, plan_requests, read_prompt_file

        if prompt or from_image:
            raise LanskapError("--prompts reads the prompts from the file; give no PROMPT or --from with it")
        requests = plan_requests(read_prompt_file(prompts_file), request_fields(fields, job))
        run_jobs(requests, job, "txt2img", settings=settings, shard=Shard.from_env())
        return
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
