"""Tiny, randomly initialised models of the same classes lanskap loads for real.

No machine here can download SD 2.1, BLIP, CLIP or Inception weights, so tests
and demos run on these. They are saved in the same on-disk formats as the real
ones (diffusers folders, transformers folders, safetensors) and load through the
same code paths. Their outputs are noise: they prove the flow, not the quality.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from lanskap.errors import LanskapError, SettingError
from lanskap.io import atomic_dir
from lanskap.models.tokenizer import write_clip_tokenizer

KINDS = (
    "sd", "sd-inpaint", "sd-depth", "sd-upscale", "sdxl", "sdxl-refiner", "controlnet", "depth-estimator",
    "esrgan", "blip", "clip", "inception",
)  # fmt: skip
TINY_TEXT_DIM = 32  # stands in for SD 2.x's 1024-d OpenCLIP text embeddings
TINY_MARKER = "lanskap_tiny.json"


def _text_encoder(vocab_size: int, hidden: int = TINY_TEXT_DIM, layers: int = 2):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=hidden,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=0,
    )
    return CLIPTextModel(cfg)


def _unet(in_channels: int, cross_dim: int, sample_size: int):
    from diffusers import UNet2DConditionModel

    # SD 2.1's UNet in miniature: linear projections, upcast attention, cross-attention
    # at the lower resolution (keeps CPU tests fast at 768 px).
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_dim,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        upcast_attention=True,
        norm_num_groups=8,
    )


def _vae():
    from diffusers import AutoencoderKL

    # Four blocks, like the real VAE, so the latent scale factor is 8.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=256,
        scaling_factor=0.18215,
    )


def _scheduler(prediction_type: str):
    from diffusers import DDIMScheduler

    # SD 2.1's scheduler config, including its v-prediction target.
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
        timestep_spacing="leading",
    )


def _build_sd(out: Path, *, inpaint: bool, prediction_type: str, cross_dim: int) -> None:
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tok_dir = out / "tokenizer"
    vocab_size = write_clip_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(
        vae=_vae(),
        text_encoder=_text_encoder(vocab_size, hidden=cross_dim),
        tokenizer=tokenizer,
        unet=_unet(9 if inpaint else 4, cross_dim, sample_size=96 if not inpaint else 64),
        scheduler=_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)


def _build_sd_upscale(out: Path) -> None:
    """Stability's x4 upscaler in miniature: a 7-channel UNet with noise-level class embeddings,
    a VAE with a latent scale of 4, a text encoder, and both of its schedulers."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    tok_dir = out / "tokenizer"
    vocab_size = write_clip_tokenizer(tok_dir)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=7, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM, attention_head_dim=(2, 4), use_linear_projection=True,
        norm_num_groups=8, num_class_embeds=1000,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.08333,
    )  # fmt: skip
    low_res = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02,
                          clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction")  # fmt: skip
    pipe = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=_text_encoder(vocab_size), tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)),
        unet=unet, low_res_scheduler=low_res, scheduler=sched, max_noise_level=350,
    )  # fmt: skip
    pipe.save_pretrained(str(out), safe_serialization=True)


def _build_sd_depth(out: Path, cross_dim: int) -> None:
    """SD 2's depth model in miniature: a 5-channel UNet (latents + depth) and a tiny DPT estimator."""
    from diffusers import StableDiffusionDepth2ImgPipeline
    from transformers import CLIPTokenizer

    from lanskap.models.tiny_aux import depth_estimator

    tok_dir = out / "tokenizer"
    vocab_size = write_clip_tokenizer(tok_dir)
    estimator, processor = depth_estimator()
    pipe = StableDiffusionDepth2ImgPipeline(
        vae=_vae(), text_encoder=_text_encoder(vocab_size, hidden=cross_dim),
        tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)), unet=_unet(5, cross_dim, sample_size=64),
        scheduler=_scheduler("epsilon"), depth_estimator=estimator, feature_extractor=processor,
    )  # fmt: skip
    pipe.save_pretrained(str(out), safe_serialization=True)


_ZERO_INIT = ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")


def _build_controlnet(out: Path, cross_dim: int, seed: int) -> None:
    """A ControlNet of the tiny SD's UNet (``ControlNetModel.from_unet``), as a diffusers folder.

    A fresh ControlNet's output convolutions are zero (no effect until trained); here they are
    random, so that a unit visibly changes the picture.
    """
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(_unet(4, cross_dim, sample_size=96))
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(_ZERO_INIT):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    net.save_pretrained(str(out), safe_serialization=True)


def tiny_esrgan_state(scale: int = 4, nf: int = 8, nb: int = 1, gc: int = 4) -> dict[str, torch.Tensor]:
    """A random RRDBNet state dict of the real key names (Real-ESRGAN's layout) at ``scale`` 1, 2 or 4."""
    from lanskap.upscale.rrdbnet import RRDBNet, Shape

    in_nc = {4: 3, 2: 12, 1: 48}[scale]
    net = RRDBNet(Shape(in_nc=in_nc, out_nc=3, nf=nf, gc=gc, nb=nb, ups=2))
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def make_tiny(
    out: Path,
    kind: str = "sd",
    *,
    seed: int = 0,
    prediction_type: str | None = None,
    cross_attention_dim: int = TINY_TEXT_DIM,
    overwrite: bool = False,
) -> Path:
    """Write a tiny random model of ``kind`` to ``out`` (built in a temp dir, then renamed)."""
    if kind not in KINDS:
        raise LanskapError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(KINDS)}")
    out = Path(out)
    occupied = any(out.iterdir()) if out.is_dir() else out.exists()
    if occupied and not overwrite:
        raise SettingError(f"{out} already exists and is not empty; allow overwriting to replace it", "overwrite")
    torch.manual_seed(seed)
    with atomic_dir(out) as tmp:
        if kind in ("sd", "sd-inpaint"):
            pred = prediction_type or ("epsilon" if kind == "sd-inpaint" else "v_prediction")
            _build_sd(tmp, inpaint=kind == "sd-inpaint", prediction_type=pred, cross_dim=cross_attention_dim)
        elif kind == "sd-upscale":
            _build_sd_upscale(tmp)
        elif kind in ("sdxl", "sdxl-refiner"):
            from lanskap.models.tiny_sdxl import build_sdxl

            build_sdxl(tmp, refiner=kind == "sdxl-refiner")
        elif kind == "sd-depth":
            _build_sd_depth(tmp, cross_attention_dim)
        elif kind == "controlnet":
            _build_controlnet(tmp, cross_attention_dim, seed)
        elif kind == "depth-estimator":
            from lanskap.models.tiny_aux import build_depth_estimator

            build_depth_estimator(tmp)
        elif kind == "esrgan":  # a folder holding one x4 file, to copy into $LANSKAP_HOME/upscalers
            from safetensors.torch import save_file

            save_file(tiny_esrgan_state(4), str(tmp / "tiny-esrgan-x4.safetensors"))
        elif kind == "blip":
            from lanskap.models.tiny_aux import build_blip

            build_blip(tmp)
        elif kind == "clip":
            from lanskap.models.tiny_aux import build_clip

            build_clip(tmp)
        else:
            from lanskap.models.tiny_aux import build_inception

            build_inception(tmp)
        (tmp / TINY_MARKER).write_text(
            json.dumps({"kind": kind, "seed": seed, "random_weights": True}, indent=2), encoding="utf-8"
        )
    return out


def is_tiny(folder: Path) -> bool:
    return (Path(folder) / TINY_MARKER).is_file()


def make_tiny_lora(
    base: Path,
    out: Path,
    *,
    rank: int = 4,
    seed: int = 1,
    strength: float = 0.5,
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"),
) -> Path:
    """Write a random LoRA for ``base`` in diffusers format (for tests and demos).

    LoRA ``B`` matrices normally start at zero (no effect); here both factors are
    random so that the LoRA visibly changes the output.
    """
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(Path(base) / "unet"))
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=True))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * strength)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True)
        Path(tmp, "pytorch_lora_weights.safetensors").rename(out)
    return out
