"""Entry point: builds the Typer app and turns LanskapError into one line + exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from lanskap import __version__
from lanskap.errors import LanskapError, SettingError

app = typer.Typer(
    name="lanskap",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: Rich markup would eat "[defaults]" in help texts and show <bool> on flags.
    rich_markup_mode=None,
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
    from lanskap.cli import (
        control,
        dataset,
        edit,
        evaluate,
        gallery,
        generate,
        info,
        mini,
        models,
        panorama,
        serve,
        train,
        ui,
        upscale,
        users,
        watermark,
    )

    generate.register(app)
    edit.register(app)
    upscale.register(app)
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
    app.add_typer(users.app, name="users")
    app.add_typer(panorama.app, name="panorama")
    app.add_typer(control.app, name="control")


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every user error prints one ``error: ...`` line on stderr and exits nonzero."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        rc = app(args=argv, standalone_mode=False)  # non-standalone click returns typer.Exit codes
        if isinstance(rc, int):
            return rc
    except SettingError as exc:  # the core names the setting; here it is a flag
        flags = ", ".join("--" + name.replace("_", "-") for name in exc.settings)
        _error(f"{exc} ({flags})" if flags else str(exc))
        return exc.exit_code
    except LanskapError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as exc:
        if _is_click_exception(exc):  # usage errors arrive here in non-standalone mode
            _error(usage_line(exc))
            return int(getattr(exc, "exit_code", 2))
        _error(internal_error_line(exc))
        return 1
    return 0


def _error(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)


def _is_click_exception(exc: BaseException) -> bool:
    """True for click's exceptions, whichever click module raised them.

    typer 0.29 vendors its own click (``typer._click``), older typers use the ``click``
    package; an ``isinstance`` check against one misses the other, so match by class name.
    """
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def usage_line(exc: BaseException) -> str:
    """Click's message (with its "Did you mean" hint) on one line, plus where help is."""
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    message = " ".join(str(message).split())
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", "") if ctx is not None else ""
    if command:
        message = f"{message} (see '{command} --help')"
    return message


def internal_error_line(exc: BaseException) -> str:
    """Log the full trace to a file and return one line that says where it is."""
    import tempfile
    import time
    import traceback

    from lanskap.config import default_home

    trace = "".join(traceback.format_exception(exc))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    summary = f"internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    for folder in (default_home() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(trace, encoding="utf-8")
        except OSError:
            continue
        return f"{summary}; the full trace is in {path}"
    return f"{summary}; the trace could not be written to a log file"


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
