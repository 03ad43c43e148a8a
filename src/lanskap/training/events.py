"""What a training run tells its front end while it runs, and what it hands back at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lanskap.training.config import TrainConfig


@dataclass
class TrainEvent:
    """Something a front end may show: a notice, caching progress, a finished step, a checkpoint."""

    kind: str  # notice | cache | step | eval | checkpoint | validation
    step: int = 0
    total: int = 0
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


EventFn = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    out: Path
    steps: int
    interrupted: bool
    lora: Path | None
    kohya: Path | None
    checkpoint: Path | None
    final_loss: float | None
    loss_curve: Path | None
    validation_grid: Path | None
    config: TrainConfig
    notices: list[str] = field(default_factory=list)
    main_process: bool = True  # False on the other ranks of an ``accelerate launch`` run
