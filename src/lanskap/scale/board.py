"""The board: a small Ray actor where replicas post their jobs' progress and read their stop requests.

Ray Serve's router lets one request at a time into a generation replica, so a progress or
interrupt call can't reach a busy replica through it. The board sits beside the router instead:
every running job posts its step, message and preview latents a few times a second and reads
back whether it was asked to stop or skip a batch; the ingress reads the progress and posts the
requests. Replicas also register here (pid, machine, device, model), for ``/health``.
"""

from __future__ import annotations

import time
from typing import Any

#: A replica that has not posted for this long is taken for gone in listings.
STALE_S = 15.0


class Board:
    """Plain Python state; :mod:`lanskap.scale.launch` runs it as a named Ray actor."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.replicas: dict[str, dict[str, Any]] = {}

    def _job(self, job_id: str) -> dict[str, Any]:
        return self.jobs.setdefault(job_id, {"cancel": False, "skips": 0, "progress": None, "replica": None})

    # -- replicas ----------------------------------------------------------------------------------
    def register(self, replica: str, info: dict[str, Any]) -> None:
        self.replicas[replica] = {**info, "name": replica, "seen": time.time()}

    def listing(self) -> list[dict[str, Any]]:
        """The replicas that posted lately, oldest first."""
        now = time.time()
        return [r for r in self.replicas.values() if now - r["seen"] < STALE_S]

    # -- jobs --------------------------------------------------------------------------------------
    def sync(self, job_id: str, replica: str, progress: dict[str, Any], latents: Any = None) -> dict[str, Any]:
        """A replica posts its job's progress; the answer says whether to stop, and how many skips so far."""
        entry = self._job(job_id)
        entry.update(progress=progress, latents=latents, replica=replica)
        if replica in self.replicas:
            self.replicas[replica]["seen"] = time.time()
            self.replicas[replica]["job"] = job_id if progress.get("state") in ("queued", "running") else None
        return {"cancel": entry["cancel"], "skips": entry["skips"]}

    def request(self, job_id: str, what: str) -> None:
        """The ingress asks the job's replica to stop (``cancel``) or to end its current batch (``skip``)."""
        entry = self._job(job_id)
        if what == "cancel":
            entry["cancel"] = True
        elif what == "skip":
            entry["skips"] += 1

    def read(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id)

    def forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
