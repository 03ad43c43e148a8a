"""``lanskap panorama preview FILE``: see a 360° picture as a camera in a game would."""

from __future__ import annotations

import io
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="360° panoramas: perspective previews.")


@app.command("preview")
def preview(
    image: Path = typer.Argument(..., help="A 2:1 (equirectangular) picture."),
    out: Path = typer.Option(None, "--out", "-o", help="Where to write the sheet [FILE-preview.png beside it]."),
    fov: float = typer.Option(90.0, "--fov", help="Each view's field of view in degrees, 10-170."),
    size: int = typer.Option(256, "--size", help="Each view's side in pixels, 64-1024."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Write six perspective views of IMAGE (front, right, back, left, up, down) as one PNG sheet."""
    from lanskap.errors import LanskapError
    from lanskap.generation.skyview import preview as render
    from lanskap.images import load_rgb
    from lanskap.io import atomic_write_bytes

    if not 64 <= size <= 1024:
        raise LanskapError(f"the view size must be between 64 and 1024 pixels, got {size}")
    sheet = render(load_rgb(image), fov, size)
    target = out or image.with_name(f"{image.stem}-preview.png")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    try:
        atomic_write_bytes(target, buf.getvalue(), replace=force)
    except FileExistsError:
        raise LanskapError(f"{target} exists; give another --out, or --force to replace it") from None
    typer.echo(str(target))
