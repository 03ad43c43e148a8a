"""Export a diffusers SD 1.x/2.x or SDXL folder as one original-layout (LDM) ``.safetensors`` file.

A1111, ComfyUI and kohya load single-file checkpoints, and lanskap's own
single-file loader is tested on such files. diffusers only converts the other
way, so the inverse mapping is written here, driven by the UNet/VAE configs
(block count, layers per block), so that it holds for any SD-shaped model. The
text encoder is written in OpenCLIP layout for SD 2.x and HF-CLIP layout for SD 1.x; SDXL's two
encoders go under ``conditioner.embedders`` as SGM names them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lanskap.errors import LanskapError
from lanskap.io import atomic_write
from lanskap.models.family import detect_folder, family_of
from lanskap.models.safety import read_safetensors_header

_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size-and-pooled-text embedding
    "add_embedding.linear_2": "label_emb.0.2",
}
_VAE_ATTN = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]


def _load(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    files = [f for f in files if ".fp16." not in f.name] or files
    if not files:
        raise LanskapError(f"no .safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        read_safetensors_header(f)
        state.update(load_file(str(f)))
    return state


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    lpb = int(config["layers_per_block"])
    with_attn = {int(m.group(1)) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if head in _UNET_TOP:
            new = f"{_UNET_TOP[head]}.{leaf}"
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            i, j = int(m.group(1)), int(m.group(2))
            new = f"input_blocks.{1 + i * (lpb + 1) + j}.0.{_resnet(m.group(3))}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            i, j = int(m.group(1)), int(m.group(2))
            new = f"input_blocks.{1 + i * (lpb + 1) + j}.1.{m.group(3)}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{1 + int(m.group(1)) * (lpb + 1) + lpb}.0.op.{m.group(2)}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m.group(1))}.{_resnet(m.group(2))}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m.group(1)}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            i, j = int(m.group(1)), int(m.group(2))
            new = f"output_blocks.{i * (lpb + 1) + j}.0.{_resnet(m.group(3))}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            i, j = int(m.group(1)), int(m.group(2))
            new = f"output_blocks.{i * (lpb + 1) + j}.1.{m.group(3)}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            i = int(m.group(1))
            new = f"output_blocks.{i * (lpb + 1) + lpb}.{2 if i in with_attn else 1}.conv.{m.group(2)}"
        else:
            raise LanskapError(f"cannot export UNet weight {key!r}: unsupported architecture")
        out[f"model.diffusion_model.{new}"] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    n = len(config["block_out_channels"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m.group(1)}.block.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            new = f"encoder.down.{m.group(1)}.downsample.{m.group(2)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"decoder.up.{n - 1 - int(m.group(1))}.block.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            new = f"decoder.up.{n - 1 - int(m.group(1))}.upsample.{m.group(2)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            rest = m.group(2)
            for a, b in _VAE_ATTN:
                rest = rest.replace(a, b)
            new = f"{m.group(1)}.mid.attn_1.{rest}"
            if value.ndim == 2:  # LDM uses 1x1 convolutions where diffusers uses linear layers
                value = value[:, :, None, None]
        new = new.replace("conv_shortcut", "nin_shortcut")
        out[f"first_stage_model.{new}"] = value
    return out


def open_clip_text_to_ldm(
    state: dict[str, torch.Tensor], p: str = "cond_stage_model.model."
) -> dict[str, torch.Tensor]:
    """An HF CLIP text model in OpenCLIP's names under ``p``; its projection (SDXL's bigG has one,
    transposed as OpenCLIP keeps it), or the identity where the model has none (SD 2.x)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key == "text_model.embeddings.position_embedding.weight":
            out[p + "positional_embedding"] = value
        elif key == "text_model.embeddings.token_embedding.weight":
            out[p + "token_embedding.weight"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out[p + "ln_final." + key.rsplit(".", 1)[1]] = value
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key):
            qkv.setdefault(f"{m.group(1)}.{m.group(3)}", {})[m.group(2)] = value
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key):
            rest = (
                m.group(2)
                .replace("layer_norm1", "ln_1")
                .replace("layer_norm2", "ln_2")
                .replace("mlp.fc1", "mlp.c_fc")
                .replace("mlp.fc2", "mlp.c_proj")
                .replace("self_attn.out_proj", "attn.out_proj")
            )
            out[f"{p}transformer.resblocks.{m.group(1)}.{rest}"] = value
        elif key == "text_projection.weight":
            out[p + "text_projection"] = value.T.contiguous()
    for layer_kind, parts in qkv.items():
        layer, kind = layer_kind.split(".")
        out[f"{p}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if p + "text_projection" not in out:
        hidden = out[p + "ln_final.weight"].shape[0]
        out[p + "text_projection"] = torch.eye(hidden, dtype=out[p + "ln_final.weight"].dtype)
    return out


def _text_state(folder: Path) -> dict[str, torch.Tensor]:
    # transformers 5 saves CLIPTextModel keys without the "text_model." prefix older saves have.
    return {
        k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v
        for k, v in _load(folder).items()
        if not k.endswith("position_ids")
    }


def export_single_file(folder: Path, out: Path, *, prediction_type: str | None = None) -> Path:
    """Write ``folder`` (a diffusers SD model) to ``out`` as one LDM-layout safetensors file."""
    from safetensors.torch import save

    folder, out = Path(folder), Path(out)
    if out.suffix != ".safetensors":
        raise LanskapError("the single-file checkpoint must end in .safetensors")
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    state = {**unet_to_ldm(_load(folder / "unet"), unet_cfg), **vae_to_ldm(_load(folder / "vae"), vae_cfg)}
    text = _text_state(folder / "text_encoder")
    if detect_folder(folder) == "sdxl":  # SGM's layout: CLIP-L in HF names, bigG in OpenCLIP's
        state.update({f"conditioner.embedders.0.transformer.{k}": v for k, v in text.items()})
        state.update(open_clip_text_to_ldm(_text_state(folder / "text_encoder_2"), "conditioner.embedders.1.model."))
    elif not family_of(int(unet_cfg["cross_attention_dim"]), prediction_type or "epsilon").open_clip_text:
        # SD 1.x keeps HF CLIP names in LDM files
        state.update({f"cond_stage_model.transformer.{k}": v for k, v in text.items()})
    else:
        state.update(open_clip_text_to_ldm(text))
    metadata = {"format": "pt", "lanskap.source": folder.name}
    if prediction_type:
        metadata["modelspec.prediction_type"] = "v" if prediction_type == "v_prediction" else "epsilon"
    data = save({k: v.contiguous() for k, v in state.items()}, metadata=metadata)
    return atomic_write(out, lambda fh: fh.write(data))


def controlnet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """A diffusers ControlNet's weights in the original layout (``control_model.*``), as A1111 users have them.

    The encoder half is the UNet's (``unet_to_ldm``); the zero convolutions, the mid block's output and
    the hint encoder have names of their own.
    """
    out: dict[str, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if m := re.match(r"controlnet_down_blocks\.(\d+)$", head):
            out[f"zero_convs.{m.group(1)}.0.{leaf}"] = value
        elif head == "controlnet_mid_block":
            out[f"middle_block_out.0.{leaf}"] = value
        elif head == "controlnet_cond_embedding.conv_in":
            out[f"input_hint_block.0.{leaf}"] = value
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)$", head):
            out[f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{leaf}"] = value
        elif head == "controlnet_cond_embedding.conv_out":
            blocks = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
            out[f"input_hint_block.{2 * (blocks + 1)}.{leaf}"] = value
        else:
            shared[key] = value
    for key, value in unet_to_ldm(shared, config).items():
        out[key.removeprefix("model.diffusion_model.")] = value
    return {f"control_model.{k}": v for k, v in out.items()}


def kohya_sgm_unet(peft: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """peft UNet LoRA tensors (``….lora_A.weight``) under kohya's SDXL names, which follow SGM's UNet
    (``lora_unet_input_blocks_4_1_…``), not diffusers' (``down_blocks.1.attentions.0…``): kohya trains
    SDXL on the original layout, and A1111 and ComfyUI read its files. No ``.alpha`` entries."""
    out: dict[str, torch.Tensor] = {}
    for key, value in peft.items():
        module, _, leaf = key.partition(".lora_")
        sgm = next(iter(unet_to_ldm({f"{module}.weight": value}, config)))
        name = "lora_unet_" + sgm.removeprefix("model.diffusion_model.").removesuffix(".weight").replace(".", "_")
        out[f"{name}.{'lora_down' if leaf.startswith('A') else 'lora_up'}.weight"] = value
    return out
