"""The Generate page's jobs: every job this browser session started, whichever tab started it.

The list lives in the session and in the URL (``?jobs=…``), so a reload reconnects to jobs still
running and to finished ones (the queue keeps the last 200). Progress is one fragment that polls
once a second and redraws only itself: no full-page rerun happens while a job runs, only once when
one ends, so its results replace its progress. Job ids are partly random, so a URL can't be guessed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import streamlit as st

from lanskap.errors import LanskapError
from lanskap.ui.common import job_progress, service

if TYPE_CHECKING:
    from lanskap.service.queue import Job
    from lanskap.service.service import Service

SESSION_KEY, URL_KEY = "g_jobs", "jobs"
#: How many of the session's newest jobs are kept on the page (and in the URL).
KEEP = 8
#: Finished jobs beyond the newest few fold into expanders, so a long session stays short to scroll.
OPEN_RESULTS = 2
#: Seconds between progress redraws: a 128 px step on a CPU takes about that long, and a T4 step is
#: near 0.1 s, so a second still reads as live while costing the generation thread almost nothing.
POLL_S = float(os.environ.get("LANSKAP_UI_POLL_S", "1.0"))
PREVIEW_WIDTH = 256


def session_jobs(svc: Service) -> tuple[list[Job], bool]:
    """This session's jobs, newest first, and whether they were just recovered from the URL (a reload)."""
    ids = st.session_state.get(SESSION_KEY)
    reconnected = ids is None
    if ids is None:
        ids = [i for i in str(st.query_params.get(URL_KEY, "")).split(",") if i][:KEEP]
    jobs = []
    for job_id in ids:
        try:
            jobs.append(svc.queue.get(job_id))
        except LanskapError:
            continue  # forgotten by the queue, or never ours
    _store([j.id for j in jobs])
    return jobs, reconnected and bool(jobs)


def remember(job_id: str) -> None:
    """A job this session just started: it goes to the top of the list (and of the URL)."""
    ids = [i for i in st.session_state.get(SESSION_KEY) or [] if i != job_id]
    _store([job_id, *ids][:KEEP])


def forget_finished(svc: Service) -> None:
    """Button callback: drop finished jobs from the page (their images stay in the gallery)."""
    keep = []
    for job_id in st.session_state.get(SESSION_KEY) or []:
        try:
            if svc.queue.get(job_id).active:
                keep.append(job_id)
        except LanskapError:
            continue
    _store(keep)


def cancel_all(svc: Service, jobs: list[Job]) -> None:
    """Button callback: stop this session's running job at its next step and drop its queued ones."""
    for job in jobs:
        if job.active:
            svc.queue.cancel(job.id)


def _store(ids: list[str]) -> None:
    st.session_state[SESSION_KEY] = ids
    wanted = ",".join(ids)
    if str(st.query_params.get(URL_KEY, "")) != wanted:  # an unchanged URL is not rewritten
        if wanted:
            st.query_params[URL_KEY] = wanted
        else:
            st.query_params.pop(URL_KEY, None)


def jobs_panel(jobs: list[Job], show_result: Callable[[Job], None]) -> None:
    """Live progress for the running and queued jobs, then each finished job's result, newest first."""
    active = tuple(j.id for j in jobs if j.active)
    if active:
        _live(active)
    finished = [j for j in jobs if not j.active]
    for n, job in enumerate(finished):
        if n < OPEN_RESULTS:
            with st.container(border=True, key=f"job-{job.id}"):
                _finished(job, show_result)
        else:
            with st.expander(f"{job.label} · {job.state}"):
                _finished(job, show_result)


def _finished(job: Job, show_result: Callable[[Job], None]) -> None:
    st.caption(f":material/history: {job.label}")
    if job.state == "failed":
        st.error(job.error or "the job failed", icon=":material/warning:")
    elif job.state == "cancelled" and job.result is None:
        st.warning("Cancelled before it started.", icon=":material/stop_circle:")
    if job.result is not None:
        show_result(job)


@st.fragment(run_every=POLL_S)
def _live(job_ids: tuple[str, ...]) -> None:
    svc = service()
    for job_id in job_ids:
        try:
            job = svc.queue.get(job_id)
        except LanskapError:
            continue
        if not job.active:
            st.rerun()  # the whole page once, so this job's results replace its progress
        with st.container(border=True, key=f"live-{job_id}"):
            _progress(svc, job)


def _progress(svc: Service, job: Job) -> None:
    st.caption(f":material/autorenew: {job.label}")
    job_progress(svc, job)
    if job.state == "running":
        preview = job.preview()
        if preview is not None:
            st.image(preview, caption="live preview (approximate)", width=PREVIEW_WIDTH)
    st.button("Cancel", key=f"cancel-{job.id}", on_click=svc.queue.cancel, args=(job.id,),
              help="Stops at the next step; the images already finished are kept.")  # fmt: skip
