"""``lanskap gallery ...``: list, show, delete and export what has been generated."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lanskap.errors import LanskapError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The gallery of every generated image.")


def _gallery():  # type: ignore[no-untyped-def]
    from lanskap.config import load_settings
    from lanskap.gallery import Gallery

    return Gallery.open(load_settings())


@app.command("list")
def list_cmd(
    search: str = typer.Option(None, "--search", "-s", help="Words that must all appear in the prompt."),
    lora: str = typer.Option(None, "--lora", help="Only images made with this LoRA."),
    size: str = typer.Option(None, "--size", help="Only this size, e.g. 768x768."),
    since: str = typer.Option(None, "--since", help="Made on or after this date (YYYY-MM-DD)."),
    seed: int = typer.Option(None, "--seed", help="Only images with this seed."),
    mode: str = typer.Option(None, "--mode", help="Only txt2img, img2img or inpaint images."),
    model: str = typer.Option(None, "--model", help="Only images made with this model (its name)."),
    limit: int = typer.Option(20, "--limit", help="How many to show [20]."),
    offset: int = typer.Option(0, "--offset", help="Skip this many (paging)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Newest first."""
    width = height = None
    if size:
        from lanskap.cli.common import parse_size

        width, height = parse_size(size, "size must look like 768x768")
    from lanskap.generation.params import TASKS

    if mode is not None and mode not in TASKS:
        raise LanskapError(f"mode must be one of {', '.join(TASKS)}, not {mode!r}")
    entries, total = _gallery().query(
        search, lora=lora, width=width, height=height, since=since, seed=seed, mode=mode, model=model,
        limit=limit, offset=offset,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"total": total, "images": [e.to_dict() for e in entries]}, indent=2))
        return
    if not entries:
        filtered = any(v for v in (search, lora, size, since, mode, model)) or seed is not None or offset
        typer.echo("no images match" if filtered else "no images yet: make some with 'lanskap generate \"a castle\"'")
        return
    typer.echo(f"{'id':>6}  {'made':<19}  {'size':<9}  {'seed':<10}  prompt")
    for e in entries:
        loras = " ".join(f"<{lo['name']}:{lo['scale']:g}>" for lo in e.loras)
        prompt = e.prompt if len(e.prompt) <= 70 else e.prompt[:67] + "..."
        made, size = e.created[:19].replace("T", " "), f"{e.width}x{e.height}"
        typer.echo(f"{e.id:>6}  {made}  {size:<9}  {e.seed:<10}  {prompt} {loras}")
    typer.echo(f"{len(entries)} of {total}", err=True)


@app.command("show")
def show_cmd(
    image_id: int = typer.Argument(..., help="Gallery id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every recorded parameter of one image."""
    e = _gallery().get(image_id)
    if as_json:
        typer.echo(json.dumps(e.to_dict(), indent=2))
        return
    typer.echo(f"id {e.id}  {e.path}")
    typer.echo(f"made {e.created} by {e.source} in {e.seconds or 0:.2f}s on {e.device}/{e.dtype}")
    typer.echo(e.infotext)


@app.command("delete")
def delete_cmd(
    ids: list[int] = typer.Argument(..., help="Gallery ids."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete images: the file and the row."""
    gallery = _gallery()
    entries = [gallery.get(i) for i in ids]
    if not yes:
        typer.confirm(f"delete {len(entries)} image(s) and their files?", abort=True)
    n = gallery.delete([e.id for e in entries])
    typer.echo(f"deleted {n} image(s)")


@app.command("export")
def export_cmd(
    ids: list[int] = typer.Argument(..., help="Gallery ids."),
    zip_path: Path = typer.Option(..., "--zip", help="The ZIP file to write."),
    fmt: str = typer.Option(None, "--format", "-f", help="Convert to png, jpg or webp [as stored]."),
) -> None:
    """Write images (with their parameters) and gallery.json into a ZIP."""
    from lanskap.gallery.export import export_zip

    path = export_zip(_gallery(), ids, zip_path, fmt)
    typer.echo(str(path))


@app.command("grid")
def grid_cmd(
    ids: list[int] = typer.Argument(..., help="Gallery ids, in the order to lay out (row by row)."),
    out: Path = typer.Option(..., "--out", "-o", help="The picture to write (.png, .jpg or .webp)."),
) -> None:
    """One picture of several images, as A1111 saves a batch's grid (with the first one's parameters)."""
    from lanskap.gallery.export import export_grid

    typer.echo(str(export_grid(_gallery(), ids, out)))


@app.command("check")
def check_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check the database and its files; exit 1 when something needs 'lanskap gallery repair'."""
    from lanskap.config import load_settings
    from lanskap.gallery.store import Gallery, GalleryDamagedError

    settings = load_settings()
    try:
        gallery = Gallery.open(settings)
        report: dict[str, object] = {"database": gallery.location, "integrity": gallery.integrity(), **gallery.check()}
    except GalleryDamagedError as exc:
        report = {"database": str(settings.home / "gallery.sqlite3"), "integrity": [str(exc)]}
    bad = any(report.get(k) for k in ("integrity", "missing_files", "unfinished"))
    if as_json:
        typer.echo(json.dumps({**report, "ok": not bad}, indent=2))
    else:
        for key, label in (("integrity", "database damage"), ("missing_files", "rows whose file is gone"),
                           ("unfinished", "unfinished rows")):  # fmt: skip
            for item in report.get(key) or []:  # type: ignore[attr-defined]
                typer.echo(f"{label}: {item}")
        if report.get("unseen"):  # another machine's folders: not this machine's to judge
            typer.echo(f"rows in folders this machine can't see (left to the machines that mount them): "
                       f"{len(report['unseen'])}")  # type: ignore[arg-type]  # fmt: skip
        typer.echo("gallery ok" if not bad else "run 'lanskap gallery repair' to rebuild it from the image files")
    if bad:
        raise typer.Exit(1)


@app.command("repair")
def repair_cmd(
    folder: list[Path] = typer.Option(
        None, "--folder", metavar="<path>", help="Another folder of lanskap images to index; repeatable."
    ),
) -> None:
    """Rebuild the database from the old rows that can be read and the images' own infotexts.

    The old database is kept beside the new one.
    """
    from lanskap.config import load_settings
    from lanskap.gallery.rebuild import rebuild

    settings = load_settings()
    if settings.gallery_url:
        raise LanskapError(
            "the gallery is in PostgreSQL, which keeps its own pages whole; repair rebuilds an SQLite gallery "
            "(unset the gallery URL to repair the home folder's)"
        )
    report = rebuild(settings.home, [settings.outputs, *(folder or [])])
    typer.echo(
        f"gallery rebuilt: {report.copied} images kept from the old database, {report.indexed} indexed from files"
    )
    if report.old_database is not None:
        typer.echo(f"the old database is kept as {report.old_database}")
    for path in report.skipped[:20]:
        typer.echo(f"skipped (no lanskap infotext): {path}", err=True)


@app.command("migrate")
def migrate_cmd(
    to: str = typer.Option(..., "--to", metavar="<url>", help="postgresql://user:password@host:port/db"),
) -> None:
    """Copy this home's SQLite gallery into PostgreSQL, every row with its id; the files stay where they are.

    Then set LANSKAP_GALLERY_URL (or gallery_url in the config file) to the same URL.
    """
    from lanskap.config import load_settings
    from lanskap.gallery import Gallery
    from lanskap.gallery.migrate import migrate

    settings = load_settings()
    source, target = Gallery(settings.home), Gallery(settings.home, url=to)
    report = migrate(source, target)
    typer.echo(f"copied {report.copied} image(s) to {target.location}" + (
        f"; {report.already} were there already" if report.already else ""))  # fmt: skip
    if report.unfinished:
        waiting = len(report.unfinished)
        typer.echo(f"not copied: {waiting} image(s) still being added or deleted; run it again", err=True)
    typer.echo(f"now set LANSKAP_GALLERY_URL={target.location} (with its password) to use it")
