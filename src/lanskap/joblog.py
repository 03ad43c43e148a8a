"""JSON-lines logs of every generation and training run: parameters, duration, peak memory.

One line per job, appended with a single ``write`` on an ``O_APPEND`` descriptor, so
processes writing at once never interleave within a line and a crash loses at most
the line being written. The web app's status panel and ``jq`` read the same files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def log_path(home: Path, kind: str) -> Path:
    return Path(home) / "logs" / f"{kind}.jsonl"


def reset_peak(device: torch.device) -> None:
    """Start a fresh peak for this job (CUDA only; the CPU figure is the process's peak RSS)."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak GPU memory of the job (CUDA) and the process's peak resident memory, in MiB."""
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def append(home: Path, kind: str, record: dict[str, Any]) -> None:
    """Append one JSON line to ``home/logs/<kind>.jsonl``; logging never fails the job."""
    line = json.dumps(
        {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "pid": os.getpid(), **record},
        default=str,
        ensure_ascii=False,
    )
    path = log_path(home, kind)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:
        pass  # a read-only home must not stop a picture from being made


def read(home: Path, kind: str, last: int | None = None) -> list[dict[str, Any]]:
    """The log's records, oldest first (a torn last line is skipped)."""
    path = log_path(home, kind)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows[-last:] if last else rows
