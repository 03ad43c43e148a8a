"""``lanskap generate``: text to image (or ``--from`` an image's recorded parameters, or ``--prompts`` a file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lanskap.cli.job import JobOptions, build_request, request_fields, run_job, run_jobs
from lanskap.cli.options import job_command
from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.generation.params import HiresFix


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
    hires_scale: float = typer.Option(None, "--hires-scale", help="Hires fix: upscale the first pass by this, 1-4."),
    hires_steps: int = typer.Option(None, "--hires-steps", help="Hires fix: second-pass steps (0 = as --steps)."),
    hires_denoise: float = typer.Option(None, "--hires-denoise", help="Hires fix: denoising strength [0.7]."),
    hires_upscaler: str = typer.Option(None, "--hires-upscaler", help="Hires fix: Latent [default], Lanczos, ..."),
    hires_resize: str = typer.Option(
        None, "--hires-resize", help="Hires fix: to WxH instead of a scale (0 = keep ratio)."
    ),
    hires_sampler: str = typer.Option(None, "--hires-sampler", help="Hires fix: another sampler for the second pass."),
    hires_prompt: str = typer.Option(None, "--hires-prompt", help="Hires fix: another prompt for the second pass."),
    hires_negative: str = typer.Option(None, "--hires-negative-prompt", help="Hires fix: another negative prompt."),
    *,
    job: JobOptions,
    fields: dict[str, Any],
) -> None:
    """Generate images from a text prompt (with --hires-* options, A1111's hires fix)."""
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
    given = {"scale": hires_scale, "steps": hires_steps, "denoise": hires_denoise, "upscaler": hires_upscaler,
             "sampler": hires_sampler, "prompt": hires_prompt, "negative_prompt": hires_negative}  # fmt: skip
    if hires_resize is not None:
        from lanskap.cli.common import parse_size

        given["resize_x"], given["resize_y"] = parse_size(hires_resize, RESIZE_HINT)
    hires = hires_fix(merged.get("hires"), given)
    if hires is not None:
        merged["hires"] = hires
    run_job(build_request(merged, job), job, "txt2img", settings=settings, replay=replay)


RESIZE_HINT = "the hires resize must be WIDTHxHEIGHT (0 for one side keeps the ratio)"


def hires_fix(recorded: HiresFix | None, given: dict[str, Any]) -> HiresFix | None:
    """The hires fix to run: the recorded one (``--from``) with the given flags over it, or a new one."""
    from dataclasses import replace

    from lanskap.generation.params import HiresFix

    flags = {k: v for k, v in given.items() if v is not None}
    if recorded is None and not flags:
        return None
    return replace(recorded or HiresFix(), **flags)
