"""``lanskap generate``: parse flags, call the engine, save the files."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer

from lanskap.errors import LanskapError


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    prompt: str = typer.Argument(None, help="What to draw. Optional with --from."),
    negative_prompt: str = typer.Option(None, "--negative-prompt", "-n", help="What to avoid."),
    seed: int = typer.Option(None, "--seed", "-s", help="Seed; random (and recorded) when not given."),
    steps: int = typer.Option(None, "--steps", help="Denoising steps, 1-150 [25]."),
    guidance: float = typer.Option(None, "--guidance", "--cfg", help="Classifier-free guidance scale [7.5]."),
    width: int = typer.Option(None, "--width", "-W", help="Multiple of 8, 64-2048 [model's native size]."),
    height: int = typer.Option(None, "--height", "-H", help="Multiple of 8, 64-2048 [model's native size]."),
    num_images: int = typer.Option(None, "--num-images", "-N", help="How many images [1]."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Images per forward pass [1]."),
    scheduler: str = typer.Option(None, "--scheduler", "--sampler", help="e.g. 'DPM++ 2M Karras', 'Euler a'."),
    lora: list[str] = typer.Option(None, "--lora", help="PATH_OR_NAME[:SCALE]; repeatable."),
    model: str = typer.Option(None, "--model", "-m", help="Hub id, diffusers folder or .safetensors file."),
    model_config: str = typer.Option(None, "--model-config", help="Configs for a single-file checkpoint."),
    prediction_type: str = typer.Option(None, "--prediction-type", help="v_prediction or epsilon."),
    device: str = typer.Option(None, "--device", help="auto, cuda, mps or cpu."),
    dtype: str = typer.Option(None, "--dtype", help="auto, fp32, fp16 or bf16."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder."),
    fmt: str = typer.Option("png", "--format", "-f", help="png, jpg or webp."),
    from_image: Path = typer.Option(None, "--from", help="Regenerate the image whose parameters this holds."),
    lora_dir: list[Path] = typer.Option(None, "--lora-dir", help="Extra folder to look up LoRA names in."),
    allow_pickle: bool = typer.Option(None, "--allow-pickle", help="Allow pickled .ckpt/.bin/.pt weights."),
    fallback: str = typer.Option(None, "--fallback", help="none, or tiny: use a tiny random model if needed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Generate images from a text prompt."""
    from lanskap.config import load_settings
    from lanskap.generation.lora import resolve_lora
    from lanskap.generation.output import check_format, ensure_writable_dir, read_infotext, save_image
    from lanskap.generation.params import GenerationRequest, LoraSpec
    from lanskap.generation.replay import replay_from_infotext
    from lanskap.prompts.lora_tags import extract_lora_tags

    fmt = check_format(fmt)
    settings = load_settings(
        model=model,
        model_config=model_config,
        device=device,
        dtype=dtype,
        output_dir=out,
        allow_pickle=allow_pickle,
        fallback=fallback,
        lora_dirs=lora_dir or None,
    )
    fields: dict = {}
    if from_image is not None:
        text = read_infotext(from_image)
        if not text:
            raise LanskapError(f"{from_image} holds no generation parameters")
        replay = replay_from_infotext(text)
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
    fields["loras"] = tuple(LoraSpec.parse(s) for s in lora or [])
    request = GenerationRequest(**fields).validate()
    # Fail on missing LoRAs before spending time loading the base model.
    for spec in [*extract_lora_tags(request.prompt)[1], *request.loras]:
        resolve_lora(spec.name, settings)
    folder = ensure_writable_dir(out or settings.outputs / "txt2img" / date.today().isoformat())

    from lanskap.cli.common import quiet_libraries, step_bar
    from lanskap.generation.engine import Engine

    quiet_libraries(quiet)
    engine = Engine(settings=settings, prediction_type=prediction_type)
    loaded = engine.load()
    for notice in loaded.notices:
        typer.secho(notice, err=True, fg=typer.colors.YELLOW)
    if from_image is not None and replay.model_hash and replay.model_hash != loaded.hash:
        typer.secho(
            f"note: the image was made with model hash {replay.model_hash}; {loaded.name} is "
            f"{loaded.hash}, so pixels will differ",
            err=True,
            fg=typer.colors.YELLOW,
        )
    with step_bar(quiet, "generating") as update:
        result = engine.generate(request, progress=update)
    paths = [
        save_image(img, folder, s, text, fmt)
        for img, s, text in zip(result.images, result.seeds, result.infotexts, strict=True)
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "images": [str(p) for p in paths],
                    "seeds": result.seeds,
                    "model": result.model_name,
                    "model_hash": result.model_hash,
                    "seconds": round(result.seconds, 3),
                    "device": result.device,
                    "dtype": result.dtype,
                    "loras": [lo.__dict__ for lo in result.loras],
                    "infotexts": result.infotexts,
                    "notices": result.notices,
                },
                indent=2,
            )
        )
    else:
        for p in paths:
            typer.echo(str(p))
        if not quiet:
            typer.secho(
                f"{len(paths)} image(s), seed {result.seeds[0]}, {result.seconds:.1f}s on "
                f"{result.device}/{result.dtype}",
                err=True,
            )
