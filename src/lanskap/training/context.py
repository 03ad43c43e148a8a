"""The state one training run carries between its steps, grouped by the step that makes it.

``setup`` makes the :class:`Session` and :class:`Networks`, ``data`` the
:class:`TrainData`; :class:`TrainRun` holds them with the run's own progress, and
every later step (the loop, validation, checkpoints, the exports) takes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lanskap.training.events import EventFn, TrainEvent

if TYPE_CHECKING:
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from torch.optim.lr_scheduler import LRScheduler
    from torch.utils.tensorboard import SummaryWriter
    from transformers import CLIPTextModel, CLIPTokenizer

    from lanskap.config import Settings
    from lanskap.data.augment import Augment
    from lanskap.generation.engine import Engine
    from lanskap.models.loader import LoadedModel
    from lanskap.training.batches import CaptionTokens, Stream
    from lanskap.training.buckets import Plan
    from lanskap.training.config import TrainConfig
    from lanskap.training.layout import RunLayout
    from lanskap.training.method import TrainingMethod
    from lanskap.training.monitor import MetricsLog
    from lanskap.training.sources import Record, TrainingSet


@dataclass
class Session:
    """The processes, device and precision a run trains on, and where it reports."""

    accelerator: Accelerator
    on_cuda: bool
    mixed: str  # accelerate's mixed_precision: no | fp16 | bf16
    events: EventFn | None
    notices: list[str] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def weight_dtype(self) -> torch.dtype:
        return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.mixed]

    def say(self, message: str, kind: str = "notice") -> None:
        """A notice for the person watching (the main process only, as every event)."""
        if self.main:
            self.notices.append(message)
            self.emit(TrainEvent(kind, message=message))

    def emit(self, event: TrainEvent) -> None:
        if self.main and self.events:
            self.events(event)


@dataclass(frozen=True)
class TextCond:
    """A batch's text conditioning: hidden states, and SDXL's pooled text (None for SD 1.x/2.x)."""

    hidden: torch.Tensor  # (batch, 77 · chunks, width)
    pooled: torch.Tensor | None = None  # (batch, projection width)

    def to(self, dtype: torch.dtype) -> TextCond:
        return TextCond(self.hidden.to(dtype), None if self.pooled is None else self.pooled.to(dtype))

    def unet_kwargs(self, latents: torch.Tensor) -> dict[str, object]:
        """SDXL's extra UNet inputs: the pooled text and A1111's size conditioning for these latents
        (original and target size the picture's, crop (0, 0)), as generation will ask."""
        if self.pooled is None:
            return {}
        h, w = latents.shape[2] * 8, latents.shape[3] * 8
        ids = torch.tensor([h, w, 0, 0, h, w], device=latents.device, dtype=self.pooled.dtype)
        return {"added_cond_kwargs": {"text_embeds": self.pooled, "time_ids": ids.repeat(latents.shape[0], 1)}}


@dataclass
class Networks:
    """The base model's parts as training uses them, with the optimizer and the noise schedule."""

    unet: torch.nn.Module  # as ``accelerator.prepare`` wrapped it (DDP on several processes)
    text_encoder: torch.nn.Module
    raw_unet: UNet2DConditionModel  # the unwrapped modules: checkpoints, validation and exports read these
    raw_te: CLIPTextModel
    vae: AutoencoderKL
    tokenizer: CLIPTokenizer
    optimizer: torch.optim.Optimizer
    lr_scheduler: LRScheduler
    noise_scheduler: DDPMScheduler
    trainable: list[torch.nn.Parameter]
    text_encoder_2: torch.nn.Module | None = None  # SDXL's bigG (with its projection)
    tokenizer_2: CLIPTokenizer | None = None

    @property
    def prediction_type(self) -> str:
        return str(self.noise_scheduler.config.prediction_type)

    @property
    def timesteps_total(self) -> int:
        return int(self.noise_scheduler.config.num_train_timesteps)


@dataclass
class TrainData:
    """The pictures and captions, in the order and sizes the run sees them, and what was cached."""

    records: list[Record]
    plan: Plan
    stream: Stream
    aug: Augment
    tokens: CaptionTokens
    tokens_2: CaptionTokens | None = None  # SDXL's second tokenizer (it pads with "!", not EOS)
    latent_cache: dict[tuple[int, bool], torch.Tensor] = field(default_factory=dict)
    text_cache: dict[str, TextCond] = field(default_factory=dict)
    eval_views: list[tuple[torch.Tensor, str]] = field(default_factory=list)  # fixed-noise loss inputs
    prior_latents: list[torch.Tensor] = field(default_factory=list)  # DreamBooth's class pictures, encoded


@dataclass
class TrainRun:
    """Everything the steps after set-up share, and the run's progress."""

    cfg: TrainConfig  # as run: the model, resolution, precision and optimizer filled in
    settings: Settings
    layout: RunLayout
    session: Session
    model: LoadedModel
    method: TrainingMethod
    tset: TrainingSet
    nets: Networks
    data: TrainData
    metrics: MetricsLog
    generator: torch.Generator
    step: int = 0
    last_loss: float | None = None
    last_checkpoint: Path | None = None
    interrupted: bool = False
    started: float = 0.0
    tracker: SummaryWriter | None = None  # TensorBoard's on the main process, when reporting to it
    engine: Engine | None = None  # made at the first validation render, around the in-memory model

    @property
    def resolution(self) -> int:
        return int(self.cfg.resolution)  # type: ignore[arg-type]
