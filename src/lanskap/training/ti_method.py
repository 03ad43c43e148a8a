"""Textual inversion as a training method: new token vectors, everything else frozen.

The vectors are an :class:`~lanskap.prompts.embeddings.Embedding` whose tensor is the trained
parameter, so the captions reach them exactly as prompts reach an embedding file at generation
time (``prompts/embeddings.py``: the token's ids matched, placeholders, a hook on the token
embeddings): what trains is what is used. The tokenizer and the text encoder are not changed.

The diffusers textual-inversion example imports torchvision, so nothing of it is reused; the
recipe is A1111's and kohya's (vectors started from an initial word, AdamW on them alone).
The run exports ``NAME.safetensors`` with kohya's ``emb_params`` (A1111 and ComfyUI read it, and
A1111's step/checkpoint fields sit in its metadata) and diffusers' ``learned_embeds.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lanskap.prompts.embeddings import Embedding, check_token
from lanskap.training.method import BaseMethod

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from lanskap.training.config import TrainConfig
    from lanskap.training.context import Networks, TrainRun

CHECKPOINT_FILE = "embedding.safetensors"
DIFFUSERS_FILE = "learned_embeds.safetensors"


def initial_vectors(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, init: str, count: int) -> torch.Tensor:
    """A1111's start: the init text's token embeddings, spread over ``count`` vectors (zeros without one)."""
    table = text_encoder.get_input_embeddings().weight.detach().float().cpu()
    ids = tokenizer(init or "*", add_special_tokens=False, truncation=False)["input_ids"][:count] or [0]
    rows = table[torch.tensor(ids)]
    return torch.stack([rows[i * rows.shape[0] // count] for i in range(count)]).clone()


class TextualInversionMethod(BaseMethod):
    name = "textual-inversion"
    makes = "embedding"

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.vectors: torch.nn.Parameter | None = None
        self.token = str(cfg.token).strip()

    @property
    def trains_unet(self) -> bool:
        return False

    @property
    def text_grad(self) -> bool:
        return True

    def attach(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer) -> None:
        check_token(tokenizer, self.token)
        start = initial_vectors(tokenizer, text_encoder, self.cfg.init_word, self.cfg.vectors)
        self.vectors = torch.nn.Parameter(start.to(text_encoder.device))

    def param_groups(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> list[dict[str, Any]]:
        assert self.vectors is not None
        return [{"params": [self.vectors], "lr": self.cfg.learning_rate}]

    def caption(self, text: str) -> str:
        """The token leads every caption that doesn't already hold it (a style, as kohya's style template)."""
        return text if self.token in text else f"{self.token}, {text}" if text else self.token

    def embeddings(self) -> list[Embedding]:
        assert self.vectors is not None
        return [Embedding(self.token, self.vectors)]

    def state(self) -> torch.Tensor:
        assert self.vectors is not None
        return self.vectors.detach().float().cpu().contiguous()

    def save_checkpoint(self, nets: Networks, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({"emb_params": self.state()}, str(folder / CHECKPOINT_FILE))

    def load_checkpoint(self, nets: Networks, folder: Path) -> None:
        from safetensors.torch import load_file

        assert self.vectors is not None
        with torch.no_grad():
            self.vectors.copy_(load_file(str(folder / CHECKPOINT_FILE))["emb_params"].to(self.vectors.device))

    def export(self, run: TrainRun) -> tuple[Path | None, Path | None]:
        from safetensors.torch import save

        from lanskap.io import atomic_write_bytes

        vec, cfg, model = self.state(), self.cfg, run.model
        family = model.family
        meta = {
            "name": cfg.output_name,
            "step": str(run.step),
            "sd_checkpoint": model.hash,
            "sd_checkpoint_name": model.name,
            "lanskap.token": self.token,
            "ss_base_model_version": family.kohya_version,
            "ss_num_train_images": str(len(run.data.records)),
            "ss_max_train_steps": str(cfg.max_train_steps),
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": f"{family.modelspec}/textual-inversion",
            "modelspec.title": cfg.output_name,
            "lanskap_config": json.dumps(cfg.to_dict(), default=str),
        }
        a1111 = run.layout.kohya(cfg.output_name)
        atomic_write_bytes(a1111, save({"emb_params": vec}, metadata=meta))
        diffusers = run.layout.root / DIFFUSERS_FILE
        atomic_write_bytes(diffusers, save({self.token: vec}, metadata={"format": "pt"}))
        return diffusers, a1111
