"""A1111 hypernetworks: read the files, build their networks, and convert them once to safetensors.

A hypernetwork file is a dict keyed by context width (320, 640, 768, 1024, 1280), each a pair of
state dicts (the k and the v network), beside ``layer_structure``, ``activation_func``,
``is_layer_norm``, ``use_dropout``, ``activate_output``, ``last_layer_dropout`` (and newer
files' ``dropout_structure``). Each network is A1111's ``HypernetworkModule``: a
``torch.nn.Sequential`` named ``linear`` of Linear layers with activations, layer norms and
dropouts between them, applied as ``x + linear(x) * strength``. The layers are built here in
A1111's order, so the state dicts' indices (``linear.0``, ``linear.2``, …) land where they did.

No library reads these files (diffusers has no hypernetworks), hence this module. ``.pt`` files
load only through a weights-only load (tensors and plain values, never code);
``import_hypernetwork`` writes the same networks as ``.safetensors`` with the settings in the
header's metadata, which is what lanskap reads first.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lanskap.errors import LanskapError
from lanskap.folders import check_entry, walk
from lanskap.io import atomic_write_bytes
from lanskap.models.hashing import sha256_file
from lanskap.names import check_name

SUFFIXES = (".safetensors", ".pt")
_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}
# A1111 also accepts every class of torch.nn.modules.activation by its lower-case name.
for _name, _cls in inspect.getmembers(torch.nn.modules.activation, inspect.isclass):
    if _cls.__module__ == "torch.nn.modules.activation":
        _ACTIVATIONS.setdefault(_name.lower(), _cls)


class HypernetworkError(LanskapError):
    """A hypernetwork file can't be read, or doesn't fit this model."""


@dataclass(frozen=True)
class Structure:
    """How a hypernetwork's networks are built (A1111's saved settings and their defaults)."""

    layer_structure: tuple[float, ...] = (1, 2, 1)
    activation_func: str | None = None
    is_layer_norm: bool = False
    use_dropout: bool = False
    activate_output: bool = True
    last_layer_dropout: bool = False
    dropout_structure: tuple[float, ...] | None = None

    def dropouts(self) -> tuple[float, ...]:
        """A1111's ``parse_dropout_structure``, for files saved before ``dropout_structure`` existed."""
        if self.dropout_structure is not None:
            return self.dropout_structure
        n = len(self.layer_structure)
        if not self.use_dropout:
            return (0.0,) * n
        return (0.0, *([0.3] * (n - 3)), 0.3 if self.last_layer_dropout else 0.0, 0.0)

    def build(self, width: int) -> torch.nn.Sequential:
        """The ``linear`` Sequential of one network, layer for layer as A1111 builds it."""
        ls, n = self.layer_structure, len(self.layer_structure)
        if n < 2 or ls[0] != 1 or ls[-1] != 1:
            raise HypernetworkError(f"layer structure {list(ls)} must start and end with 1")
        act = (self.activation_func or "linear").lower()
        if act not in _ACTIVATIONS:
            raise HypernetworkError(f"unsupported activation function {self.activation_func!r}")
        drops = self.dropouts()
        layers: list[torch.nn.Module] = []
        for i in range(n - 1):
            layers.append(torch.nn.Linear(int(width * ls[i]), int(width * ls[i + 1])))
            if not (act == "linear" or (i >= n - 2 and not self.activate_output)):
                layers.append(_ACTIVATIONS[act]())
            if self.is_layer_norm:
                layers.append(torch.nn.LayerNorm(int(width * ls[i + 1])))
            if drops[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=drops[i + 1]))
        return torch.nn.Sequential(*layers)


class Network(torch.nn.Module):
    """One of the pair (k or v): ``x + linear(x) * strength``, evaluated in fp32 as A1111 does."""

    def __init__(self, linear: torch.nn.Sequential) -> None:
        super().__init__()
        self.linear = linear
        self.strength = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 + self.linear(x32) * self.strength).to(x.dtype)


@dataclass
class Hypernetwork:
    name: str
    structure: Structure
    layers: dict[int, tuple[Network, Network]]
    path: Path | None = None
    sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # step, sd_checkpoint, sd_checkpoint_name

    @property
    def widths(self) -> list[int]:
        return sorted(self.layers)

    @property
    def shorthash(self) -> str:
        return self.sha256[:10]

    def networks(self) -> list[Network]:
        return [net for pair in self.layers.values() for net in pair]


def _structure(values: dict[str, Any]) -> Structure:
    ls = values.get("layer_structure") or (1, 2, 1)
    ds = values.get("dropout_structure")
    return Structure(
        layer_structure=tuple(float(v) for v in ls),
        activation_func=values.get("activation_func"),
        is_layer_norm=bool(values.get("is_layer_norm", False)),
        use_dropout=bool(values.get("use_dropout", False)),
        activate_output=bool(values.get("activate_output", True)),
        last_layer_dropout=bool(values.get("last_layer_dropout", False)),
        dropout_structure=tuple(float(v) for v in ds) if ds else None,
    )


def _old_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A1111's ``fix_old_state_dict``: the first files named their two layers linear1/linear2."""
    renames = {"linear1.": "linear.0.", "linear2.": "linear.1."}
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    return out


def _network(structure: Structure, width: int, state: dict[str, torch.Tensor], name: str) -> Network:
    net = Network(structure.build(width))
    try:
        net.load_state_dict(_old_keys(state))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise HypernetworkError(f"hypernetwork {name}: its weights don't fit its settings ({first})") from None
    return net.eval().requires_grad_(False)


def _from_pt(path: Path) -> tuple[Structure, dict[int, tuple[dict, dict]], dict[str, Any]]:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        raise HypernetworkError(
            f"hypernetwork {path.name} can't be read as weights only (tensors and plain values): it holds other "
            "objects, and a pickle load could run code; it is not loaded"
        ) from None
    if not isinstance(data, dict):
        raise HypernetworkError(f"hypernetwork {path.name} is not an A1111 hypernetwork file")
    pairs = {int(k): v for k, v in data.items() if isinstance(k, int) and isinstance(v, (tuple, list)) and len(v) == 2}
    meta = {k: data.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name", "name") if k in data}
    return _structure(data), pairs, meta


def _from_safetensors(path: Path) -> tuple[Structure, dict[int, tuple[dict, dict]], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            names = list(f.keys())  # a safe_open handle, not a dict: it has no __iter__
            tensors = {k: f.get_tensor(k) for k in names}
    except Exception as exc:
        raise HypernetworkError(f"hypernetwork {path.name} can't be read: {str(exc).splitlines()[0]}") from None
    if "lanskap.hypernetwork" not in meta:
        raise HypernetworkError(f"{path.name} is not a hypernetwork made by `lanskap models import-hypernetwork`")
    settings = json.loads(meta["lanskap.hypernetwork"])
    pairs: dict[int, tuple[dict, dict]] = {}
    for key, value in tensors.items():
        width, which, rest = key.split(".", 2)  # "1024.k.linear.0.weight"
        pair = pairs.setdefault(int(width), ({}, {}))
        pair[0 if which == "k" else 1][rest] = value
    return _structure(settings), pairs, {k: settings.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name")}


def read_hypernetwork(path: Path, cache_dir: Path | None = None) -> Hypernetwork:
    """A hypernetwork from an A1111 ``.pt`` (weights only) or a converted ``.safetensors``."""
    path = Path(path)
    reader = _from_safetensors if path.suffix.lower() == ".safetensors" else _from_pt
    structure, pairs, meta = reader(path)
    if not pairs:
        raise HypernetworkError(f"hypernetwork {path.name} holds no networks")
    layers = {
        w: (_network(structure, w, dict(k), path.stem), _network(structure, w, dict(v), path.stem))
        for w, (k, v) in pairs.items()
    }
    return Hypernetwork(path.stem, structure, layers, path, sha256_file(path, cache_dir), meta)


def list_hypernetworks(folder: Path) -> list[Path]:
    """The hypernetwork files of ``folder`` (links out of it never followed), a converted one first."""
    if not folder.is_dir():
        return []
    found: dict[str, Path] = {}
    for p in walk(folder, recursive=True)[0]:
        if p.suffix.lower() in SUFFIXES and (p.stem not in found or p.suffix.lower() == ".safetensors"):
            found[p.stem] = p
    return [found[k] for k in sorted(found, key=str.lower)]


def find_hypernetwork(name: str, folder: Path) -> Path:
    """The file of the hypernetwork called ``name`` (its stem, as A1111's tag names it)."""
    from lanskap.models.resolve import SAFE_NAME

    if not SAFE_NAME.match(name) or ".." in name or "/" in name or "\\" in name:
        raise HypernetworkError(f"invalid hypernetwork name {name!r}")
    for p in list_hypernetworks(folder):
        if p.stem == name and check_entry(p, folder, p.name) is None:
            return p
    raise HypernetworkError(f"hypernetwork {name!r} not found in {folder}")


def import_hypernetwork(source: Path, folder: Path, name: str | None = None) -> Path:
    """Convert an A1111 ``.pt`` hypernetwork to ``folder/NAME.safetensors`` (written whole, then renamed)."""
    from safetensors.torch import save

    hn = read_hypernetwork(source)
    out_name = check_name(name or hn.name, "hypernetwork name")
    tensors = {
        f"{w}.{which}.linear.{key}": t.contiguous()
        for w, pair in hn.layers.items()
        for which, net in zip("kv", pair, strict=True)
        for key, t in net.linear.state_dict().items()
    }
    settings = {**asdict(hn.structure), **{k: v for k, v in hn.meta.items() if isinstance(v, (str, int))}}
    meta = {"lanskap.hypernetwork": json.dumps(settings), "source": source.name}
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{out_name}.safetensors"
    atomic_write_bytes(target, save(tensors, metadata=meta))
    return target
