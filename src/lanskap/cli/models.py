"""``lanskap models ...``: tiny test models, samplers, LoRAs."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Model utilities: tiny models, samplers, LoRAs.")


@app.command("make-tiny")
def make_tiny_cmd(
    out: Path = typer.Argument(..., help="Folder to write."),
    kind: str = typer.Option(
        "sd",
        "--kind",
        help="sd, sd-inpaint, sd-depth, sd-upscale, sdxl, sdxl-refiner, controlnet, depth-estimator, esrgan, blip, "
        "clip or inception.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the random weights."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Write a tiny random-weight model of the real classes (for tests and demos)."""
    from lanskap.cli.common import quiet_libraries
    from lanskap.models.tiny import make_tiny

    quiet_libraries(True)
    path = make_tiny(out, kind, seed=seed, overwrite=overwrite)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    typer.echo(f"{path} ({kind}, {size / 1e6:.1f} MB, random weights)")


@app.command("make-tiny-lora")
def make_tiny_lora_cmd(
    base: Path = typer.Argument(..., help="A tiny model folder from make-tiny."),
    out: Path = typer.Argument(..., help="The .safetensors file to write."),
    rank: int = typer.Option(4, "--rank"),
    seed: int = typer.Option(1, "--seed"),
) -> None:
    """Write a random LoRA for a tiny model (diffusers format; an SDXL one in kohya's, as kohya writes SDXL's)."""
    from lanskap.cli.common import quiet_libraries
    from lanskap.models.family import detect_folder
    from lanskap.models.tiny import make_tiny_lora
    from lanskap.models.tiny_sdxl import make_tiny_sdxl_lora

    quiet_libraries(True)
    make = make_tiny_sdxl_lora if detect_folder(base) == "sdxl" else make_tiny_lora
    typer.echo(str(make(base, out, rank=rank, seed=seed)))


@app.command("to-single-file")
def to_single_file_cmd(
    model: Path = typer.Argument(..., help="A diffusers SD 1.x/2.x or SDXL folder."),
    out: Path = typer.Argument(..., help="The .safetensors checkpoint to write (A1111/ComfyUI layout)."),
    prediction_type: str = typer.Option(None, "--prediction-type", help="Recorded in the file's metadata."),
) -> None:
    """Export a diffusers model as one original-layout .safetensors checkpoint."""
    import json

    from lanskap.models.convert import export_single_file
    from lanskap.models.loader import normalize_prediction_type

    pred = normalize_prediction_type(prediction_type)
    if pred is None:
        sched = model / "scheduler" / "scheduler_config.json"
        pred = json.loads(sched.read_text()).get("prediction_type") if sched.is_file() else None
    typer.echo(str(export_single_file(model, out, prediction_type=pred)))


@app.command("import-inception")
def import_inception_cmd(
    src: Path = typer.Argument(..., help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or a .safetensors)."),
    out: Path = typer.Argument(..., help="New folder for the safetensors copy."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Needed to read a .pth (tensors only)."),
) -> None:
    """Convert the FID Inception weights to safetensors once, for --inception-model."""
    from lanskap.evaluation.inception import import_inception

    path = import_inception(src, out, allow_pickle=allow_pickle)
    typer.echo(f"{path} (FID Inception-v3; use --inception-model {path})")


@app.command("samplers")
def samplers_cmd() -> None:
    """List the sampler names --scheduler accepts."""
    from lanskap.generation.schedulers import sampler_names

    for name in sampler_names():
        typer.echo(name)


@app.command("list")
def list_cmd() -> None:
    """List the base models a server may switch to (the models folder) with their families, and what was passed over."""
    from lanskap.config import load_settings
    from lanskap.models.resolve import MINI_NAME, family_label, scan_models

    settings = load_settings()
    names, skipped = scan_models(settings)
    for name in [MINI_NAME, *names]:
        typer.echo(f"{name}\t{family_label(name, settings) or 'unknown'}")
    for s in skipped:
        typer.echo(f"skipped {s.rel}: {s.reason}", err=True)
    typer.echo(f"{len(names)} in {settings.models_dir}, plus the built-in {MINI_NAME}", err=True)


@app.command("upscalers")
def upscalers_cmd() -> None:
    """List the upscalers (A1111's names): resizes, SD x4 when here, files in $LANSKAP_HOME/upscalers, latent modes."""
    from lanskap.config import load_settings
    from lanskap.upscale.upscalers import LATENT_MODES, installed

    settings = load_settings()
    for up in installed(settings):
        where = f"\t{up.path}" if up.path is not None else ""
        typer.echo(f"{up.name}\t{up.kind}{where}")
    for name in LATENT_MODES:
        typer.echo(f"{name}\tlatent (hires fix only)")


@app.command("loras")
def loras_cmd() -> None:
    """List LoRAs in the LoRA folders."""
    from lanskap.config import load_settings
    from lanskap.generation.lora import list_loras

    for p in list_loras(load_settings()):
        typer.echo(f"{p.stem}\t{p}")


@app.command("import-hypernetwork")
def import_hypernetwork_cmd(
    src: Path = typer.Argument(..., help="An A1111 hypernetwork .pt (read weights-only: tensors, never code)."),
    name: str = typer.Option(None, "--name", help="Name to use in <hypernet:NAME:…> [the file's stem]."),
) -> None:
    """Convert an A1111 hypernetwork once to .safetensors in $LANSKAP_HOME/hypernetworks."""
    from lanskap.config import load_settings
    from lanskap.models.hypernetwork import import_hypernetwork, read_hypernetwork

    settings = load_settings()
    path = import_hypernetwork(src, settings.hypernetworks_dir, name)
    widths = ", ".join(map(str, read_hypernetwork(path).widths))
    typer.echo(f"{path} (context widths {widths}; use <hypernet:{path.stem}:1> in a prompt)")


@app.command("hypernetworks")
def hypernetworks_cmd() -> None:
    """List the hypernetworks in $LANSKAP_HOME/hypernetworks."""
    from lanskap.config import load_settings
    from lanskap.generation.networks import hypernetwork_listing

    for entry in hypernetwork_listing(load_settings()):
        typer.echo(f"{entry['name']}\t{entry['path']}")


@app.command("embeddings")
def embeddings_cmd() -> None:
    """List the embeddings in $LANSKAP_HOME/embeddings: those that fit the configured model, and those skipped."""
    from lanskap.config import load_settings
    from lanskap.generation.engine import Engine
    from lanskap.generation.networks import embedding_listing

    listing = embedding_listing(Engine(settings=load_settings()))
    for name, e in listing["loaded"].items():
        typer.echo(f"{name}\t{e['vectors']} vector(s) of {e['shape']}")
    for name, e in listing["skipped"].items():
        typer.echo(f"skipped {name}: {e['shape']}-wide, made for another base", err=True)


@app.command("import-embedding")
def import_embedding_cmd(
    src: Path = typer.Argument(..., help="An embedding file: .pt, .bin or .safetensors (A1111, kohya, diffusers)."),
    name: str = typer.Option(None, "--name", help="The word a prompt uses [the file's stem]."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Read an old A1111 .pt that only a pickle load reads (trusted files only)."
    ),
) -> None:
    """Convert an embedding once to .safetensors in $LANSKAP_HOME/embeddings."""
    from lanskap.config import load_settings
    from lanskap.prompts.embeddings import import_embedding, read_embedding

    path = import_embedding(src, load_settings().embeddings_dir, name, allow_pickle=allow_pickle)
    emb = read_embedding(path)
    typer.echo(f"{path} ({emb.count} vector(s) of {emb.width}; write {emb.name} in a prompt)")
