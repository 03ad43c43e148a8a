"""The training-method seam: what differs between LoRA, textual inversion, DreamBooth, ….

The trainer's steps (set-up, data, the step, validation, checkpoints) are the same for
every method. A method says which parameters train, what a checkpoint and a resume must
hold of them, and what the run exports at the end. LoRA (``training/lora_method.py``)
is the first; textual inversion (``ti_method.py``) and DreamBooth (``dreambooth.py``) follow.
A new method is a new module with these members, added to :func:`make_method`;
:class:`BaseMethod` holds the answers most methods share.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from lanskap.prompts.embeddings import Embedding
    from lanskap.training.config import TrainConfig
    from lanskap.training.context import Networks, TrainRun


class TrainingMethod(Protocol):
    name: str
    #: What the run makes, in words: "LoRA", "embedding", "model".
    makes: str

    @property
    def trains_text_encoder(self) -> bool:
        """Whether the text encoder's weights train (and it goes through ``accelerator.prepare``)."""
        ...

    @property
    def trains_unet(self) -> bool:
        """Whether any UNet parameter trains (only then is the UNet wrapped for several processes)."""
        ...

    @property
    def text_grad(self) -> bool:
        """Whether gradients flow through the text encoder (to its weights or to new token vectors)."""
        ...

    def attach(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer) -> None:
        """Add the trainable parameters to the base model's modules."""
        ...

    def attach_second(self, text_encoder_2: CLIPTextModel) -> None:
        """SDXL's second text encoder: add what trains there too (after ``attach``)."""
        ...

    def caption(self, text: str) -> str:
        """A training caption (or validation prompt) as this method trains on it."""
        ...

    def embeddings(self) -> list[Embedding]:
        """Embeddings in training, which the captions and validation prompts name."""
        ...

    def param_groups(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> list[dict[str, Any]]:
        """Optimizer parameter groups, with their learning rates."""
        ...

    def resume_settings(self) -> dict[str, Any]:
        """What a checkpoint must have been trained with to be resumed by this run."""
        ...

    def save_checkpoint(self, nets: Networks, folder: Path) -> None:
        """Write the trained parameters into a checkpoint folder being built."""
        ...

    def load_checkpoint(self, nets: Networks, folder: Path) -> None:
        """Put a checkpoint's trained parameters back."""
        ...

    def export(self, run: TrainRun) -> tuple[Path | None, Path | None]:
        """The finished run's files: the diffusers one, and the A1111/ComfyUI one."""
        ...


class BaseMethod:
    """The answers most methods share: the UNet trains, captions are used as written, no new tokens."""

    makes = "LoRA"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    @property
    def trains_text_encoder(self) -> bool:
        return False

    @property
    def trains_unet(self) -> bool:
        return True

    @property
    def text_grad(self) -> bool:
        return self.trains_text_encoder

    def caption(self, text: str) -> str:
        return text

    def embeddings(self) -> list[Embedding]:
        return []

    def attach_second(self, text_encoder_2: CLIPTextModel) -> None:
        return None

    def resume_settings(self) -> dict[str, Any]:
        return self.cfg.method_settings()


def make_method(cfg: TrainConfig) -> TrainingMethod:
    """The method a run trains with (the ``method`` setting; LoRA when a config file predates it)."""
    if cfg.method == "textual-inversion":
        from lanskap.training.ti_method import TextualInversionMethod

        return TextualInversionMethod(cfg)
    if cfg.method == "dreambooth":
        from lanskap.training.dreambooth import dreambooth_method

        return dreambooth_method(cfg)
    from lanskap.training.lora_method import LoraMethod

    return LoraMethod(cfg)
