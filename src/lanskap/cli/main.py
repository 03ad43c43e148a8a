"""Entry point: builds the Typer app and turns LanskapError into one line + exit code."""

from __future__ import annotations

import os
import sys

import typer

from lanskap import __version__
from lanskap.errors import LanskapError

app = typer.Typer(
    name="lanskap",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Fantasy-landscape concept art from text with Stable Diffusion 2.1 and LoRA.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lanskap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """lanskap: generate, fine-tune and evaluate fantasy landscapes."""


def _register() -> None:
    from lanskap.cli import dataset, edit, evaluate, gallery, generate, info, mini, models, serve, train, ui, watermark

    generate.register(app)
    edit.register(app)
    info.register(app)
    train.register(app)
    evaluate.register(app)
    ui.register(app)
    serve.register(app)
    app.add_typer(models.app, name="models")
    app.add_typer(watermark.app, name="watermark")
    app.add_typer(dataset.app, name="dataset")
    app.add_typer(gallery.app, name="gallery")
    app.add_typer(mini.app, name="mini")


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print ``error: ...`` on stderr and exit nonzero."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        rc = app(args=argv, standalone_mode=False)  # non-standalone click returns typer.Exit codes
        if isinstance(rc, int):
            return rc
    except LanskapError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
