"""``lanskap info IMAGE``: print the parameters stored in an image."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lanskap.errors import LanskapError


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    image: Path = typer.Argument(..., help="A PNG, JPEG or WebP made by lanskap or A1111."),
    as_json: bool = typer.Option(False, "--json", help="Print the parsed fields as JSON."),
) -> None:
    """Show an image's generation parameters (A1111 infotext)."""
    from lanskap.generation.infotext import parse_infotext
    from lanskap.generation.output import read_infotext

    text = read_infotext(image)
    if not text:
        raise LanskapError(f"{image} holds no generation parameters")
    typer.echo(json.dumps(parse_infotext(text), indent=2, ensure_ascii=False) if as_json else text)
