"""How a front watches and steers a job: progress, cancel, skip, and the wait for the GPU."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobControl:
    """Given to a job function by its front: the CLI's progress bar, or the Service's queued Job.

    ``report(done, total, message)`` is called as work advances; ``cancel`` stops the job at the
    next step boundary (what has been finished is kept); ``skip`` ends the current batch only.
    """

    report: Callable[[int, int, str], None] = lambda done, total, message: None
    note: Callable[[str], None] = lambda message: None  # what the job is doing, without a step count
    cancel: threading.Event = field(default_factory=threading.Event)
    skip: threading.Event = field(default_factory=threading.Event)
    on_wait: Callable[[], None] | None = None  # another process holds the GPU
    #: The latest latents of the image being made, for a live preview (kept, not decoded: see Job.preview).
    preview: Callable[[Any], None] = lambda latents: None
