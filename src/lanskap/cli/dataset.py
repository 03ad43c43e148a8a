"""``lanskap dataset prepare | preview | captions``: thin shell over lanskap.data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lanskap.errors import LanskapError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Prepare a captioned image set for LoRA training.")
captions_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="List and fix captions of a prepared dataset."
)
app.add_typer(captions_app, name="captions")


def _parse_colour(text: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise LanskapError(f"unknown colour {text!r}; use a name like white or a hex code like #202020") from None
    return rgb[0], rgb[1], rgb[2]


@app.command("prepare")
def prepare(
    src: Path = typer.Argument(..., help="Folder of images (searched recursively). Never modified."),
    out: Path = typer.Argument(..., help="Where the dataset is written (train/, test/, captions.csv, dataset.json)."),
    min_side: int = typer.Option(512, "--min-side", help="Reject images whose shorter side is below this."),
    background: str = typer.Option("white", "--background", help="Colour that transparency is flattened onto."),
    near_dup: int = typer.Option(4, "--near-duplicate-distance", help="Perceptual-hash bits; -1 turns it off."),
    captioner: str = typer.Option(
        "Salesforce/blip-image-captioning-base", "--captioner", help="BLIP hub id or folder, or 'none'."
    ),
    caption_batch: int = typer.Option(8, "--caption-batch-size", help="Images per BLIP batch."),
    do_enrich: bool = typer.Option(False, "--enrich", help="Append keyword sentences (the thesis's rules)."),
    rules: Path = typer.Option(None, "--rules", help="TOML or YAML enrichment rules [shipped defaults]."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of images held out for testing."),
    seed: int = typer.Option(42, "--seed", help="Seed of the train/test split."),
    tokenizer: str = typer.Option(
        None, "--tokenizer", "--model", help="Model whose CLIP tokenizer counts caption tokens [the base model]."
    ),
    update: bool = typer.Option(False, "--update", help="Refresh an existing dataset, keeping caption edits."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts and rejections as JSON."),
) -> None:
    """Ingest, caption, enrich and split a folder of images."""
    from lanskap.config import load_settings
    from lanskap.data.prepare import PrepareOptions

    opts = PrepareOptions(
        min_side=min_side,
        background=_parse_colour(background),
        near_duplicate_distance=near_dup,
        captioner=captioner,
        caption_batch_size=caption_batch,
        enrich=do_enrich,
        rules=str(rules) if rules else None,
        test_fraction=test_fraction,
        seed=seed,
        tokenizer=tokenizer or load_settings().model,
        update=update,
    )
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        from tqdm import tqdm

        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="img", dynamic_ncols=True)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    if not quiet:
        from lanskap.cli.common import quiet_libraries

        quiet_libraries(False)
    from lanskap.cli.common import wait_notice
    from lanskap.jobs import JobControl
    from lanskap.jobs.dataset import run_dataset

    control = JobControl(on_wait=wait_notice)
    manifest = run_dataset(src, out, opts, load_settings(), control=control, stages=progress)
    counts = manifest["counts"]
    if as_json:
        typer.echo(json.dumps({"out": str(out), "counts": counts, "rejected": manifest["rejected"]}, indent=2))
        return
    typer.echo(
        f"{counts['images']} images ({counts['train']} train, {counts['test']} test) in {out}; "
        f"captions: {', '.join(f'{k} {v}' for k, v in counts['caption_sources'].items())}"
    )
    if manifest["tokens_counted"]:
        over = [it for it in manifest["items"] if it["over_token_window"]]
        typer.echo(f"{len(over)} caption(s) longer than CLIP's 77-token window")
        for it in over:
            typer.echo(f"  {it['file']}: {it['tokens'] + 2} tokens")
    else:
        typer.secho("token lengths not counted: no CLIP tokenizer available (give --tokenizer MODEL)", err=True)
    for r in manifest["rejected"]:
        typer.echo(f"rejected {r['source']}: {r['reason']}")


@app.command("preview")
def preview(
    out: Path = typer.Argument(..., help="A prepared dataset."),
    resolution: int = typer.Option(768, "--resolution", help="Training resolution for the augmentation samples."),
    jitter: float = typer.Option(0.1, "--color-jitter", help="Colour jitter strength shown."),
    samples: int = typer.Option(4, "--samples", help="Rows in the augmentation grid."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write preview/contact-sheet.png and preview/augmentations.png."""
    from lanskap.data.augment import Augment
    from lanskap.data.preview import augmentation_grid, contact_sheet

    sheet = contact_sheet(out, out / "preview" / "contact-sheet.png")
    aug = Augment(resolution, jitter=jitter)
    grid = augmentation_grid(out, out / "preview" / "augmentations.png", aug, samples, seed)
    typer.echo(str(sheet))
    typer.echo(str(grid))


@captions_app.command("list")
def captions_list(
    out: Path = typer.Argument(...),
    search: str = typer.Option(None, "--search", help="Only captions or files containing this text."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print every caption with its file, split and source."""
    from lanskap.data.edit import list_captions

    items = list_captions(out, search)
    if as_json:
        keys = ("file", "split", "caption", "caption_source", "tokens")
        typer.echo(json.dumps([{k: it[k] for k in keys} for it in items], indent=2, ensure_ascii=False))
        return
    for it in items:
        typer.echo(f"{it['file']}\t[{it['caption_source']}]\t{it['caption']}")


@captions_app.command("set")
def captions_set(
    out: Path = typer.Argument(...), image: str = typer.Argument(...), text: str = typer.Argument(...)
) -> None:
    """Set one image's caption (IMAGE: its file name, dataset path or source path)."""
    from lanskap.data.edit import set_caption

    it = set_caption(out, image, text)
    typer.echo(f"{it['file']}: {it['caption']}")


@captions_app.command("replace")
def captions_replace(
    out: Path = typer.Argument(...),
    old: str = typer.Argument(...),
    new: str = typer.Argument(...),
    regex: bool = typer.Option(False, "--regex", help="OLD is a regular expression."),
) -> None:
    """Replace text in every caption."""
    from lanskap.data.edit import replace_text

    typer.echo(f"{replace_text(out, old, new, regex)} caption(s) changed")


@captions_app.command("export")
def captions_export(out: Path = typer.Argument(...), csv_path: Path = typer.Argument(..., metavar="CSV")) -> None:
    """Write every caption to a CSV (file, caption, split, source, caption_source) for editing."""
    from lanskap.data.edit import export_csv

    typer.echo(f"{export_csv(out, csv_path)} caption(s) written to {csv_path}")


@captions_app.command("import")
def captions_import(out: Path = typer.Argument(...), csv_path: Path = typer.Argument(..., metavar="CSV")) -> None:
    """Apply captions from a CSV with 'file' and 'caption' columns."""
    from lanskap.data.edit import import_csv

    typer.echo(f"{import_csv(out, csv_path)} caption(s) changed")
