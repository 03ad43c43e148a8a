"""Find, check and describe LoRA files before the engine applies them.

A LoRA trained for another base (an SD 1.5 LoRA on SD 2.1) fails deep inside
diffusers with a tensor-shape error; here it is caught first, from the
cross-attention width its ``to_k``/``to_v`` factors expect, or from its metadata.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lanskap.config import Settings
from lanskap.errors import LoraError
from lanskap.folders import check_entry, walk
from lanskap.models.hashing import lora_hash
from lanskap.models.resolve import SAFE_NAME
from lanskap.models.safety import PICKLE_SUFFIXES, check_allowed, read_safetensors_header

LORA_SUFFIXES = (".safetensors", *sorted(PICKLE_SUFFIXES))
# attn2 to_k / to_v LoRA "down" factors, in kohya, diffusers and peft naming.
_CROSS_KEY = re.compile(r"attn2[._]to_[kv].*(lora_down|lora\.down|lora_A)\.weight$")


@dataclass(frozen=True)
class LoraInfo:
    path: Path
    name: str
    hash: str
    context_dim: int | None
    base_hint: str | None


def list_loras(settings: Settings) -> list[Path]:
    found: dict[str, Path] = {}
    for folder in settings.all_lora_dirs:
        if folder.is_dir():
            for p in walk(folder, recursive=False)[0]:  # links out of the folder don't count
                if p.suffix.lower() == ".safetensors":
                    found.setdefault(p.stem, p)
    return list(found.values())


def _looks_like_path(name: str) -> bool:
    return any(sep in name for sep in ("/", "\\")) or Path(name).suffix.lower() in LORA_SUFFIXES


def lora_display_name(name: str) -> str:
    """The name A1111 tags and hashes use: the file stem for paths, the name itself otherwise."""
    return Path(name.replace("\\", "/")).stem if _looks_like_path(name) else name


def resolve_lora(name: str, settings: Settings, *, allow_paths: bool = True) -> Path:
    """A LoRA path from a name in the LoRA folders, or (CLI only) a file path."""
    candidate = Path(name).expanduser()
    if _looks_like_path(name):
        if not allow_paths:
            raise LoraError(f"invalid LoRA name {name!r}: give a name from the LoRA folder, not a path")
        if candidate.is_file():
            check_allowed(candidate, settings.allow_pickle)
            return candidate.resolve()
        raise LoraError(f"LoRA file not found: {name}")
    if not SAFE_NAME.match(name) or ".." in name:
        raise LoraError(f"invalid LoRA name {name!r}")
    for folder in settings.all_lora_dirs:
        for suffix in LORA_SUFFIXES:
            p = folder / f"{name}{suffix}"
            if p.is_file() and check_entry(p, folder, p.name) is None:  # a link out of the folder is no LoRA
                check_allowed(p, settings.allow_pickle)
                return p.resolve()
    dirs = ", ".join(str(d) for d in settings.all_lora_dirs)
    raise LoraError(f"LoRA {name!r} not found in the LoRA folders ({dirs})")


def lora_missing(name: str, settings: Settings) -> bool:
    """True when ``name`` is a valid LoRA name that no LoRA folder holds (a bad name is not "missing")."""
    if _looks_like_path(name) or not SAFE_NAME.match(name) or ".." in name:
        return False
    return not any(
        (folder / f"{name}{suffix}").is_file() for folder in settings.all_lora_dirs for suffix in LORA_SUFFIXES
    )


def inspect_lora(path: Path, settings: Settings) -> LoraInfo:
    """Read shapes and metadata (no tensor data) to learn what base a LoRA targets."""
    context_dim = None
    hint = None
    if path.suffix == ".safetensors":
        try:
            header = read_safetensors_header(path)
        except Exception as exc:
            raise LoraError(f"LoRA {path.name}: {exc}") from None
        meta = header.get("__metadata__") or {}
        for key, info in header.items():
            if key != "__metadata__" and _CROSS_KEY.search(key):
                context_dim = int(info["shape"][-1])
                break
        version = str(meta.get("ss_base_model_version", ""))
        arch = str(meta.get("modelspec.architecture", ""))
        hint = version or arch or None
    return LoraInfo(path, path.stem, lora_hash(path, settings.cache_dir), context_dim, hint)


def check_compatible(info: LoraInfo, cross_attention_dim: int, model_name: str) -> None:
    """Refuse a LoRA whose cross-attention width differs from the base's."""
    from lanskap.models.family import SD1, SD2, width_label

    if info.context_dim is not None and info.context_dim != cross_attention_dim:
        made_for = width_label(info.context_dim)
        hint = (info.base_hint or "").lower()
        if hint.startswith("sdxl") or "-xl-" in hint:  # the metadata names it where the width can't (tiny models)
            made_for = "SDXL"
        elif made_for.endswith("-wide"):
            made_for = f"a model with {info.context_dim}-wide text embeddings"
        this = width_label(cross_attention_dim)
        raise LoraError(
            f"LoRA {info.name!r} was made for another base ({made_for}); {model_name!r} is {this}. "
            "Use a LoRA trained on this base model"
        )
    hint = (info.base_hint or "").lower()
    made_for_sd1 = hint.startswith(SD1.kohya_version) or "-v1" in hint
    if cross_attention_dim == SD2.text_width and info.context_dim is None and made_for_sd1:
        raise LoraError(f"LoRA {info.name!r} was made for SD 1.x; this base is SD 2.x")
