"""Evaluation as a job: the report folder fixed once, the GPU lock, the evaluator."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lanskap.gpulock import gpu_lock
from lanskap.jobs.control import JobControl

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.evaluation.run import EvalConfig, EvalEvent, EvalResult


def report_folder(settings: Settings, cfg: EvalConfig) -> EvalConfig:
    """``cfg`` with its report folder: the one given, or a timestamped one under ``evaluations/``."""
    from lanskap.evaluation.run import with_report_folder

    return with_report_folder(cfg, settings)


def run_evaluation(
    cfg: EvalConfig,
    settings: Settings,
    *,
    control: JobControl | None = None,
    events: Callable[[EvalEvent], None] | None = None,
) -> EvalResult:
    """Generate (from a dataset), measure and write the report, under the GPU lock."""
    from lanskap.evaluation import evaluate

    control = control or JobControl()
    cfg = report_folder(settings, cfg)

    def relay(e: EvalEvent) -> None:
        control.report(e.done, e.total, f"{e.phase} {e.done}/{e.total}" + (f": {e.message}" if e.message else ""))
        if events is not None:
            events(e)

    with gpu_lock(settings.home, on_wait=control.on_wait):
        return evaluate(cfg, settings, events=relay, cancel=control.cancel)
