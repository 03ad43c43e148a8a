"""ControlNet models: find them in ``$LANSKAP_HOME/controlnet``, check their base, load them.

Two forms are read: diffusers folders (``config.json`` + weights), and the single
``.safetensors`` files A1111 users have (the ``controlnet-sd21`` family, in the original
``control_model.*``/``input_blocks`` layout, with or without the prefix). A single file carries
no config, so its architecture is the base UNet's (what ``ControlNetModel.from_unet`` builds)
with the hint encoder's widths read from the file, and diffusers' own
``convert_controlnet_checkpoint`` renames the weights. The base is checked from the file's
cross-attention width before anything is loaded, so a ControlNet for another family is a
one-line error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lanskap.config import Settings
from lanskap.control.units import ControlUnit
from lanskap.errors import LanskapError, SettingError
from lanskap.models.device import Placement
from lanskap.models.family import width_label
from lanskap.models.hashing import legacy_hash
from lanskap.models.safety import read_safetensors_header

#: Which words in a model's name mark it as made for a preprocessor kind (the extension's control types).
KIND_WORDS = {
    "canny": ("canny",),
    "depth": ("depth",),
    "scribble": ("scribble", "sketch"),
    "lineart": ("lineart",),
    "softedge": ("softedge", "hed", "pidi"),
}


@dataclass(frozen=True)
class ControlModel:
    name: str
    path: Path  # a .safetensors file or a diffusers folder
    hash: str  # the extension's 8-digit short hash

    @property
    def title(self) -> str:
        """How the extension lists and records it: ``name [hash]``."""
        return f"{self.name} [{self.hash}]"

    @property
    def folder(self) -> bool:
        return self.path.is_dir()


def installed(settings: Settings) -> list[ControlModel]:
    """The ControlNet models in ``$LANSKAP_HOME/controlnet`` (links out of it are never followed)."""
    from lanskap.folders import check_entry, escapes, walk

    root = settings.controlnet_dir
    if not root.is_dir():
        return []
    files, _ = walk(root, recursive=False)
    found = [ControlModel(p.stem, p, legacy_hash(p)) for p in files if p.suffix.lower() == ".safetensors"]
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and (entry / "config.json").is_file() and not escapes(entry, root):
            weights = sorted(entry.glob("*.safetensors"))
            if weights and check_entry(weights[0], root, f"{entry.name}/{weights[0].name}") is None:
                found.append(ControlModel(entry.name, entry, legacy_hash(weights[0])))
    return sorted(found, key=lambda m: m.name.lower())


def find(name: str, settings: Settings) -> ControlModel:
    """The model called ``name`` (with or without its ``[hash]``, any case), or a one-line error."""
    wanted = name.strip()
    bare = wanted.rsplit(" [", 1)[0] if wanted.endswith("]") else wanted
    models = installed(settings)
    for m in models:
        if wanted.lower() in (m.title.lower(), m.name.lower()) or bare.lower() == m.name.lower():
            return m
    where = settings.controlnet_dir
    have = ", ".join(m.name for m in models) or f"none installed; put ControlNet files in {where}"
    raise SettingError(f"unknown ControlNet model {name!r}; choose one of: {have}", "controlnet_model")


def pick(kind: str, settings: Settings) -> ControlModel:
    """The one installed model made for a preprocessor kind (by its name, as the extension's control types
    filter them), or a one-line error asking to name it."""
    models = installed(settings)
    if kind in KIND_WORDS:
        matches = [m for m in models if any(w in m.name.lower() for w in KIND_WORDS[kind])]
    else:
        matches = models if len(models) == 1 else []
    if len(matches) == 1:
        return matches[0]
    if not models:
        raise SettingError(
            f"no ControlNet models installed; put ControlNet files (.safetensors) in {settings.controlnet_dir}",
            "controlnet_model",
        )
    which = "several" if matches else "none"
    names = ", ".join(m.name for m in (matches or models))
    raise SettingError(
        f"{which} of the installed ControlNet models match a {kind} preprocessor; name the model ({names})",
        "controlnet_model",
    )


def for_unit(unit: ControlUnit, settings: Settings) -> ControlModel:
    """The unit's model: the one it names, or the installed one made for its preprocessor."""
    from lanskap.control.preprocess import PREPROCESSORS, canonical

    if unit.model and unit.model.lower() != "none":
        return find(unit.model, settings)
    return pick(PREPROCESSORS[canonical(unit.module)].kind, settings)


def base_width(settings: Settings) -> int | None:
    """The configured base model's text width, when it is a folder here (so a wrong ControlNet is refused
    before the model loads); None when it is known only once loaded (a hub id, a single file)."""
    from lanskap.models.resolve import resolve_model_ref

    try:
        ref = resolve_model_ref(settings.model, settings)
        if ref.kind != "folder":
            return None
        dim = json.loads((ref.path / "unet" / "config.json").read_text(encoding="utf-8"))["cross_attention_dim"]
        return int(dim[0] if isinstance(dim, list) else dim)
    except (LanskapError, OSError, ValueError, KeyError, TypeError):
        return None


def context_width(model: ControlModel) -> int:
    """The cross-attention width a ControlNet was made for (SD 1.x 768, SD 2.x 1024), read without loading."""
    if model.folder:
        try:
            cfg = json.loads((model.path / "config.json").read_text(encoding="utf-8"))
            dim = cfg["cross_attention_dim"]
            return int(dim[0] if isinstance(dim, list) else dim)
        except (OSError, ValueError, KeyError, TypeError):
            raise LanskapError(f"ControlNet {model.name!r}: its config.json can't be read") from None
    header = read_safetensors_header(model.path)
    for key, info in header.items():
        if key.endswith("attn2.to_k.weight") and ("input_blocks" in key or key.startswith("down_blocks.")):
            return int(info["shape"][1])
    raise LanskapError(f"ControlNet {model.name!r} is not a ControlNet file (it has no cross-attention weights)")


def check_base(model: ControlModel, base_width: int, base_name: str) -> None:
    """Refuse a ControlNet made for another model family, in one line."""
    width = context_width(model)
    if width != base_width:
        raise SettingError(
            f"ControlNet {model.name!r} is made for {width_label(width)}, but model {base_name!r} is "
            f"{width_label(base_width)}; use a ControlNet for {width_label(base_width)}",
            "controlnet_model",
        )


def load(model: ControlModel, base_unet: Any, settings: Settings, placement: Placement) -> Any:
    """The ControlNet on the base's device and precision (upcast attention in fp16, as the base)."""
    from diffusers import ControlNetModel

    try:
        if model.folder:
            net = ControlNetModel.from_pretrained(
                str(model.path), use_safetensors=None if settings.allow_pickle else True, local_files_only=True
            )
        else:
            net = _from_single_file(model.path, base_unet)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise LanskapError(f"cannot load ControlNet {model.name!r}: {first}") from None
    if placement.dtype == torch.float16:
        from diffusers.models.attention_processor import Attention

        for module in net.modules():
            if isinstance(module, Attention):
                module.upcast_attention = True
    net.to(placement.device)
    if next(net.parameters()).dtype != placement.dtype:
        net.to(placement.dtype)
    return net.eval()


def _hint_channels(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The hint encoder's widths (16, 32, 96, 256 in every released ControlNet), from its convolutions."""
    outs = [int(state[f"input_hint_block.{i}.weight"].shape[0]) for i in range(0, 13, 2)
            if f"input_hint_block.{i}.weight" in state]  # fmt: skip
    widths: list[int] = []
    for w in outs:
        if not widths or widths[-1] != w:
            widths.append(w)
    return tuple(widths) or (16, 32, 96, 256)


def _from_single_file(path: Path, base_unet: Any) -> Any:
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    from safetensors.torch import load_file

    read_safetensors_header(path)
    state = load_file(str(path))
    if "time_embedding.linear_1.weight" not in state:  # the original layout, with or without its prefix
        state = {k.removeprefix("control_model."): v for k, v in state.items()}
    from types import SimpleNamespace

    from diffusers.configuration_utils import FrozenDict

    hint = _hint_channels(state)
    # A ControlNet sees the four latent channels (the extension feeds an inpainting or depth model's
    # ControlNet the same), so it is the base UNet's architecture with a 4-channel input.
    shape = SimpleNamespace(config=FrozenDict({**base_unet.config, "in_channels": 4}))
    with torch.device("meta"):
        net = ControlNetModel.from_unet(shape, conditioning_embedding_out_channels=hint, load_weights_from_unet=False)
    converted = convert_controlnet_checkpoint(state, dict(net.config))
    missing = [k for k in net.state_dict() if k not in converted]
    if missing:
        raise ValueError(f"the file does not fit the base model's architecture (no {missing[0]})")
    net.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True, assign=True)
    return net
