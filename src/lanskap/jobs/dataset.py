"""Dataset preparation as a job: folders checked once, the GPU lock (captioning uses the model), prepare."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.gpulock import gpu_lock
from lanskap.jobs.control import JobControl

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.data.prepare import PrepareOptions


def run_dataset(
    src: Path,
    out: Path,
    opts: PrepareOptions,
    settings: Settings,
    *,
    control: JobControl | None = None,
    stages: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Ingest, caption, enrich and split ``src`` into ``out``; returns the manifest.

    ``stages`` sees each stage's progress by name (the CLI's bars); ``control`` gets it as one line.
    """
    from lanskap.data.prepare import prepare_dataset

    control = control or JobControl()
    opts.check()

    def progress(stage: str, done: int, total: int) -> None:
        control.report(done, total, f"{stage} {done}/{total}")
        if stages is not None:
            stages(stage, done, total)

    with gpu_lock(settings.home, on_wait=control.on_wait):
        return prepare_dataset(src, out, opts, progress)
