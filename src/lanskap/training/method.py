"""The training-method seam: what differs between LoRA, textual inversion, DreamBooth, ….

The trainer's steps (set-up, data, the step, validation, checkpoints) are the same for
every method. A method says which parameters train, what a checkpoint and a resume must
hold of them, and what the run exports at the end. LoRA (``training/lora_method.py``)
is the first; a new method is a new module with these members, added to :data:`METHODS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from lanskap.training.config import TrainConfig
    from lanskap.training.context import Networks, TrainRun


class TrainingMethod(Protocol):
    name: str

    @property
    def trains_text_encoder(self) -> bool:
        """Whether the text encoder gets gradients (and goes through ``accelerator.prepare``)."""
        ...

    def attach(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> None:
        """Add the trainable parameters to the base model's modules."""
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


def make_method(cfg: TrainConfig) -> TrainingMethod:
    """The method a run trains with. LoRA is the only one today; the config gains a ``method``
    setting (and this a lookup) with the second, so that today's config files stay as they are."""
    from lanskap.training.lora_method import LoraMethod

    return LoraMethod(cfg)
