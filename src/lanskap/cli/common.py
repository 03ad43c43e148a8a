"""Small helpers shared by CLI commands (output only; no generation logic)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator


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
def step_bar(quiet: bool, desc: str) -> Iterator[Callable[[int, int, str], None]]:
    """A tqdm bar fed by a job's ``report(done, total, message)``; a no-op when quiet.

    The bar opens at the first report with a step count, so it never shows an empty "0step".
    """
    if quiet:
        yield lambda done, total, message: None
        return
    from tqdm import tqdm

    bars: list[tqdm] = []

    def update(done: int, total: int, message: str) -> None:
        if not total:
            return
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=True))
        bar = bars[0]
        if bar.total != total:
            bar.total = total
        if ", batch " in message:
            bar.set_postfix_str("batch " + message.split(", batch ")[1].replace(" of ", "/"), refresh=False)
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def parse_size(text: str, hint: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as two whole numbers; ``hint`` says what was expected in the one-line error."""
    from lanskap.errors import LanskapError

    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LanskapError(f"{hint}, not {text!r}") from None
    return width, height


def wait_notice() -> None:
    """Said once when another lanskap process holds the GPU lock (see lanskap.gpulock)."""
    import typer

    typer.echo("waiting for another lanskap job (web app, API or CLI) to finish with the GPU…", err=True)
