"""Tiny random SDXL base and refiner models of the real classes (a test kit, as ``models/tiny.py``).

The base has SDXL's two text encoders (a CLIP text model and one with a projection, whose
hidden states are concatenated for the cross-attention and whose projection gives the pooled
embedding) and a UNet with SDXL's addition embeddings (``text_time``: six size and crop numbers
plus the pooled text). The refiner has the second encoder only, and five time numbers (an
aesthetic score instead of the target size), as SDXL's refiner does.
"""

from __future__ import annotations

from pathlib import Path

from lanskap.models.tokenizer import write_clip_tokenizer

TEXT = 32  # each tiny encoder's width; the base's cross-attention sees both: 64
TIME = 8  # addition_time_embed_dim


def _encoder(vocab_size: int, *, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT, intermediate_size=TEXT * 2, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", projection_dim=TEXT,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=0)  # fmt: skip
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def _unet(cross_dim: int, time_ids: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),  # SDXL stacks more transformer layers in its deeper blocks
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME,
        projection_class_embeddings_input_dim=time_ids * TIME + TEXT,  # the time numbers and the pooled text
        cross_attention_dim=cross_dim,
        norm_num_groups=8,
    )


def build_sdxl(out: Path, *, refiner: bool = False) -> None:
    """Write a tiny SDXL base (or refiner) as a diffusers folder."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from lanskap.models.tiny import _vae

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")  # fmt: skip
    tok_dir = out / "tokenizer_2"
    vocab_size = write_clip_tokenizer(tok_dir)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(tok_dir))
    encoder_2 = _encoder(vocab_size, projection=True)
    vae = _vae()
    vae.register_to_config(scaling_factor=0.13025, force_upcast=True)  # SDXL's VAE: another scale, fp16-unsafe
    if refiner:
        pipe = StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=encoder_2, tokenizer=None, tokenizer_2=tokenizer_2,
            unet=_unet(TEXT, 5), scheduler=scheduler, requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
        )  # fmt: skip
    else:
        write_clip_tokenizer(out / "tokenizer")
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=_encoder(vocab_size, projection=False), text_encoder_2=encoder_2,
            tokenizer=CLIPTokenizer.from_pretrained(str(out / "tokenizer")), tokenizer_2=tokenizer_2,
            unet=_unet(2 * TEXT, 6), scheduler=scheduler,
        )  # fmt: skip
    pipe.save_pretrained(str(out), safe_serialization=True)
