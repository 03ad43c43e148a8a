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

#: The tiny encoders' widths (CLIP-L's 768 and bigG's 1280 in SDXL): different, as there, because
#: single-file loaders tell the two apart by width. The base's cross-attention sees both: 80.
TEXT_L, TEXT_G = 32, 48
TIME = 8  # addition_time_embed_dim


def _encoder(vocab_size: int, *, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    width = TEXT_G if projection else TEXT_L
    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 2, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", projection_dim=width,
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
        projection_class_embeddings_input_dim=time_ids * TIME + TEXT_G,  # the time numbers and the pooled text
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
            unet=_unet(TEXT_G, 5), scheduler=scheduler, requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
        )  # fmt: skip
    else:
        write_clip_tokenizer(out / "tokenizer", pad_token="<|endoftext|>")  # CLIP-L pads with EOS, bigG with "!"
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=_encoder(vocab_size, projection=False), text_encoder_2=encoder_2,
            tokenizer=CLIPTokenizer.from_pretrained(str(out / "tokenizer")), tokenizer_2=tokenizer_2,
            unet=_unet(TEXT_L + TEXT_G, 6), scheduler=scheduler,
        )  # fmt: skip
    pipe.save_pretrained(str(out), safe_serialization=True)


def make_tiny_sdxl_lora(base: Path, out: Path, *, rank: int = 4, seed: int = 1, strength: float = 0.5) -> Path:
    """A random LoRA for a tiny SDXL, in kohya's format: ``lora_unet_``, ``lora_te1_`` (CLIP-L) and
    ``lora_te2_`` (bigG) keys with ``.alpha`` entries and SDXL's metadata, as kohya's sdxl_train_network
    writes them. Both factors are random, so every part visibly changes the output."""
    import tempfile

    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from lanskap.models.convert import kohya_sgm_unet

    parts = {
        "unet": UNet2DConditionModel.from_pretrained(str(Path(base) / "unet")),
        "text_encoder": CLIPTextModel.from_pretrained(str(Path(base) / "text_encoder")),
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(str(Path(base) / "text_encoder_2")),
    }
    gen = torch.Generator().manual_seed(seed)
    named: dict[str, torch.Tensor] = {}
    for prefix, module in parts.items():
        targets = (
            ["to_q", "to_k", "to_v", "to_out.0"] if prefix == "unet" else ["q_proj", "k_proj", "v_proj", "out_proj"]
        )
        module.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets))
        with torch.no_grad():
            for name, param in module.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * strength)
        for key, value in get_peft_model_state_dict(module).items():
            if prefix != "unet" and not key.startswith("text_model."):
                key = f"text_model.{key}"  # transformers 5 drops the level kohya's names keep
            named[f"{prefix}.{key}"] = value
    kohya = convert_state_dict_to_kohya({k: v for k, v in named.items() if not k.startswith("unet.")})
    unet = kohya_sgm_unet({k[5:]: v for k, v in named.items() if k.startswith("unet.")}, dict(parts["unet"].config))
    kohya.update(unet)
    kohya.update({f"{k.split('.')[0]}.alpha": torch.tensor(0.0) for k in unet})  # set to the rank below
    tensors = {k: (torch.tensor(float(rank)) if k.endswith(".alpha") else v.contiguous()) for k, v in kohya.items()}
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
            "ss_base_model_version": "sdxl_base_v1-0",
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        save_file(tensors, str(Path(tmp) / out.name), metadata=meta)
        Path(tmp, out.name).replace(out)
    return out
