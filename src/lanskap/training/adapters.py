"""Attach LoRA adapters for training and write them out in diffusers and kohya/A1111 format.

The diffusers file (``pytorch_lora_weights.safetensors``) loads with
``pipe.load_lora_weights``. The kohya file (``lora_unet_…``/``lora_te_…`` keys,
``.alpha`` entries, ``ss_*`` and ``modelspec`` metadata) is what AUTOMATIC1111,
ComfyUI and InvokeAI read. Text-encoder keys are ``lora_te_text_model_encoder_layers_N_…``
whatever the transformers version: A1111 maps SD 2.x text-encoder LoRAs to OpenCLIP's
``resblocks.N`` only from that form, ComfyUI's key table (``model_lora_keys_clip``) is built
from it, and A1111 ignores the ``lora_te1_`` prefix that diffusers' converter writes on SD 2.x.
transformers 5's ``CLIPTextModel`` has no ``text_model`` level in its module names, so the
level is put back here.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lanskap import __version__
from lanskap.errors import LanskapError
from lanskap.io import atomic_write_bytes
from lanskap.training.config import TEXT_ENCODER_TARGETS, TrainConfig
from lanskap.training.layout import DIFFUSERS_FILE

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel

    from lanskap.models.family import ModelFamily


def attach_lora(unet: UNet2DConditionModel, text_encoder: CLIPTextModel | None, cfg: TrainConfig) -> None:
    """Add trainable LoRAs (B = 0 at start, so step 0 is exactly the base model)."""
    from peft import LoraConfig

    def config(targets: list[str]) -> LoraConfig:
        return LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.lora_dropout,
            init_lora_weights="gaussian",
            target_modules=targets,
        )

    try:
        unet.add_adapter(config(cfg.unet_targets()))
    except ValueError as exc:
        raise LanskapError(f"the LoRA targets don't match this model's UNet: {str(exc).splitlines()[0]}") from None
    if not lora_parameters(unet):
        raise LanskapError(f"none of the LoRA targets ({', '.join(cfg.unet_targets())}) exist in this model's UNet")
    if text_encoder is not None:
        attach_text_lora(text_encoder, cfg)
    for p in lora_parameters(unet):
        p.requires_grad_(True)


def attach_text_lora(text_encoder: CLIPTextModel, cfg: TrainConfig) -> None:
    """A trainable LoRA on a text encoder's attention (SDXL's second encoder gets one the same way)."""
    from peft import LoraConfig

    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.lora_dropout, init_lora_weights="gaussian",
                      target_modules=list(TEXT_ENCODER_TARGETS))  # fmt: skip
    try:
        text_encoder.add_adapter(lora)
    except ValueError as exc:
        if "version of peft" in str(exc).lower():  # transformers refuses this peft release
            raise LanskapError(version_clash(str(exc))) from None
        raise LanskapError(f"this model's text encoder has no {'/'.join(TEXT_ENCODER_TARGETS)} layers: {exc}") from None
    for p in lora_parameters(text_encoder):
        p.requires_grad_(True)


def version_clash(detail: str) -> str:
    """Name the installed transformers/peft pair, which is what is wrong, not the model."""
    from importlib.metadata import version

    first = " ".join(detail.split())[:200]
    return (
        f"the installed transformers {version('transformers')} and peft {version('peft')} do not work together "
        f"({first}); install the tested set from constraints.txt"
    )


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in module.named_parameters() if "lora_" in n]


def peft_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's own tensors (peft naming), detached on CPU in fp32: a checkpoint's exact copy."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in get_peft_model_state_dict(module).items()}


def load_peft_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(module, state)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise LanskapError(f"checkpoint LoRA does not fit this model ({len(unexpected)} unexpected keys)")


def save_diffusers(
    out_dir: Path,
    unet_state: dict[str, torch.Tensor],
    te_state: dict[str, torch.Tensor] | None,
    cfg: TrainConfig,
    te2_state: dict[str, torch.Tensor] | None = None,
    sdxl: bool = False,
) -> Path:
    """``pytorch_lora_weights.safetensors``, written to a temp folder and renamed into place
    (SDXL's with its second text encoder's part, as diffusers' SDXL pipeline saves it)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"r": cfg.rank, "lora_alpha": cfg.alpha, "target_modules": cfg.unet_targets()}
    te_meta = {"r": cfg.rank, "lora_alpha": cfg.alpha, "target_modules": list(TEXT_ENCODER_TARGETS)}
    # peft naming (lora_A/lora_B) as is: diffusers' old-format converter renames only the
    # attention keys, and a file mixing both namings loses the attention part on load.
    parts = {"unet_lora_layers": unet_state, "text_encoder_lora_layers": te_state or None,
             "unet_lora_adapter_metadata": meta,
             "text_encoder_lora_adapter_metadata": te_meta if te_state else None}  # fmt: skip
    if sdxl:
        parts["text_encoder_2_lora_layers"] = te2_state or None
        parts["text_encoder_2_lora_adapter_metadata"] = te_meta if te2_state else None
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".lora.") as tmp:
        (StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline).save_lora_weights(
            tmp, safe_serialization=True, **parts
        )
        dest = out_dir / DIFFUSERS_FILE
        Path(tmp, DIFFUSERS_FILE).replace(dest)
    return dest


def to_kohya(
    unet_state: dict[str, torch.Tensor],
    te_state: dict[str, torch.Tensor] | None,
    alpha: float,
    dtype: torch.dtype = torch.float16,
    te2_state: dict[str, torch.Tensor] | None = None,
    sdxl_unet: dict | None = None,
) -> dict[str, torch.Tensor]:
    """peft tensors → kohya keys (``lora_unet_…``, ``lora_te_…``) with ``.alpha`` entries.

    For SDXL (``sdxl_unet``: its UNet config) as kohya's sdxl_train_network writes them: the UNet in
    SGM's block names, the encoders as ``lora_te1_`` (CLIP-L) and ``lora_te2_`` (bigG).
    """
    from diffusers.utils import convert_state_dict_to_kohya

    from lanskap.models.convert import kohya_sgm_unet

    named = {} if sdxl_unet is not None else {f"unet.{k}": v for k, v in unet_state.items()}
    named.update({f"text_encoder.{_with_text_model(k)}": v for k, v in (te_state or {}).items()})
    named.update({f"text_encoder_2.{_with_text_model(k)}": v for k, v in (te2_state or {}).items()})
    kohya = convert_state_dict_to_kohya(named) if named else {}
    if sdxl_unet is not None:
        unet = kohya_sgm_unet(unet_state, sdxl_unet)
        kohya.update(unet)
        kohya.update({f"{k.split('.')[0]}.alpha": torch.tensor(float(alpha)) for k in unet})
    out: dict[str, torch.Tensor] = {}
    for key, value in kohya.items():
        if sdxl_unet is None:
            key = key.replace("lora_te1_", "lora_te_", 1)
        if key.endswith(".alpha"):
            value = torch.tensor(float(alpha))
        out[key] = value.detach().to("cpu", dtype if value.is_floating_point() else value.dtype).contiguous()
    return out


def _with_text_model(key: str) -> str:
    """``encoder.layers.0…`` (transformers 5) → ``text_model.encoder.layers.0…`` (CLIP's own layout)."""
    return key if key.startswith("text_model.") else f"text_model.{key}"


def kohya_metadata(
    cfg: TrainConfig,
    *,
    prediction_type: str,
    resolution: int,
    model_name: str,
    model_hash: str,
    num_images: int,
    steps: int,
    captions: list[str],
    started: float,
    family: ModelFamily,
) -> dict[str, str]:
    """The ``ss_*`` keys kohya writes and A1111's LoRA browser reads, plus SAI ``modelspec``."""
    v_pred = prediction_type == "v_prediction"
    sd2, arch = family.is_sd2, family.modelspec
    words: dict[str, int] = {}
    for cap in captions:
        for tag in (t.strip() for t in cap.split(",")):
            if tag:
                words[tag] = words.get(tag, 0) + 1
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(cfg.rank),
        "ss_network_alpha": str(cfg.alpha),
        "ss_base_model_version": family.kohya_version,
        "ss_v2": str(sd2),
        "ss_v_parameterization": str(v_pred),
        "ss_sd_model_name": model_name,
        "ss_new_sd_model_hash": model_hash,
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_learning_rate": str(cfg.learning_rate),
        "ss_text_encoder_lr": str(cfg.text_encoder_lr or cfg.learning_rate) if cfg.train_text_encoder else "0",
        "ss_unet_lr": str(cfg.learning_rate),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": str(cfg.lr_warmup_steps),
        "ss_max_train_steps": str(cfg.max_train_steps),
        "ss_steps": str(steps),
        "ss_batch_size_per_device": str(cfg.train_batch_size),
        "ss_gradient_accumulation_steps": str(cfg.gradient_accumulation_steps),
        "ss_max_grad_norm": str(cfg.max_grad_norm),
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_seed": str(cfg.seed),
        "ss_min_snr_gamma": str(cfg.snr_gamma) if cfg.snr_gamma else "None",
        "ss_noise_offset": str(cfg.noise_offset) if cfg.noise_offset else "None",
        "ss_num_train_images": str(num_images),
        "ss_flip_aug": str(cfg.random_flip),
        "ss_enable_bucket": str(cfg.bucketing),
        "ss_training_started_at": str(started),
        "ss_training_finished_at": str(time.time()),
        "ss_output_name": cfg.output_name,
        "ss_tag_frequency": json.dumps({"lanskap": dict(sorted(words.items(), key=lambda kv: -kv[1])[:200])}),
        "ss_training_comment": f"trained with lanskap {__version__} (preset {cfg.preset})",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{arch}/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": cfg.output_name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.prediction_type": "v" if v_pred else "epsilon",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()),
        "lanskap_config": json.dumps(cfg.to_dict()),
    }


def save_kohya(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    from safetensors.torch import save

    return atomic_write_bytes(Path(path), save(tensors, metadata=metadata))
