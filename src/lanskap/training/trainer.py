"""Training, as a short sequence of named steps: the training section of ARCHITECTURE.md in code.

One function, :func:`train`, serves the CLI, the web app and the API. Each step lives in
its own module: set-up (``setup``: processes, precision, the base model, the networks),
data (``data``), the optimizer step (``step``), validation renders and the fixed-noise
loss (``validation``), checkpoints (``state``) and the end (``finish``). What differs
between training methods (which parameters train, what a checkpoint keeps, what is
exported) sits behind ``method.TrainingMethod``; LoRA is the first. Run it under
``accelerate launch`` for several GPUs or machines: every process takes its share.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from lanskap import joblog
from lanskap.config import Settings, load_settings
from lanskap.training.class_images import ensure_class_images
from lanskap.training.config import TrainConfig
from lanskap.training.context import TrainRun
from lanskap.training.data import micro_batches, prepare_data
from lanskap.training.events import EventFn, TrainEvent, TrainResult
from lanskap.training.finish import finish
from lanskap.training.layout import CONFIG_FILE, GRID_PNG, LOSS_PNG, RunLayout
from lanskap.training.method import make_method
from lanskap.training.monitor import MetricsLog
from lanskap.training.setup import (
    find_resume,
    load_base,
    open_session,
    prepare_networks,
    resolve_precision,
    resume_state,
)
from lanskap.training.sources import load_training_set
from lanskap.training.state import new_generator, save_checkpoint, start
from lanskap.training.step import optimizer_step, stop_agreed, train_mode
from lanskap.training.validation import evaluation_loss, render_validation

# Names other modules and scripts import from here.
__all__ = ["CONFIG_FILE", "GRID_PNG", "LOSS_PNG", "TrainEvent", "TrainResult", "resolve_precision", "train"]


def train(
    cfg: TrainConfig,
    settings: Settings | None = None,
    *,
    events: EventFn | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train as ``cfg`` says; returns where everything was written.

    The order of the steps is part of the result: it fixes which random numbers each one draws.
    """
    cfg.check()
    settings = settings or load_settings()
    layout = RunLayout(Path(cfg.out).expanduser())
    tset = load_training_set(cfg.data, cfg.image_column, cfg.caption_column)
    resume_dir = find_resume(cfg, layout)
    session = open_session(cfg, settings, layout, events)
    model, eff = load_base(session, cfg, settings)
    method = make_method(eff)
    state = resume_state(resume_dir, eff, method, tset, model, session.accelerator.num_processes)
    class_images = ensure_class_images(session, settings, model, eff) if eff.prior_preservation else None
    nets = prepare_networks(session, model, method, eff)
    data = prepare_data(session, eff, tset, nets, method, class_images)
    run = TrainRun(
        eff,
        settings,
        layout,
        session,
        model,
        method,
        tset,
        nets,
        data,
        metrics=MetricsLog(layout.root),
        generator=new_generator(eff.seed, session.accelerator.process_index, session.device),
    )
    start(run, resume_dir, state)
    run.started = time.time()
    joblog.reset_peak(session.device)
    _steps(run, cancel)
    return finish(run)


def _steps(run: TrainRun, cancel: threading.Event | None) -> None:
    """The loop: steps, with a checkpoint, the fixed-noise loss and validation every N steps."""
    cfg, total = run.cfg, run.cfg.max_train_steps
    batches = iter(micro_batches(run))
    stop = _Stop(cancel)
    if run.step == 0:
        evaluation_loss(run, 0)
        if cfg.validation_at_start:
            render_validation(run, 0)
    train_mode(run)
    tick = time.perf_counter()
    with stop.signals(run.session.say):
        while run.step < total:
            optimizer_step(run, batches, tick)
            tick = time.perf_counter()
            wants_stop = stop_agreed(run, stop.now)
            if run.step % cfg.checkpointing_steps == 0 or run.step == total or wants_stop:
                save_checkpoint(run)
                if not wants_stop:
                    evaluation_loss(run, run.step)
                    render_validation(run, run.step)
            if wants_stop and run.step < total:
                run.interrupted = True
                run.session.say(f"stopped at step {run.step}; resuming from the latest checkpoint continues the run")
                break


class _Stop:
    """Set by Ctrl-C/SIGTERM or a cancel event; the loop saves a checkpoint at the next step boundary."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel
        self.requested = False

    @property
    def now(self) -> bool:
        return self.requested or bool(self.cancel and self.cancel.is_set())

    @contextlib.contextmanager
    def signals(self, say: Callable[[str], None]) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            say("stopping: a checkpoint is saved after this step (press Ctrl-C again to quit without one)")

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)
