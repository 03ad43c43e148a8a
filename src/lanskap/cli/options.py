"""The flags every generating command shares, declared once and added to each command.

Typer has no option groups, so ``job_command`` appends these parameters to a
command's signature and hands them to it as one ``JobOptions`` plus a dict of
request fields. Names, defaults and help text therefore cannot drift apart.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from lanskap.cli.compose import COMPOSE_FLAGS
from lanskap.cli.control import CONTROL_FLAGS
from lanskap.cli.job import JobOptions

# (name, type, typer option): fields of GenerationRequest. The speed levers are shared with
# ``lanskap mini score``, so the quality gate runs with exactly the options of ``generate``.
LEVER_FLAGS: list[tuple[str, Any, Any]] = [
    (
        "cache_interval",
        int,
        typer.Option(None, "--cache-interval", help="Run the deep UNet blocks every N steps (DeepCache); 0 = off."),
    ),
    (
        "cache_start",
        float,
        typer.Option(None, "--cache-start", help="Share of the steps run in full before caching starts, 0-0.99."),
    ),
    (
        "token_merging",
        float,
        typer.Option(None, "--token-merging", help="Share of self-attention tokens merged, 0-0.75 (ToMe); 0 = off."),
    ),
    (
        "token_merging_downsample",
        int,
        typer.Option(None, "--token-merging-downsample", help="Deepest level merged: 1, 2, 4 or 8 [1]."),
    ),
]
SPEED = typer.Option(
    None, "--speed", help="quality, balanced or fast: the levers a run leaves unset [balanced; quality = none]."
)
REQUEST_FLAGS: list[tuple[str, Any, Any]] = [
    ("negative_prompt", str, typer.Option(None, "--negative-prompt", "-n", help="What to avoid.")),
    ("prompt_2", str, typer.Option(None, "--prompt-2", help="SDXL: a prompt for the second text encoder only.")),
    (
        "refiner",
        str,
        typer.Option(None, "--refiner", help="SDXL: a refiner model (name, folder, file) for the last steps."),
    ),
    (
        "refiner_switch_at",
        float,
        typer.Option(
            None, "--refiner-switch", "--refiner-switch-at", help="Share of the steps before the refiner [0.8]."
        ),
    ),
    ("seed", int, typer.Option(None, "--seed", "-s", help="Seed; random (and recorded) when not given.")),
    ("steps", int, typer.Option(None, "--steps", help="Denoising steps, 1-150 [25].")),
    ("guidance", float, typer.Option(None, "--guidance", "--cfg", help="Classifier-free guidance scale [7.5].")),
    ("num_images", int, typer.Option(None, "--num-images", "-N", help="How many images [1].")),
    ("batch_size", int, typer.Option(None, "--batch-size", "-b", help="Images per forward pass [1].")),
    ("scheduler", str, typer.Option(None, "--scheduler", "--sampler", help="e.g. 'DPM++ 2M Karras', 'Euler a'.")),
    ("clip_skip", int, typer.Option(None, "--clip-skip", help="Stop the text encoder N-1 layers early, 1-12 [1].")),
    ("ensd", int, typer.Option(None, "--ensd", help="Eta noise seed delta (A1111's ENSD), text-to-image [0].")),
    ("tiling", str, typer.Option(None, "--tiling", help="Seamless tiling along x, y or xy (A1111's tiling).")),
    *COMPOSE_FLAGS,
    *CONTROL_FLAGS,
    *LEVER_FLAGS,
]
SIZE_FLAGS: list[tuple[str, Any, Any]] = [
    ("width", int, typer.Option(None, "--width", "-W", help="Multiple of 8, 64-2048.")),
    ("height", int, typer.Option(None, "--height", "-H", help="Multiple of 8, 64-2048.")),
]
# fields of JobOptions
JOB_FLAGS: list[tuple[str, Any, Any]] = [
    (
        "lora",
        list[str],
        typer.Option(
            None, "--lora", metavar="<str>", help="PATH_OR_NAME[:SCALE]; repeatable. <lora:NAME:W> works too."
        ),
    ),
    (
        "style",
        list[str],
        typer.Option(
            None, "--style", metavar="<str>", help="A style from $LANSKAP_HOME/styles.csv (A1111 format); repeatable."
        ),
    ),
    ("model", str, typer.Option(None, "--model", "-m", help="Hub id, diffusers folder or .safetensors file.")),
    ("model_config", str, typer.Option(None, "--model-config", help="Configs for a single-file checkpoint.")),
    ("model_family", str, typer.Option(None, "--model-family", help="auto, sd or sdxl: what a single file is [auto].")),
    ("vae", str, typer.Option(None, "--vae", help="A VAE instead of the model's: hub id, VAE folder or .safetensors.")),
    ("prediction_type", str, typer.Option(None, "--prediction-type", help="v_prediction or epsilon.")),
    ("device", str, typer.Option(None, "--device", help="auto, cuda, mps or cpu.")),
    ("dtype", str, typer.Option(None, "--dtype", help="auto, fp32, fp16 or bf16.")),
    ("out", Path, typer.Option(None, "--out", "-o", help="Output folder.")),
    ("fmt", str, typer.Option("png", "--format", "-f", help="png, jpg or webp.")),
    (
        "lora_dir",
        list[Path],
        typer.Option(None, "--lora-dir", metavar="<path>", help="Extra folder to look up LoRA names in."),
    ),
    ("allow_pickle", bool, typer.Option(None, "--allow-pickle", help="Allow pickled .ckpt/.bin/.pt weights.")),
    (
        "fallback",
        str,
        typer.Option(
            None, "--fallback", help="If the base can't be had: mini (built-in model) [default], tiny (random), none."
        ),
    ),
    (
        "low_memory",
        str,
        typer.Option(None, "--low-memory", help="auto, on, off: attention slicing, VAE tiling, CPU offload."),
    ),
    ("compile", bool, typer.Option(None, "--compile", help="torch.compile the UNet (slow first image, cached).")),
    ("threads", int, typer.Option(None, "--threads", help="CPU threads for torch [physical cores].")),
    ("speed", str, SPEED),
    ("no_watermark", bool, typer.Option(False, "--no-watermark", help="Do not embed the invisible SD watermark.")),
    ("no_gallery", bool, typer.Option(False, "--no-gallery", help="Do not record the images in the gallery.")),
    ("save_maps", bool, typer.Option(False, "--save-maps", help="Save the control and depth maps beside the images.")),
    ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bars.")),
    ("as_json", bool, typer.Option(False, "--json", help="Print a JSON summary on stdout.")),
]

# The model flags of the long-running servers (lanskap ui, lanskap serve), declared once.
SERVER_MODEL = typer.Option(None, "--model", "-m", help="Base model: hub id, folder or .safetensors.")
SERVER_DEVICE = typer.Option(None, "--device", help="auto, cuda, mps or cpu.")
SERVER_DTYPE = typer.Option(None, "--dtype", help="auto, fp32, fp16 or bf16.")
SERVER_LORA_DIR = typer.Option(None, "--lora-dir", metavar="<path>", help="Extra LoRA folder; repeatable.")
SERVER_VAE = typer.Option(None, "--vae", help="A VAE instead of the model's: hub id, VAE folder or .safetensors.")
SERVER_FALLBACK = typer.Option(
    None, "--fallback", help="If SD 2.1 is absent: mini (built-in model) [default], tiny (random), none."
)

STRENGTH = typer.Option(None, "--strength", "--denoising-strength", help="0.0 keeps the image, 1.0 ignores it.")
MASK_BLUR = typer.Option(None, "--mask-blur", help="Feather the mask edge by this many pixels.")
FILL = typer.Option(None, "--fill", "--masked-content", help="Masked area starts from: fill, original, noise.")


def job_command(
    sizes: bool = True, exclude: tuple[str, ...] = (), helps: dict[str, str] | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the shared flags (less ``exclude``, with ``helps`` reworded for it).

    The command receives ``job: JobOptions`` and ``fields: dict``.
    """
    flags = [f for f in (*REQUEST_FLAGS, *(SIZE_FLAGS if sizes else []), *JOB_FLAGS) if f[0] not in exclude]
    for i, (name, typ, opt) in enumerate(flags):
        if helps and name in helps:
            opt = copy.copy(opt)
            opt.help = helps[name]
            flags[i] = (name, typ, opt)
    job_names = [n for n, _, _ in JOB_FLAGS if n not in exclude]

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(func).parameters.values() if p.name not in ("job", "fields")]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=t) for n, t, opt in flags]

        @functools.wraps(func)
        def command(**kwargs: Any) -> None:
            shared = {n: kwargs.pop(n) for n, _, _ in flags}
            job = JobOptions(**{n: shared.pop(n) for n in job_names})
            job.lora, job.lora_dir, job.style = job.lora or [], job.lora_dir or [], job.style or []
            return func(**kwargs, job=job, fields=shared)

        command.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
        own_hints = {k: v for k, v in func.__annotations__.items() if k not in ("job", "fields")}
        command.__annotations__ = {**own_hints, **{n: t for n, t, _ in flags}}
        return command

    return decorate
