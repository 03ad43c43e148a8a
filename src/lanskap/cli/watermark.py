"""``lanskap watermark check IMAGE``: is the invisible SD watermark there? Exit 0 yes, 1 no."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The invisible DWT-DCT watermark.")


@app.command("check")
def check(
    image: Path = typer.Argument(..., help="Image to examine."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Report whether IMAGE carries the watermark; exit 0 if it does, 1 if it does not."""
    from lanskap.generation.watermark import check_watermark
    from lanskap.images import open_image

    result = check_watermark(open_image(image))
    if as_json:
        typer.echo(json.dumps({"image": str(image), "watermark": result.found, "message": result.message}))
    elif result.found:
        typer.echo(f"{image}: watermark found ({result.message})")
    else:
        typer.echo(f"{image}: no watermark ({result.reason})")
    raise typer.Exit(0 if result.found else 1)
