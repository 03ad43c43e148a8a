"""Whole-state training checkpoints: LoRA, optimizer, LR scheduler, RNG, step and data position.

A checkpoint folder is built under a hidden temp name and renamed when complete,
so a run killed at any moment (even by SIGKILL) leaves only whole checkpoints.
Everything is safetensors or JSON: resuming never unpickles anything.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lanskap.errors import LanskapError, SettingError
from lanskap.io import atomic_write_text

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE = "state.json"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    found = []
    if Path(out).is_dir():
        for p in Path(out).iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and p.is_dir() and (p / STATE).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def find_checkpoint(out: Path, spec: str) -> Path:
    """``latest`` or a folder path."""
    if spec == "latest":
        found = list_checkpoints(out)
        if not found:
            raise SettingError(f"no checkpoint in {out} yet to resume from; start a new run", "resume")
        return found[-1][1]
    path = Path(spec).expanduser()
    if not path.is_absolute() and not path.exists():
        path = Path(out) / spec
    if not (path / STATE).is_file():
        raise LanskapError(f"{spec} is not a lanskap checkpoint (no {STATE})")
    return path


def temp_dir(out: Path, step: int) -> Path:
    return Path(out) / f".{checkpoint_name(step)}.tmp"


def clear_stale(out: Path) -> None:
    """Remove half-built and half-deleted checkpoints that a killed run left behind."""
    for pattern in (".checkpoint-*.tmp", ".checkpoint-*.old"):
        for p in Path(out).glob(pattern):
            shutil.rmtree(p, ignore_errors=True)


def remove(folder: Path) -> None:
    """Delete a checkpoint so that a kill at any moment leaves it whole or gone, never half.

    The folder is first renamed to a hidden name in one step; only then are its files deleted.
    """
    trash = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(trash, ignore_errors=True)
    folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune(out: Path, keep: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond ``keep``."""
    if keep is None:
        return []
    found = list_checkpoints(out)
    victims = [p for _, p in found[: max(0, len(found) - keep)]]
    for p in victims:
        remove(p)
    return victims


# -- optimizer ---------------------------------------------------------------------------------
def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Tensors into ``tensors`` (by path), everything else stays as JSON-able structure."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), _split(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _key(k: Any) -> Any:
    return {"int": k} if isinstance(k, int) else k


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {(k["int"] if isinstance(k, dict) else k): _join(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def save_structured(folder: Path, name: str, obj: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(obj, name, tensors)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton), encoding="utf-8")


def load_structured(folder: Path, name: str) -> Any:
    skeleton = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    st = folder / f"{name}.safetensors"
    tensors = load_file(str(st)) if st.is_file() else {}
    return _join(skeleton, tensors)


# -- random number generators ------------------------------------------------------------------
def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {
        "generator": generator.get_state(),
        "torch_cpu": torch.get_rng_state(),
        "python": _py_state(random.getstate()),
        "numpy": _np_state(np.random.get_state()),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_cpu"])
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def _py_state(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def _np_state(state: tuple) -> list:
    kind, keys, pos, has_gauss, cached = state
    return [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def write_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_write_text(folder / STATE, json.dumps(state, indent=2) + "\n")


def read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LanskapError(f"checkpoint {folder.name} is damaged: {exc}") from None
