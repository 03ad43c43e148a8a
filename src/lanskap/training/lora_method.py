"""LoRA as a training method: low-rank adapters on the UNet (and optionally the text encoder).

The adapters are peft's; checkpoints keep peft's own tensors (an exact copy) plus a
diffusers file, and the finished run exports a diffusers LoRA and a kohya/A1111 one
(``training/adapters.py`` does the formats).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lanskap.training.adapters import (
    attach_lora,
    attach_text_lora,
    kohya_metadata,
    load_peft_state,
    lora_parameters,
    peft_state,
    save_diffusers,
    save_kohya,
    to_kohya,
)
from lanskap.training.method import BaseMethod

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from lanskap.training.context import Networks, TrainRun

UNET_FILE = "unet_lora.safetensors"
TEXT_ENCODER_FILE = "text_encoder_lora.safetensors"
TEXT_ENCODER_2_FILE = "text_encoder_2_lora.safetensors"  # SDXL's bigG
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class LoraMethod(BaseMethod):
    name = "lora"

    @property
    def trains_text_encoder(self) -> bool:
        return bool(self.cfg.train_text_encoder)

    text_encoder_2: CLIPTextModel | None = None  # SDXL's bigG, when its LoRA trains too

    def attach(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer) -> None:
        attach_lora(unet, text_encoder if self.trains_text_encoder else None, self.cfg)

    def attach_second(self, text_encoder_2: CLIPTextModel) -> None:
        if self.trains_text_encoder:
            attach_text_lora(text_encoder_2, self.cfg)
            self.text_encoder_2 = text_encoder_2

    def param_groups(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> list[dict[str, Any]]:
        groups = [{"params": lora_parameters(unet), "lr": self.cfg.learning_rate}]
        if self.trains_text_encoder:
            params = lora_parameters(text_encoder)
            if self.text_encoder_2 is not None:
                params += lora_parameters(self.text_encoder_2)
            groups.append({"params": params, "lr": self.cfg.text_encoder_lr or self.cfg.learning_rate})
        return groups

    def states(self, nets: Networks) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """The UNet's and the text encoder's adapter tensors (peft naming, fp32 on the CPU)."""
        return peft_state(nets.raw_unet), (peft_state(nets.raw_te) if self.trains_text_encoder else None)

    def second_state(self) -> dict[str, torch.Tensor] | None:
        """SDXL's bigG adapter tensors, when it trains."""
        return peft_state(self.text_encoder_2) if self.text_encoder_2 is not None else None

    def save_checkpoint(self, nets: Networks, folder: Path) -> None:
        from safetensors.torch import save_file

        unet_state, te_state = self.states(nets)
        te2_state = self.second_state()
        save_file(unet_state, str(folder / UNET_FILE))
        if te_state is not None:
            save_file(te_state, str(folder / TEXT_ENCODER_FILE))
        if te2_state is not None:
            save_file(te2_state, str(folder / TEXT_ENCODER_2_FILE))
        save_diffusers(folder, unet_state, te_state, self.cfg, te2_state, sdxl=nets.text_encoder_2 is not None)

    def load_checkpoint(self, nets: Networks, folder: Path) -> None:
        from safetensors.torch import load_file

        load_peft_state(nets.raw_unet, load_file(str(folder / UNET_FILE)))
        if self.trains_text_encoder:
            load_peft_state(nets.raw_te, load_file(str(folder / TEXT_ENCODER_FILE)))
        if self.text_encoder_2 is not None:
            load_peft_state(self.text_encoder_2, load_file(str(folder / TEXT_ENCODER_2_FILE)))

    def export(self, run: TrainRun) -> tuple[Path | None, Path | None]:
        cfg, model = self.cfg, run.model
        unet_state, te_state = self.states(run.nets)
        te2_state, sdxl = self.second_state(), model.family.is_sdxl
        lora_path = save_diffusers(run.layout.root, unet_state, te_state, cfg, te2_state, sdxl=sdxl)
        meta = kohya_metadata(
            cfg,
            prediction_type=run.nets.prediction_type,
            resolution=run.resolution,
            model_name=model.name,
            model_hash=model.hash,
            num_images=len(run.data.records),
            steps=run.step,
            captions=[r.caption for r in run.data.records],
            started=run.started,
            family=model.family,
        )
        unet_config = dict(run.nets.raw_unet.config) if sdxl else None
        tensors = to_kohya(unet_state, te_state, cfg.alpha, SAVE_DTYPES[cfg.save_precision], te2_state, unet_config)
        kohya_path = save_kohya(run.layout.kohya(cfg.output_name), tensors, meta)
        return lora_path, kohya_path
