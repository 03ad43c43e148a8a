"""The ingress's side: a Service whose model jobs run on the replicas, and the queue that watches them.

:class:`ScaledService` keeps every check of :class:`~lanskap.service.Service` (a bad request fails
before anything is sent) and hands the call itself to Ray Serve's handle, so Ray's router picks a
free replica and Ray's queue limit refuses what doesn't fit. :class:`RemoteQueue` gives the routes
the same :class:`~lanskap.service.queue.Job` objects as a single server's queue: one watcher thread
per job copies the board's progress onto it and posts its cancel and skip to the board, so
``/progress``, ``/interrupt``, ``/skip`` and ``/api/v1/jobs`` work unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

import ray
from ray.actor import ActorHandle
from ray.serve.exceptions import BackPressureError, RequestCancelledError

from lanskap.errors import LanskapError
from lanskap.scale.calls import RemoteCall, RemoteResult
from lanskap.service.queue import Job, JobQueue
from lanskap.service.service import Service

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

    from lanskap.config import Settings
    from lanskap.data.prepare import PrepareOptions
    from lanskap.evaluation.run import EvalConfig
    from lanskap.generation.params import GenerationRequest
    from lanskap.generation.upscale_params import UpscaleRequest
    from lanskap.jobs.upscale import UpscaleSource
    from lanskap.training.config import TrainConfig

log = logging.getLogger("lanskap.scale")

POLL_S = 0.25
REPLICAS_S = 1.0  # how often the ingress refreshes its list of replicas
#: Replica failures that end a call without an answer (the process died, or its machine left).
GONE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class RemoteQueue(JobQueue):
    """Jobs that run on replicas, with the reading and control methods of :class:`JobQueue`."""

    def __init__(self, handle: DeploymentHandle, board: ActorHandle, max_pending: int, keep: int = 200) -> None:
        super().__init__(max_pending=max_pending, keep=keep)
        self.handle, self.board = handle, board
        self._calls: dict[str, Any] = {}

    def dispatch(self, kind: str, label: str, call: RemoteCall, params: dict[str, Any] | None = None) -> Job:
        """Send ``call`` to Ray Serve now; a watcher follows it until it ends."""
        if self._closed:
            raise LanskapError("the job queue is shut down")
        job = Job(id=call.job_id, kind=kind, label=label, params=params or {})
        with self._cond:
            self._jobs[job.id] = job
            self._trim()
        threading.Thread(target=self._watch, args=(job, call), name=f"lanskap-watch-{job.id}", daemon=True).start()
        return job

    def new_id(self) -> str:
        return f"{next(self._ids)}-{secrets.token_hex(5)}"

    # -- reading -------------------------------------------------------------------------------
    def running(self) -> list[Job]:
        return sorted((j for j in list(self._jobs.values()) if j.state == "running"), key=lambda j: j.started or 0)

    @property
    def current(self) -> Job | None:
        """The longest-running job: what A1111's single-job ``/progress`` and ``/interrupt`` mean."""
        running = self.running()
        return running[0] if running else None

    def pending(self) -> list[Job]:
        return [j for j in list(self._jobs.values()) if j.state == "queued"]

    def position(self, job: Job) -> int | None:
        if job.state == "running":
            return 0
        waiting = self.pending()
        return waiting.index(job) + 1 if job in waiting else None

    def snapshot(self) -> dict[str, Any]:
        running = self.running()
        return {
            "running": running[0].to_dict() if running else None,
            "running_all": [j.to_dict() for j in running],
            "pending": [j.to_dict() for j in self.pending()],
            "max_pending": self.max_pending,
        }

    # -- control -------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        """Ask the job's replica to stop (a waiting job is dropped from Ray's queue as well)."""
        job = self.get(job_id)
        if not job.active:
            return False
        job.cancel.set()
        job.message = "stopping…"
        self.board.request.remote(job.id, "cancel")
        response = self._calls.get(job.id)
        if job.state == "queued" and response is not None:
            response.cancel()  # still in Ray's queue: it never reaches a replica
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        self._closed = True
        for job in self.running() + self.pending():
            self.cancel(job.id)

    # -- the watcher ---------------------------------------------------------------------------
    def _watch(self, job: Job, call: RemoteCall) -> None:
        """Follow one call: mirror its progress, forward its stop requests, and record how it ended."""
        for attempt in (1, 2):
            response = self._calls[job.id] = self.handle.run.remote(call)
            try:
                outcome = self._follow(job, response)
            except RequestCancelledError:
                self._end(job, "cancelled", error="cancelled before it started")
                return
            except BackPressureError as exc:
                retry = getattr(exc, "retry_after_s", None)
                self._end(job, "failed", busy=True, error="every replica is busy and the queue is full; "
                          f"try again{f' in {retry:g} s' if retry else ''}")  # fmt: skip
                return
            except GONE as exc:
                seen = self._seen(job)
                if attempt == 1 and _unsaved(job, seen) and not job.cancel.is_set():  # once more, elsewhere
                    log.warning("job %s: its replica died (%s); retrying once", job.id, type(exc).__name__)
                    job.message, job.state, job.replica = "its replica stopped; retrying on another", "queued", None
                    self.board.forget.remote(job.id)
                    continue
                where = f" after step {seen.get('step')} of {seen.get('total')}" if seen else ""
                error = f"the replica running this job stopped{where} (its process died); try again"
                self._end(job, "failed", busy=True, error=error)
                return
            except Exception as exc:  # keep the ingress alive; the trace goes to the log
                log.exception("job %s: the call failed", job.id)
                self._end(job, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
                return
            job.replica = outcome.replica
            job.step, job.total = outcome.progress.get("step", job.step), outcome.progress.get("total", job.total)
            job.message = outcome.progress.get("message") or job.message
            job.started = job.started or outcome.progress.get("started")
            self._end(job, outcome.state, result=outcome.result, error=outcome.error, user_error=outcome.user_error)
            return

    def _follow(self, job: Job, response: Any) -> RemoteResult:
        while True:
            try:
                return response.result(timeout_s=POLL_S)
            except TimeoutError:
                pass
            if job.skip.is_set():  # /skip: the replica ends its current batch, once per request
                job.skip.clear()
                self.board.request.remote(job.id, "skip")
            self._mirror(job)

    def _entry(self, job: Job) -> dict[str, Any] | None:
        """The board's entry for a job (its replica's latest post); None when there is none or no board."""
        try:
            return ray.get(self.board.read.remote(job.id), timeout=5)
        except Exception:
            return None

    def _seen(self, job: Job) -> dict[str, Any] | None:
        entry = self._entry(job)
        return None if entry is None else entry.get("progress")

    def _mirror(self, job: Job) -> None:
        """Copy the replica's latest post onto the ingress's Job."""
        entry = self._entry(job)
        if not entry or not entry.get("progress"):
            return
        seen = entry["progress"]
        if seen.get("state") == "running" and job.state == "queued":
            job.state, job.started = "running", time.time()
        job.replica = entry.get("replica")
        job.step, job.total = seen.get("step", 0), seen.get("total", 0)
        if seen.get("message") and not job.cancel.is_set():
            job.message = seen["message"]
        latents = entry.get("latents")
        if latents is not None:
            import torch

            job.latents = torch.from_numpy(latents.copy())  # the board's array is read-only

    def _end(self, job: Job, state: str, *, result: Any = None, error: str | None = None,
             user_error: bool = False, busy: bool = False) -> None:  # fmt: skip
        job.user_error, job.busy = user_error, busy
        if job.started is None:
            job.started = time.time()
        if state == "done" and job.cancel.is_set():
            state, error = "cancelled", error or "interrupted"
        self._finish(job, state, result=result, error=error)
        self._calls.pop(job.id, None)
        self.board.forget.remote(job.id)


def _unsaved(job: Job, seen: dict[str, Any] | None) -> bool:
    """Whether a job whose replica died had saved nothing yet. A generation saves its images after its
    last step, so before it nothing of it is in the gallery; an upscale saves each picture as it goes
    and a training run its checkpoints, so those are never sent again."""
    return job.kind == "generate" and (seen is None or seen.get("step", 0) < max(1, seen.get("total", 0)))


class ScaledService(Service):
    """The ingress's Service: the same checks, with every model job run on a replica."""

    def __init__(
        self, settings: Settings, *, handle: DeploymentHandle, board: ActorHandle, max_pending: int = 16
    ) -> None:
        super().__init__(settings, max_pending=max_pending)
        self.board = board
        self.queue: RemoteQueue = RemoteQueue(handle, board, max_pending)
        self._replicas: list[dict[str, Any]] = []
        threading.Thread(target=self._watch_replicas, name="lanskap-replicas", daemon=True).start()

    def _dispatch(self, kind: str, label: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                  params: dict[str, Any] | None = None) -> Job:  # fmt: skip
        call = RemoteCall(self.queue.new_id(), kind, args, kwargs)
        job_kind = {"generation": "generate", "training": "train", "evaluation": "evaluate"}.get(kind, kind)
        return self.queue.dispatch(job_kind, label, call, params)

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas as the board listed them at most a couple of seconds ago: /health never waits on Ray."""
        return list(self._replicas)

    def _watch_replicas(self, every: float = REPLICAS_S) -> None:
        while True:
            with contextlib.suppress(Exception):  # the board is restarting: keep the last listing
                self._replicas = ray.get(self.board.listing.remote(), timeout=5)
            time.sleep(every)

    def submit_generation(self, request: GenerationRequest, *, source: str, fmt: str = "png",
                          folder: str | None = None, record: bool = True, model: str | None = None) -> Job:  # fmt: skip
        # Checked here as on a single server (the seed is fixed here, so the replica makes what was shown);
        # the replica resolves the model's name again, with its own files.
        request, fmt, _, label = self.generation_checks(request, fmt, model)
        kwargs = {"source": source, "fmt": fmt, "folder": folder, "record": record, "model": model}
        return self._dispatch("generation", label, (request,), kwargs, request.to_dict())

    def submit_upscale(self, request: UpscaleRequest, sources: list[UpscaleSource], *, source: str,
                       fmt: str = "png", record: bool = True) -> Job:  # fmt: skip
        request, fmt, label = self.upscale_checks(request, sources, fmt)
        return self._dispatch("upscale", label, (request, sources),
                              {"source": source, "fmt": fmt, "record": record},
                              {"mode": "upscale", "upscale": request.to_dict()})  # fmt: skip

    def submit_training(self, cfg: TrainConfig, name: str, *, resume: bool = False) -> Job:
        return self._dispatch("training", f"train {name}", (cfg, name), {"resume": resume})

    def submit_dataset(self, source: str, name: str, options: PrepareOptions | None = None) -> Job:
        return self._dispatch("dataset", f"dataset {name}", (source, name, options), {})

    def submit_evaluation(self, cfg: EvalConfig) -> Job:
        return self._dispatch("evaluation", "evaluate", (cfg,), {})

    def submit_load(self, model: str | None = None) -> Job:
        """Replicas load their model when they start and switch per request (each request names its
        model), so a load is only checked here and finishes at once."""
        if model is not None:
            self.check_model(model)
        return self.queue.submit("load", "load (each replica switches on its next request)", lambda job: {})

    def submit_unload(self) -> Job:
        raise LanskapError("a scaled server's replicas keep their models loaded; stop the server to free them")

    def status(self) -> dict[str, Any]:
        """The ingress's own figures, the queue across replicas, and each replica."""
        out = super().status()
        out["replicas"] = self.replicas()
        return out
