"""A generation replica: one whole :class:`~lanskap.service.Service` (one Engine, the shared gallery) on one device.

Ray Serve lets one request in at a time (``max_ongoing_requests=1``), so a replica runs exactly the
job it was handed, through the same ``Service.submit_*`` methods (and checks) as a single server.
While it runs, the replica posts the job's progress to the board a few times a second and reads
back the ingress's interrupt and skip. It loads its model on start, so the first request finds it
warm, and takes its own GPU lock (``LANSKAP_GPU_SLOT``): replicas on one machine never wait for
each other, while each keeps one model job at a time on its device.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import replace
from typing import Any

import ray
from ray import serve
from ray.actor import ActorHandle

from lanskap.config import Settings
from lanskap.errors import LanskapError
from lanskap.scale.calls import RemoteCall, RemoteResult
from lanskap.service.queue import Job

#: How often a running job's progress goes to the board (and its interrupt comes back).
SYNC_S = 0.25
HEARTBEAT_S = 5.0
KINDS = ("generation", "upscale", "training", "evaluation", "dataset")


def _slot(name: str) -> str:
    """This replica's device as a lock name: the GPU ids Ray gave it, or the replica's own name on CPU."""
    gpus = [str(int(g)) for g in ray.get_gpu_ids()]
    return ",".join(gpus) if gpus else f"cpu-{name}"


class GenerationReplica:
    """One Ray Serve replica; :mod:`lanskap.scale.launch` deploys it ``N`` times."""

    def __init__(self, settings: Settings, board: ActorHandle, preload: bool = True) -> None:
        from lanskap.service import Service

        self.name = serve.get_replica_context().replica_id.unique_id
        os.environ["LANSKAP_GPU_SLOT"] = _slot(self.name)
        if not settings.home.is_dir():
            raise LanskapError(
                f"{settings.home} (LANSKAP_HOME) is not on this machine ({socket.gethostname()}); "
                "every machine of the cluster must mount the same home folder"
            )
        self.board = board
        self.service = Service(replace(settings), max_pending=1)
        if preload:
            self.service.engine.load()
        self._stop = threading.Event()
        self._register()
        threading.Thread(target=self._beat, name="lanskap-heartbeat", daemon=True).start()

    def _register(self) -> None:
        info = self.service.engine.info()
        self.board.register.remote(self.name, {
            "pid": os.getpid(), "host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(),
            "device": info.device, "model": info.model, "gpu_slot": os.environ["LANSKAP_GPU_SLOT"],
        })  # fmt: skip

    def _beat(self) -> None:
        """Register again every few seconds: the listing stays fresh, and a restarted board learns of us."""
        while not self._stop.wait(HEARTBEAT_S):
            self._register()

    def run(self, call: RemoteCall) -> RemoteResult:
        """Run one Service call to its end, posting progress; never raises for the job's own failure."""
        if call.kind not in KINDS:
            return RemoteResult("failed", self.name, error=f"unknown job kind {call.kind!r}", user_error=True)
        try:
            job = getattr(self.service, f"submit_{call.kind}")(*call.args, **call.kwargs)
        except LanskapError as exc:  # the same checks as a single server, here with this replica's files
            return RemoteResult("failed", self.name, error=str(exc), user_error=True)
        skips = 0
        while not job.wait(SYNC_S):
            skips = self._sync(call.job_id, job, skips)
        self._sync(call.job_id, job, skips)
        return RemoteResult(job.state, self.name, result=job.result, error=job.error, user_error=job.user_error,
                            progress=job.to_dict())  # fmt: skip

    def _sync(self, job_id: str, job: Job, skips: int) -> int:
        """Post progress; apply the ingress's interrupt and any new skip. Returns the skips applied."""
        latents = job.latents
        preview = None if latents is None else latents.float().cpu().numpy()
        try:
            asks = ray.get(self.board.sync.remote(job_id, self.name, job.to_dict(), preview), timeout=10)
        except Exception:  # the board is restarting: the job goes on, and the next post tries again
            return skips
        if asks["cancel"] and not job.cancel.is_set() and job.active:
            self.service.queue.cancel(job.id)
        if asks["skips"] > skips:
            job.skip.set()
        return max(skips, asks["skips"])

    def status(self) -> dict[str, Any]:
        return {"replica": self.name, **self.service.status()}

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
