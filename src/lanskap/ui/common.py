"""What every page of the web app shares: the one Service, friendly errors, job progress, downloads.

The Service is a ``st.cache_resource``: one per server process, so every
browser tab sees the same model, queue and gallery.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import streamlit as st
from streamlit.runtime.scriptrunner import RerunException, StopException

from lanskap.errors import LanskapError, SettingError

if TYPE_CHECKING:
    from lanskap.gallery.store import Entry
    from lanskap.service.queue import Job
    from lanskap.service.service import Service

T = TypeVar("T")


log = logging.getLogger("lanskap.ui")


@st.cache_resource(show_spinner=False)
def service() -> Service:
    """The process's Service, built from the settings ``lanskap ui`` put in the environment."""
    from lanskap.config import load_settings
    from lanskap.service import Service

    # Like ``lanskap serve``: a page's user never opts in to pickles, whatever LANSKAP_ALLOW_PICKLE says.
    settings = load_settings(allow_pickle=False)
    svc = Service(settings, max_pending=int(os.environ.get("LANSKAP_UI_MAX_QUEUE", "8")))
    if os.environ.get("LANSKAP_UI_PRELOAD", "1") == "1":
        svc.submit_load()  # warm the model in the background; the status panel shows it
    return svc


def guarded(page: Callable[[], None]) -> Callable[[], None]:
    """Run a page; a LanskapError becomes its one-line message, anything else a short apology."""

    @functools.wraps(page)
    def run() -> None:
        try:
            page()
        except (RerunException, StopException):
            raise  # Streamlit's own control flow (st.rerun, st.switch_page, st.stop)
        except LanskapError as exc:
            st.error(user_message(exc), icon=":material/warning:")
        except Exception as exc:
            log.exception("page %s failed", page.__name__)
            st.error(f"Something went wrong ({type(exc).__name__}: {exc}). The details are in the server log.")

    return run


def try_action(action: Callable[[], T]) -> T | None:
    """Run a button's action; show a LanskapError next to the button instead of failing the page."""
    try:
        return action()
    except LanskapError as exc:
        st.error(user_message(exc), icon=":material/warning:")
        return None


def user_message(exc: LanskapError) -> str:
    """The core's message, plus the settings it names as a person finds them on the page."""
    if isinstance(exc, SettingError) and exc.settings:
        return f"{exc} (setting: {', '.join(s.replace('_', ' ') for s in exc.settings)})"
    return str(exc)


def finished_header(notices: list[str], made: int, what: str) -> bool:
    """A finished job's notices, then whether it made anything (a warning when it was cancelled first)."""
    for notice in notices:
        st.caption(f":material/info: {notice}")
    if not made:
        st.warning(f"Cancelled before any {what} was finished.", icon=":material/stop_circle:")
    return made > 0


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = round(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def job_progress(svc: Service, job: Job) -> None:
    """A running or queued job's state: its place in the queue, or step x of y with the time left."""
    if job.state == "queued":
        pos = svc.queue.position(job)
        wait = f"Waiting in the queue: number {pos} in line. Only one model job runs at a time."
        st.info(wait, icon=":material/hourglass_top:")
        return
    frac = min(1.0, job.step / job.total) if job.total else 0.0
    text = job.message or "starting…"
    if job.total:
        text = f"{text} · {duration(job.elapsed)} elapsed, about {duration(job.eta)} left"
    st.progress(frac, text=text)


def job_panel(job_id: str | None, key: str, show_result: Callable[[Any], None], *, poll: float = 0.5) -> object | None:
    """Live progress of a queued job (position, step x of y, ETA, cancel), then its result or error."""
    if not job_id:
        return None
    svc = service()
    try:
        job = svc.queue.get(job_id)
    except LanskapError:
        return None
    if job.active:

        @st.fragment(run_every=poll)
        def live() -> None:
            j = svc.queue.get(job_id)
            if not j.active:
                st.rerun()  # the whole page, so the result replaces the progress
            job_progress(svc, j)
            st.button("Cancel", key=f"{key}-cancel", on_click=svc.queue.cancel, args=(job_id,))

        live()
        return None
    if job.state == "failed":
        st.error(job.error or "the job failed", icon=":material/warning:")
    elif job.state == "cancelled" and job.result is None:
        st.warning("Cancelled.", icon=":material/stop_circle:")
    if job.result is not None:
        show_result(job.result)
    return job.result


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: str, mtime: float, side: int = 320) -> bytes:
    """A small JPEG of a gallery image, so a page of thumbnails stays light (cached by path and mtime)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def thumb_of(path: Path) -> bytes | None:
    try:
        return thumbnail(str(path), path.stat().st_mtime)
    except OSError:
        return None


def download_buttons(entry: Entry, key: str) -> None:
    """PNG and JPG downloads of one gallery image; both keep the A1111 parameters."""
    from lanskap.gallery.export import image_bytes

    cols = st.columns(2)
    for col, fmt, mime in ((cols[0], "png", "image/png"), (cols[1], "jpg", "image/jpeg")):
        name = f"{entry.path.stem}.{fmt}"
        col.download_button(
            f":material/download: {fmt.upper()}",
            data=functools.partial(lambda e, f: image_bytes(e, f)[0], entry, fmt),  # converted on click
            file_name=name,
            mime=mime,
            key=f"{key}-{fmt}",
            on_click="ignore",
            width="stretch",
        )
