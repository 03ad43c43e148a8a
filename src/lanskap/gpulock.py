"""One model job at a time across processes: an advisory lock file in ``$LANSKAP_HOME``.

The job queue serialises work inside one server process; this lock extends the
rule to the web app, the API and CLI commands running side by side, so two of
them never load SD 2.1 onto the same GPU at once. ``fcntl.flock`` is released by
the kernel when a process dies, so a crash never leaves it stuck. Where fcntl
doesn't exist (Windows) the lock is a no-op and only the in-process queue applies.

The lock is re-entrant within a thread: every job function takes it (``lanskap/jobs``), and
a front that already holds it (the CLI around a model load and a batch of prompts, the
Service around a queued job) doesn't deadlock on itself. Other threads still wait.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "gpu.lock"
#: A scaled server's replicas each own a device: each locks its own file (``gpu-SLOT.lock``),
#: named by this variable (the GPU ids Ray gave it, or a CPU replica's own name).
SLOT_VARIABLE = "LANSKAP_GPU_SLOT"
_held = threading.local()  # the lock files this thread holds, with how deeply


def lock_name() -> str:
    """``gpu.lock``, or ``gpu-SLOT.lock`` in a replica that owns one device (letters, digits, ``-``, ``_``, ``,``)."""
    slot = os.environ.get(SLOT_VARIABLE, "")
    if not slot:
        return LOCK_FILE
    if not all(c.isalnum() or c in "-_," for c in slot) or len(slot) > 64:
        raise ValueError(f"{SLOT_VARIABLE} must be a short name of letters, digits, - _ or ,")
    return f"gpu-{slot}.lock"


@contextlib.contextmanager
def gpu_lock(home: Path, on_wait: Callable[[], None] | None = None, poll: float = 0.2) -> Iterator[None]:
    """Hold the lock for the body; call ``on_wait`` once if another process holds it first."""
    if fcntl is None or os.environ.get("LOCAL_RANK", "0") != "0":
        # Under ``accelerate launch`` only the first process of the machine takes the lock: the
        # others join it in collectives, and waiting on the lock there would deadlock the group.
        yield
        return
    path = Path(home) / lock_name()
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    key = str(path.resolve())
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait()
                    told = True
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
