"""lanskap-mini's architecture: SD 2.1's classes, sized for 128 px scenes on a CPU.

The same diffusers/transformers classes as SD 2.1 (UNet2DConditionModel with linear
projections, AutoencoderKL, CLIPTextModel + CLIPTokenizer, a v-prediction DDIM scheduler), so
the one loader, the engine, LoRA, img2img, inpainting, the web app and the API all work on it
unchanged. Only the sizes differ: the VAE downsamples by 4 (128 px → 32×32×4 latents) and the
UNet has 11 M parameters, so an image takes a few seconds on a laptop CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lanskap.io import atomic_dir

# Where the shipped weights live and how a folder is recognised: models/builtin.py, so the
# loader finds lanskap-mini without importing this module.
from lanskap.models.builtin import MARKER, NAME, SIZE, card, is_mini, shipped  # noqa: F401

TEXT_DIM = 128
PREDICTION_TYPE = "v_prediction"


def tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    from lanskap.mini.scenes import STYLES, vocabulary
    from lanskap.models.tokenizer import write_clip_tokenizer

    write_clip_tokenizer(folder, n_merges=640, words=vocabulary() + list(STYLES) + ["style"])
    return CLIPTokenizer.from_pretrained(str(folder))


def text_encoder(vocab_size: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TEXT_DIM,
            intermediate_size=4 * TEXT_DIM,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,  # the engine's 75-token chunks + BOS/EOS
            hidden_act="gelu",
            projection_dim=TEXT_DIM,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=0,
        )
    )


def vae() -> Any:
    from diffusers import AutoencoderKL

    # Three blocks: a latent scale factor of 4, so a moon or a castle tower is a few latent pixels.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=16,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        sample_size=SIZE,
    )


UNET_CHANNELS = (64, 128, 192)  # 10.9 M parameters; its prompt following is measured in docs/tutorial-mini.md


def unet(channels: tuple[int, int, int] = UNET_CHANNELS) -> Any:
    from diffusers import UNet2DConditionModel

    # SD 2.1's UNet in miniature: linear projections, cross-attention at 16×16 and 8×8.
    # ``channels`` is per level (32×32, 16×16, 8×8 latents); each must divide into 16 groups.
    return UNet2DConditionModel(
        sample_size=SIZE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=tuple(channels),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=(2, 4, 8),
        use_linear_projection=True,
        norm_num_groups=16,
    )


def scheduler_config() -> dict[str, Any]:
    """SD 2.1's noise schedule and v-prediction target, unchanged: what lanskap-mini stands in for."""
    from lanskap.models.reference import SD21_SCHEDULER

    return dict(SD21_SCHEDULER)


def save_pipeline(
    out: Path,
    *,
    vae_model: Any,
    text_model: Any,
    tok: Any,
    unet_model: Any,
    card: dict,  # noqa: F811 - the argument shadows card() inside this function only
) -> Path:
    """Write a diffusers folder (fp16 safetensors) atomically: a temp folder, then a rename."""
    import copy

    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    half = lambda m: copy.deepcopy(m).to("cpu", torch.float16)  # noqa: E731 - copies: the caller keeps training
    pipe = StableDiffusionPipeline(
        vae=half(vae_model),
        text_encoder=half(text_model),
        tokenizer=tok,
        unet=half(unet_model),
        scheduler=DDIMScheduler(**scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = Path(out)
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / MARKER).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return out
