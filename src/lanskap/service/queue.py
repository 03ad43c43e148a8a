"""One worker, a bounded queue: the rule that only one GPU job runs at a time.

The web app and the HTTP API submit every model job (generation, training,
evaluation) here. Waiting jobs are visible with their position, a full queue is
refused at once (:class:`QueueFullError`, the API's 503), and a job is cancelled
by an event that the engine, trainer and evaluator already check between steps.
A thread, not a process pool: the loaded pipeline lives in this process and is
shared by every job, and the work itself releases the GIL inside torch.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lanskap.errors import CancelledError, LanskapError, QueueFullError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("lanskap.queue")

STATES = ("queued", "running", "done", "failed", "cancelled")


@dataclass
class Job:
    """A unit of model work with live progress; fields are written by the worker only."""

    id: str
    kind: str  # generate | train | evaluate | load
    label: str
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0
    total: int = 0
    message: str = ""
    result: Any = None
    error: str | None = None
    user_error: bool = False  # the error is the caller's to fix (a LanskapError), not a crash
    #: Nothing ran for want of room (a scaled server's full queue) or its worker died: the API's 503.
    busy: bool = False
    replica: str | None = None  # where it runs, on a scaled server (lanskap serve --replicas)
    params: dict[str, Any] = field(default_factory=dict, repr=False)  # what was asked, for a page that reconnects
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    skip: threading.Event = field(default_factory=threading.Event, repr=False)  # end the current batch only
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    #: The latest latents of a generation, decoded only when someone asks for a preview.
    latents: Any = field(default=None, repr=False)

    def report(self, step: int, total: int, message: str = "") -> None:
        """Progress from inside the job (step x of y, and what it is doing)."""
        self.step, self.total = step, total
        if message:
            self.message = message

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def eta(self) -> float | None:
        """Seconds left, extrapolated from the steps so far (None before the first step)."""
        if self.state != "running" or not self.step or not self.total:
            return None
        return self.elapsed / self.step * max(0, self.total - self.step)

    def preview(self) -> Image.Image | None:
        """A live preview of the image being made (A1111's "Approx cheap"); None when there is none."""
        latents = self.latents
        if latents is None or not self.active:
            return None
        from lanskap.generation.preview import cheap_preview

        return cheap_preview(latents)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "state": self.state,
            "step": self.step,
            "total": self.total,
            "message": self.message,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "elapsed": round(self.elapsed, 3),
            "eta": None if self.eta is None else round(self.eta, 3),
            **({"replica": self.replica} if self.replica else {}),
        }


class JobQueue:
    """FIFO of jobs run one at a time by a single daemon thread."""

    def __init__(self, max_pending: int = 16, keep: int = 200) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be 1 or more")
        self.max_pending = max_pending
        self.keep = keep
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._work: dict[str, Callable[[Job], Any]] = {}
        self._current: Job | None = None
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, kind: str, label: str, work: Callable[[Job], Any], params: dict[str, Any] | None = None) -> Job:
        """Queue ``work(job)``; raises QueueFullError when ``max_pending`` jobs already wait.

        ``params`` is what was asked (a generation's settings), so a page that reconnects can show it.
        The id is partly random: a page reconnects to a job by its id, so ids must not be guessable.
        """
        with self._cond:
            if self._closed:
                raise LanskapError("the job queue is shut down")
            if len(self._pending) >= self.max_pending:
                raise QueueFullError(
                    f"the queue is full ({len(self._pending)} job(s) waiting); try again when one has finished"
                )
            job = Job(id=f"{next(self._ids)}-{secrets.token_hex(5)}", kind=kind, label=label, params=params or {})
            self._jobs[job.id] = job
            self._work[job.id] = work
            self._pending.append(job)
            self._trim()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lanskap-gpu-worker", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return job

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if not j.active]
        for job in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job.id]

    # -- reading -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise LanskapError(f"no job {job_id!r} (finished jobs are kept for a while, then forgotten)")
        return job

    @property
    def current(self) -> Job | None:
        return self._current

    def pending(self) -> list[Job]:
        with self._cond:
            return list(self._pending)

    def running(self) -> list[Job]:
        """The jobs running now: at most one here (a scaled server's queue runs one per replica)."""
        current = self._current
        return [current] if current is not None else []

    def position(self, job: Job) -> int | None:
        """0 while running, 1 for the next in line, …; None when finished."""
        if job.state == "running":
            return 0
        with self._cond:
            for i, waiting in enumerate(self._pending, 1):
                if waiting is job:
                    return i
        return None

    def recent(self, n: int = 10) -> list[Job]:
        return [j for j in reversed(self._jobs.values()) if not j.active][:n]

    def snapshot(self) -> dict[str, Any]:
        current = self._current
        return {
            "running": current.to_dict() if current else None,
            "pending": [j.to_dict() for j in self.pending()],
            "max_pending": self.max_pending,
        }

    # -- control -------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        """A waiting job is dropped; a running one is asked to stop at its next step."""
        job = self.get(job_id)
        with self._cond:
            if job in self._pending:
                self._pending.remove(job)
                self._work.pop(job.id, None)
                self._finish(job, "cancelled", error="cancelled before it started")
                return True
        if job.state == "running":
            job.cancel.set()
            job.message = "stopping…"
            return True
        return False

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            for job in list(self._pending):
                self._finish(job, "cancelled", error="the server is shutting down")
            self._pending.clear()
            self._cond.notify_all()
        if self._current is not None:
            self._current.cancel.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the worker ----------------------------------------------------------------------------
    def _finish(self, job: Job, state: str, *, result: Any = None, error: str | None = None) -> None:
        job.state, job.result, job.error = state, result, error
        job.latents = None  # the preview's tensor: no longer needed, and it may hold GPU memory
        job.finished = time.time()
        job._done.set()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
                work = self._work.pop(job.id)
                self._current = job
                job.state, job.started = "running", time.time()
            try:
                result = work(job)
            except CancelledError as exc:
                self._finish(job, "cancelled", error=str(exc))
            except LanskapError as exc:
                job.user_error = True
                self._finish(job, "failed", error=str(exc))
            except Exception as exc:  # keep the worker alive; the message goes to the user, the trace to the log
                log.error("job %s (%s) crashed:\n%s", job.id, job.kind, traceback.format_exc())
                self._finish(job, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
            else:
                if job.cancel.is_set():  # stopped early, but with a result (a training checkpoint)
                    self._finish(job, "cancelled", result=result, error="interrupted")
                else:
                    self._finish(job, "done", result=result)
            finally:
                self._current = None
