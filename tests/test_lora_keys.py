"""The kohya/A1111 LoRA export names every module the way A1111 and ComfyUI look it up.

The two tables below are written from those projects' public loading code:

* A1111's built-in Lora extension (``extensions-builtin/Lora/networks.py``,
  ``convert_diffusers_name_to_compvis``) turns a kohya key into the LDM module name
  (``diffusion_model_input_blocks_1_1_…``; on SD 2.x ``model_transformer_resblocks_N_…`` for
  the OpenCLIP-H text encoder), and, when that name is not a module, retries a ``_q_proj`` /
  ``_k_proj`` / ``_v_proj`` key on the ``nn.MultiheadAttention`` above it.
* ComfyUI's ``comfy/lora.py`` (``model_lora_keys_unet`` / ``model_lora_keys_clip``) accepts
  ``lora_unet_`` + the diffusers UNet module path, and ``lora_te_text_model_encoder_layers_{b}_{c}``
  for ``c`` in its ``LORA_CLIP_MAP``.

They are checked on a tiny model with SD 2.1's real layout: 4 levels, 2 ResNets per level,
linear projections in the transformers, a 23-layer text encoder. The LDM names the export is
checked against come from lanskap's single-file export, which diffusers' own LDM converter
reads back here, so the names are the real ones.
"""

from __future__ import annotations

import re

import pytest
import torch

from lanskap.models.convert import open_clip_text_to_ldm, unet_to_ldm
from lanskap.training.adapters import attach_lora, peft_state, to_kohya
from lanskap.training.config import TrainConfig

# -- A1111 ------------------------------------------------------------------------------------------
_A1111_RESNET = {
    "conv1": "in_layers_2",
    "conv2": "out_layers_3",
    "norm1": "in_layers_0",
    "norm2": "out_layers_0",
    "time_emb_proj": "emb_layers_1",
    "conv_shortcut": "skip_connection",
}


def a1111_compvis_name(key: str) -> str:
    """A1111's ``convert_diffusers_name_to_compvis(key, is_sd2=True)``, branch for branch."""

    def suffix(kind: str, rest: str) -> str:
        return _A1111_RESNET.get(rest, rest) if kind == "resnets" else rest

    if m := re.match(r"lora_unet_conv_in(.*)", key):
        return f"diffusion_model_input_blocks_0_0{m[1]}"
    if m := re.match(r"lora_unet_conv_out(.*)", key):
        return f"diffusion_model_out_2{m[1]}"
    if m := re.match(r"lora_unet_time_embedding_linear_(\d+)(.*)", key):
        return f"diffusion_model_time_embed_{int(m[1]) * 2 - 2}{m[2]}"
    if m := re.match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
        block = 1 + int(m[1]) * 3 + int(m[3])
        return f"diffusion_model_input_blocks_{block}_{1 if m[2] == 'attentions' else 0}_{suffix(m[2], m[4])}"
    if m := re.match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key):
        return f"diffusion_model_middle_block_{1 if m[1] == 'attentions' else int(m[2]) * 2}_{suffix(m[1], m[3])}"
    if m := re.match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
        block = int(m[1]) * 3 + int(m[3])
        return f"diffusion_model_output_blocks_{block}_{1 if m[2] == 'attentions' else 0}_{suffix(m[2], m[4])}"
    if m := re.match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", key):
        return f"diffusion_model_input_blocks_{3 + int(m[1]) * 3}_0_op"
    if m := re.match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", key):
        return f"diffusion_model_output_blocks_{2 + int(m[1]) * 3}_{2 if int(m[1]) > 0 else 1}_conv"
    if m := re.match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", key):
        rest = m[2]
        if "mlp_fc1" in rest:
            return f"model_transformer_resblocks_{m[1]}_{rest.replace('mlp_fc1', 'mlp_c_fc')}"
        if "mlp_fc2" in rest:
            return f"model_transformer_resblocks_{m[1]}_{rest.replace('mlp_fc2', 'mlp_c_proj')}"
        return f"model_transformer_resblocks_{m[1]}_{rest.replace('self_attn', 'attn')}"
    return key


def a1111_module(key: str, layer_mapping: set[str]) -> str | None:
    """The module A1111's ``load_network`` attaches a kohya key to, or None (the key is dropped)."""
    name = a1111_compvis_name(key)
    if name in layer_mapping:
        return name
    if (m := re.match(r"(.*)_([qkv]_proj)$", name)) and m[1] in layer_mapping:
        return m[1]  # q/k/v of an nn.MultiheadAttention (OpenCLIP's attn, in_proj_weight)
    return None


def a1111_layer_mapping(ldm: dict[str, torch.Tensor]) -> set[str]:
    """A1111's ``network_layer_mapping`` for SD 2.x: module names, ``.`` → ``_``.

    UNet modules are named from ``sd_model.model`` (``diffusion_model.…``) and text-encoder ones
    from ``cond_stage_model.wrapped`` (``model.transformer.resblocks.N.…``).
    """
    names: set[str] = set()
    for key in ldm:
        module = key.rsplit(".", 1)[0]
        if key.endswith((".in_proj_weight", ".in_proj_bias")):
            module = key.rsplit(".", 1)[0]  # the MultiheadAttention itself
        for prefix in ("model.", "cond_stage_model."):
            if module.startswith(prefix):
                names.add(module[len(prefix) :].replace(".", "_"))
    return names


# -- ComfyUI ----------------------------------------------------------------------------------------
COMFY_LORA_CLIP_MAP = {
    "mlp.fc1": "mlp_fc1",
    "mlp.fc2": "mlp_fc2",
    "self_attn.k_proj": "self_attn_k_proj",
    "self_attn.q_proj": "self_attn_q_proj",
    "self_attn.v_proj": "self_attn_v_proj",
    "self_attn.out_proj": "self_attn_out_proj",
}


def comfy_key_map(unet_state: dict[str, torch.Tensor], layers: int) -> set[str]:
    """The kohya-style keys ComfyUI accepts for an SD 2.x model (``clip_h`` is HF-CLIP layout)."""
    keys = {"lora_unet_" + k[: -len(".weight")].replace(".", "_") for k in unet_state if k.endswith(".weight")}
    for b in range(min(layers, 32)):
        keys.update(f"lora_te_text_model_encoder_layers_{b}_{c}" for c in COMFY_LORA_CLIP_MAP.values())
    return keys


# -- the model --------------------------------------------------------------------------------------
SD21_TEXT_LAYERS = 23


@pytest.fixture(scope="module")
def sd21_layout() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A tiny UNet and text encoder with SD 2.1's real layout (random weights)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(2, 2, 4, 4),
        cross_attention_dim=32,
        norm_num_groups=8,
        use_linear_projection=True,
    )
    te = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=SD21_TEXT_LAYERS,
            projection_dim=32,
            hidden_act="gelu",
            vocab_size=1000,
        )
    )
    return unet, te


def _te_state_with_text_model(te: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {(k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in te.state_dict().items()}


@pytest.fixture(scope="module")
def exported(sd21_layout) -> tuple[dict[str, torch.Tensor], int]:  # type: ignore[no-untyped-def]
    """The kohya export of a LoRA on every target lanskap trains, and the number of LoRA'd modules."""
    import copy

    unet, te = (copy.deepcopy(m) for m in sd21_layout)
    cfg = TrainConfig(data="x", out="y", rank=4, lora_alpha=4, train_proj=True, train_ff=True, train_text_encoder=True)
    attach_lora(unet, te, cfg)
    params = (*unet.named_parameters(), *te.named_parameters())
    modules = sum(1 for n, _ in params if n.endswith("lora_A.default.weight"))
    return to_kohya(peft_state(unet), peft_state(te), cfg.alpha), modules


def _module_keys(kohya: dict[str, torch.Tensor]) -> set[str]:
    return {k.split(".", 1)[0] for k in kohya}


def test_ldm_names_are_the_ones_diffusers_reads(sd21_layout) -> None:  # type: ignore[no-untyped-def]
    """The LDM names the A1111 table is checked against round-trip through diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_open_clip_checkpoint

    unet, te = sd21_layout
    ldm_unet = unet_to_ldm(unet.state_dict(), dict(unet.config))
    back = convert_ldm_unet_checkpoint(ldm_unet, dict(unet.config))
    assert set(back) == set(unet.state_dict())
    ldm_te = open_clip_text_to_ldm(_te_state_with_text_model(te))
    te_back = convert_open_clip_checkpoint(te, ldm_te)
    assert {k.removeprefix("text_model.") for k in te_back} >= {
        k.removeprefix("text_model.") for k in te.state_dict() if "position_ids" not in k
    }


def test_every_exported_key_lands_in_a1111(sd21_layout, exported) -> None:  # type: ignore[no-untyped-def]
    unet, te = sd21_layout
    kohya, n_modules = exported
    ldm = {**unet_to_ldm(unet.state_dict(), dict(unet.config)), **open_clip_text_to_ldm(_te_state_with_text_model(te))}
    mapping = a1111_layer_mapping(ldm)
    keys = _module_keys(kohya)
    assert len(keys) == n_modules, "one kohya module per LoRA'd module"
    dropped = sorted(k for k in keys if a1111_module(k, mapping) is None)
    assert not dropped, f"A1111 would ignore {len(dropped)} modules, e.g. {dropped[:3]}"
    te_keys = {k for k in keys if k.startswith("lora_te_")}
    assert len(te_keys) == SD21_TEXT_LAYERS * 4, "q, k, v and out of every text-encoder layer"
    # every text-encoder key reaches OpenCLIP-H's resblocks: q/k/v the attention, out its out_proj
    targets = {a1111_module(k, mapping) for k in te_keys}
    assert targets == {f"model_transformer_resblocks_{i}_attn{s}" for i in range(23) for s in ("", "_out_proj")}
    unet_targets = {a1111_module(k, mapping) for k in keys if k.startswith("lora_unet_")}
    assert "diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_to_q" in unet_targets
    assert "diffusion_model_output_blocks_11_1_proj_out" in unet_targets  # --train-proj, last level


def test_every_exported_key_lands_in_comfyui(sd21_layout, exported) -> None:  # type: ignore[no-untyped-def]
    unet, _ = sd21_layout
    kohya, _ = exported
    accepted = comfy_key_map(unet.state_dict(), SD21_TEXT_LAYERS)
    missing = sorted(k for k in _module_keys(kohya) if k not in accepted)
    assert not missing, f"ComfyUI would ignore {len(missing)} modules, e.g. {missing[:3]}"


def test_text_encoder_keys_keep_the_text_model_level(exported) -> None:  # type: ignore[no-untyped-def]
    """transformers 5 drops ``text_model`` from module names; the export puts it back."""
    kohya, _ = exported
    te = [k for k in kohya if k.startswith("lora_te")]
    assert te and all(k.startswith("lora_te_text_model_encoder_layers_") for k in te), te[:3]
    assert "lora_te_text_model_encoder_layers_22_self_attn_out_proj.alpha" in kohya


def test_the_installed_transformers_and_peft_attach_a_text_encoder_lora(sd21_layout) -> None:  # type: ignore[no-untyped-def]
    """Fails when the installed pair can't (transformers 5.24 with peft < 0.22, for one)."""
    import copy

    _, te = sd21_layout
    te = copy.deepcopy(te)
    cfg = TrainConfig(data="x", out="y", rank=4, lora_alpha=4, train_text_encoder=True)
    unet = copy.deepcopy(sd21_layout[0])
    attach_lora(unet, te, cfg)
    lora = [n for n, p in te.named_parameters() if "lora_" in n and p.requires_grad]
    assert len(lora) == SD21_TEXT_LAYERS * 4 * 2


def test_the_engine_loads_every_spelling_of_the_same_lora(tiny_sd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """diffusers' file, the kohya export, the old ``lora_te_encoder_…`` spelling of lanskap < 0.2 and
    the ``lora_te1_`` spelling diffusers' converter writes all give the same picture."""
    import numpy as np
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from lanskap.config import Settings
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest, LoraSpec
    from lanskap.training.adapters import save_diffusers

    unet = UNet2DConditionModel.from_pretrained(tiny_sd / "unet")
    te = CLIPTextModel.from_pretrained(tiny_sd / "text_encoder")
    cfg = TrainConfig(data="x", out="y", rank=4, lora_alpha=2, train_text_encoder=True)
    attach_lora(unet, te, cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in (*unet.named_parameters(), *te.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    unet_state, te_state = peft_state(unet), peft_state(te)
    kohya = to_kohya(unet_state, te_state, cfg.alpha, torch.float32)
    files = {"diffusers": save_diffusers(tmp_path / "d", unet_state, te_state, cfg)}
    for spelling, prefix in (("kohya", "lora_te_text_model_"), ("old", "lora_te_"), ("te1", "lora_te1_text_model_")):
        renamed = {k.replace("lora_te_text_model_", prefix, 1): v for k, v in kohya.items()}
        save_file(renamed, str(tmp_path / f"{spelling}.safetensors"))
        files[spelling] = tmp_path / f"{spelling}.safetensors"
    eng = Engine(settings=Settings(home=tmp_path / "h", model=str(tiny_sd), device="cpu", dtype="fp32"))

    def image(lora: object | None) -> np.ndarray:
        req = GenerationRequest("a castle", seed=3, steps=2, width=64, height=64, watermark=False,
                                loras=(LoraSpec(str(lora), 1.0),) if lora else ())  # fmt: skip
        return np.asarray(eng.generate(req).images[0]).astype(int)

    base = image(None)
    pictures = {name: image(path) for name, path in files.items()}
    assert np.abs(pictures["diffusers"] - base).max() > 0
    for name, picture in pictures.items():
        assert np.abs(picture - pictures["diffusers"]).max() <= 1, name
    # the text-encoder part counts: without it the picture differs
    unet_only = {k: v for k, v in kohya.items() if k.startswith("lora_unet_")}
    save_file(unet_only, str(tmp_path / "unet-only.safetensors"))
    assert np.abs(image(tmp_path / "unet-only.safetensors") - pictures["kohya"]).max() > 1
