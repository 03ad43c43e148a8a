"""Small helpers shared by CLI commands (output only; no generation logic)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


def quiet_libraries(quiet: bool) -> None:
    """Hide diffusers/transformers chatter; keep their load progress bars unless ``quiet``."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity(logging.ERROR)
    tlog.set_verbosity(logging.ERROR)
    if quiet:
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()


@contextlib.contextmanager
def step_bar(quiet: bool, desc: str) -> Iterator:
    """A tqdm bar fed by the engine's Progress events; a no-op when quiet."""
    if quiet:
        yield lambda p: None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="step", dynamic_ncols=True, leave=True)

    def update(p) -> None:  # type: ignore[no-untyped-def]
        if bar.total != p.total:
            bar.total = p.total
        bar.set_postfix_str(f"batch {p.batch}/{p.batches}")
        bar.n = p.done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def wait_notice() -> None:
    """Said once when another lanskap process holds the GPU lock (see lanskap.gpulock)."""
    import typer

    typer.echo("waiting for another lanskap job (web app, API or CLI) to finish with the GPU…", err=True)
