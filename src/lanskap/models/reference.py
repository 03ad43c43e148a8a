"""The full SD 2.1 (768-v) and SDXL 1.0 architectures with random weights, for speed and memory benchmarks.

Speed and memory don't depend on weight values, so where the real weights can't
be downloaded, benchmarks build a model of exactly SD 2.1's shapes (865M-parameter
UNet, OpenCLIP-H text encoder, the SD VAE) from these configs, copied from the
model's published ``config.json`` files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SD21_UNET = {
    "sample_size": 96,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
    "upcast_attention": True,
    "norm_num_groups": 32,
}
SD21_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}
SD21_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 512,
}
SD21_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "timestep_spacing": "leading",
}


def build_random_sd21(out: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a diffusers folder with SD 2.1's architecture and random weights (about 2.6 GB in fp16)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lanskap.models.tokenizer import write_clip_tokenizer

    out = Path(out)
    if (out / "model_index.json").is_file():
        return out
    torch.manual_seed(0)
    write_clip_tokenizer(out / "tokenizer")
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD21_VAE).to(dtype),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD21_TEXT)).to(dtype),
        tokenizer=CLIPTokenizer.from_pretrained(str(out / "tokenizer")),
        unet=UNet2DConditionModel(**SD21_UNET).to(dtype),
        scheduler=DDIMScheduler(**SD21_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    (out / "lanskap_reference.json").write_text(json.dumps({"random_weights": True, "architecture": "sd-2.1-768-v"}))
    return out


# SDXL 1.0 base, from stabilityai/stable-diffusion-xl-base-1.0's published configs.
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
SDXL_VAE = {**SD21_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
SDXL_TEXT_L = {**SD21_TEXT, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "num_attention_heads": 12, "hidden_act": "quick_gelu", "projection_dim": 768}  # fmt: skip
SDXL_TEXT_G = {**SD21_TEXT, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
               "num_attention_heads": 20, "projection_dim": 1280}  # fmt: skip
SDXL_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "steps_offset": 1, "timestep_spacing": "leading",
                  "prediction_type": "epsilon"}  # fmt: skip


def build_random_sdxl(out: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a diffusers folder with SDXL 1.0 base's architecture and random weights (about 7 GB in fp16)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from lanskap.models.tokenizer import write_clip_tokenizer

    out = Path(out)
    if (out / "model_index.json").is_file():
        return out
    torch.manual_seed(0)
    write_clip_tokenizer(out / "tokenizer", pad_token="<|endoftext|>")
    write_clip_tokenizer(out / "tokenizer_2")
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(**SDXL_VAE).to(dtype),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_L)).to(dtype),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_G)).to(dtype),
        tokenizer=CLIPTokenizer.from_pretrained(str(out / "tokenizer")),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(out / "tokenizer_2")),
        unet=UNet2DConditionModel(**SDXL_UNET).to(dtype),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        add_watermarker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    (out / "lanskap_reference.json").write_text(json.dumps({"random_weights": True, "architecture": "sdxl-1.0-base"}))
    return out
