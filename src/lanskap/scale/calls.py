"""What travels between the ingress and a replica: one Service call, and what became of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RemoteCall:
    """``Service.submit_<kind>(*args, **kwargs)`` to run on a replica, under the ingress's job id."""

    job_id: str
    kind: str  # generation | upscale | training | evaluation | dataset
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RemoteResult:
    """The replica's job as it ended: the ingress copies it onto its own :class:`~lanskap.service.queue.Job`."""

    state: str
    replica: str
    result: Any = None
    error: str | None = None
    user_error: bool = False
    progress: dict[str, Any] = field(default_factory=dict)  # the job's last figures (Job.to_dict())
