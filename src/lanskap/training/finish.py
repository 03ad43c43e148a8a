"""The end of a run: the method's exports, the loss curve, the validation grid and the job log."""

from __future__ import annotations

import time
from dataclasses import asdict

from lanskap import joblog
from lanskap.training.context import TrainRun
from lanskap.training.events import TrainResult
from lanskap.training.monitor import plot_loss, validation_grid


def finish(run: TrainRun) -> TrainResult:
    session, cfg, layout = run.session, run.cfg, run.layout
    lora_path = kohya_path = curve = grid = None
    if session.main:
        if not run.interrupted:
            lora_path, kohya_path = run.method.export(run)
        curve = plot_loss(run.metrics.read(), layout.loss_curve, title=f"{cfg.output_name}: loss")
        grid = validation_grid(layout.validation_steps(), layout.grid)
        device = session.device
        joblog.append(
            run.settings.home,
            "training",
            {
                "out": str(layout.root),
                "steps": run.step,
                "interrupted": run.interrupted,
                "final_loss": run.last_loss,
                "seconds": round(time.time() - run.started, 2),
                "device": str(device),
                "num_processes": session.accelerator.num_processes,
                "config": asdict(cfg),
                **joblog.peak_memory(device),
            },
        )
    session.accelerator.wait_for_everyone()
    session.accelerator.end_training()
    return TrainResult(
        out=layout.root,
        steps=run.step,
        interrupted=run.interrupted,
        lora=lora_path,
        kohya=kohya_path,
        checkpoint=run.last_checkpoint,
        final_loss=run.last_loss,
        loss_curve=curve,
        validation_grid=grid,
        config=cfg,
        notices=session.notices,
        main_process=session.main,
    )
