"""DreamBooth as a training method: one instance prompt for every picture, with LoRA or the whole UNet.

The diffusers DreamBooth example's recipe (its scripts import torchvision, so none is reused):
every training picture is captioned with the instance prompt ("a photo of sks castle"); with
prior preservation, pictures of the class ("a photo of a castle") made by the base model before
training (``training/class_images.py``) are trained on too, and their loss, weighted by
``prior_loss_weight``, is added to the instance loss, so the class keeps what it was. The target
follows the scheduler's ``prediction_type`` as for every method (v for SD 2.1 768).

With LoRA (the default) the run exports a LoRA exactly as a LoRA run does; ``full`` trains every
UNet weight and exports a diffusers folder (``model/``) and an A1111 single file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lanskap.training.lora_method import LoraMethod
from lanskap.training.method import BaseMethod

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from lanskap.training.config import TrainConfig
    from lanskap.training.context import Networks, TrainRun
    from lanskap.training.method import TrainingMethod

UNET_FILE = "unet.safetensors"
MODEL_FOLDER = "model"


class InstanceCaptions:
    """Every picture is captioned with the instance prompt (what makes a run DreamBooth)."""

    name = "dreambooth"
    cfg: TrainConfig

    def caption(self, text: str) -> str:
        return str(self.cfg.instance_prompt)


class DreamBoothLora(InstanceCaptions, LoraMethod):
    """LoRA adapters trained on the instance prompt (and the class pictures)."""


class DreamBoothFull(InstanceCaptions, BaseMethod):
    """Every UNet weight trains (the text encoder stays frozen)."""

    makes = "model"

    def attach(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer) -> None:
        unet.requires_grad_(True)

    def param_groups(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> list[dict[str, Any]]:
        return [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": self.cfg.learning_rate}]

    def save_checkpoint(self, nets: Networks, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().float().cpu().contiguous() for k, v in nets.raw_unet.state_dict().items()}
        save_file(state, str(folder / UNET_FILE))

    def load_checkpoint(self, nets: Networks, folder: Path) -> None:
        from safetensors.torch import load_file

        nets.raw_unet.load_state_dict(load_file(str(folder / UNET_FILE)))

    def export(self, run: TrainRun) -> tuple[Path | None, Path | None]:
        """The fine-tuned model as a diffusers folder (written whole, then renamed) and one A1111 file."""
        from lanskap.io import atomic_dir
        from lanskap.models.convert import export_single_file

        folder = run.layout.root / MODEL_FOLDER
        pipe = run.model.pipe
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[self.cfg.save_precision]
        with atomic_dir(folder) as tmp:
            pipe.to(dtype=dtype)  # the run is over: the trained weights are saved at the chosen precision
            pipe.save_pretrained(str(tmp), safe_serialization=True)
        single = export_single_file(
            folder, run.layout.kohya(self.cfg.output_name), prediction_type=run.nets.prediction_type
        )
        return folder, single


def dreambooth_method(cfg: TrainConfig) -> TrainingMethod:
    return DreamBoothFull(cfg) if cfg.full else DreamBoothLora(cfg)
