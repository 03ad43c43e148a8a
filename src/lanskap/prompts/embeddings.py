"""Textual-inversion embeddings: read every format people exchange, find them in prompts, apply them.

An embedding is a few learned vectors that stand in for a word. As in A1111, it is used by
writing its name (the file's stem) in a prompt: the name's token ids are matched in the
tokenized prompt (longest first), replaced by one placeholder per vector, and the text
encoder's token-embedding output gets the vectors at those places (a forward hook, the same
trick as A1111's ``EmbeddingsWithFixes``). ComfyUI's ``embedding:name`` form names one too.
Weights like ``(name:1.2)`` scale the vectors as they scale any word.

Formats (SD 1.x/2.x, one text encoder): A1111's ``string_to_param`` dict, kohya's
``emb_params`` and diffusers' single-key files, from ``.safetensors`` or from ``.pt``/``.bin``
through a weights-only load (tensors and plain values, never code). SDXL's ``clip_l``/``clip_g``
files and files for another text width are listed as skipped, and a prompt that names one is
refused with the width it was made for, never silently read as plain words.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lanskap.errors import LanskapError
from lanskap.folders import inside, walk
from lanskap.models.family import width_label
from lanskap.models.hashing import sha256_file

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer

SUFFIXES = (".safetensors", ".pt", ".bin")
MAX_VECTORS = 75  # one 75-token chunk
#: ComfyUI's explicit form, ``embedding:name`` (an extension may follow the name).
COMFY_FORM = re.compile(r"\bembedding:([\w.\-]+)", re.IGNORECASE)


class EmbeddingError(LanskapError):
    """An embedding file can't be read, or doesn't fit this model."""


@dataclass
class Embedding:
    """One embedding: its vectors (count × text width) and what A1111 lists about it."""

    name: str
    vectors: torch.Tensor
    path: Path | None = None
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    sha256: str = ""
    note: str = ""  # why it was skipped, for a file that doesn't fit

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def shorthash(self) -> str:
        """A1111's ``TI hashes`` entry: the file's SHA-256, first 12 hex digits."""
        return self.sha256[:12]

    def listing(self) -> dict[str, Any]:
        """The entry of A1111's ``/sdapi/v1/embeddings``."""
        return {
            "step": self.step,
            "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name,
            "shape": self.width,
            "vectors": self.count,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype in (torch.int64, torch.int32):
        return int(value.item())
    return value if isinstance(value, (str, int, type(None))) else None


def _read(path: Path, *, allow_pickle: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's contents and its safetensors metadata (empty for .pt).

    ``allow_pickle`` (an explicit opt-in, for one import) reads what a weights-only load refuses:
    A1111 files from torch 1.11 keep their vectors in a ``ParameterDict``."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                names = list(f.keys())  # a safe_open handle, not a dict: it has no __iter__
                return {k: f.get_tensor(k) for k in names}, dict(f.metadata() or {})
        except Exception as exc:
            raise EmbeddingError(f"embedding {path.name} can't be read: {str(exc).splitlines()[0]}") from None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except Exception:
        raise EmbeddingError(
            f"embedding {path.name} can't be read as weights only (tensors and plain values): it holds other "
            "objects, as files from old A1111 versions do; convert it once to .safetensors, allowing pickle "
            "for that one file if you trust its source"
        ) from None
    if not isinstance(data, dict):
        raise EmbeddingError(f"embedding {path.name} is not a dictionary of tensors")
    return data, {}


def vectors_of(data: dict[str, Any], name: str) -> torch.Tensor:
    """The (count, width) vectors of a file's contents, in any of the exchanged formats."""
    if "string_to_param" in data:  # A1111
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if not isinstance(params, dict) or len(params) != 1:
            raise EmbeddingError(f"embedding {name}: the file holds more than one term")
        vec = next(iter(params.values()))
    elif "emb_params" in data:  # kohya
        vec = data["emb_params"]
    elif "clip_l" in data and "clip_g" in data:  # SDXL: one part per encoder; A1111's shape is their sum
        vec = torch.cat([data["clip_l"], data["clip_g"]], dim=-1)
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1 or len(data) != 1:
            raise EmbeddingError(f"embedding {name}: not an embedding file (expected one tensor, found {len(data)})")
        vec = tensors[0]  # diffusers: {token: vector(s)}
    if not isinstance(vec, torch.Tensor) or vec.ndim not in (1, 2):
        raise EmbeddingError(f"embedding {name}: its vectors are not a 1- or 2-dimensional tensor")
    vec = vec.detach().float()
    vec = vec.unsqueeze(0) if vec.ndim == 1 else vec
    if not 1 <= vec.shape[0] <= MAX_VECTORS:
        raise EmbeddingError(f"embedding {name} has {vec.shape[0]} vectors; a prompt chunk holds at most {MAX_VECTORS}")
    return vec


def _field(data: dict[str, Any], meta: dict[str, str], key: str) -> Any:
    """One of A1111's fields (step, sd_checkpoint, …): in a .pt's dict, or a safetensors header's metadata."""
    return _plain(data.get(key)) if key in data else meta.get(key)


FIELDS = ("step", "sd_checkpoint", "sd_checkpoint_name")


def read_embedding(path: Path, cache_dir: Path | None = None) -> Embedding:
    """One embedding file, named after its stem (as A1111 and ComfyUI name them)."""
    path = Path(path)
    data, meta = _read(path)
    vec = vectors_of(data, path.stem)
    step, checkpoint, checkpoint_name = (_field(data, meta, k) for k in FIELDS)
    return Embedding(
        path.stem,
        vec,
        path,
        step=int(step) if isinstance(step, (int, str)) and str(step).isdigit() else None,
        sd_checkpoint=checkpoint,
        sd_checkpoint_name=checkpoint_name,
        sha256=sha256_file(path, cache_dir),
    )


@dataclass
class Folder:
    """The embeddings of one folder for one text width: those that fit, and those skipped (with why)."""

    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, Embedding] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def scan(folder: Path, width: int, cache_dir: Path | None = None) -> Folder:
    """Every embedding file in ``folder`` (links out of it never followed), sorted by name."""
    out = Folder()
    if not folder.is_dir():
        return out
    files, _ = walk(folder, recursive=True)
    for path in sorted(files, key=lambda p: p.stem.lower()):
        if path.suffix.lower() not in SUFFIXES or path.stat().st_size == 0 or path.stem in out.loaded:
            continue
        try:
            emb = read_embedding(path, cache_dir)
        except EmbeddingError as exc:
            out.unreadable[path.stem] = str(exc)
            continue
        if emb.width == width:
            out.loaded[emb.name] = emb
        else:
            emb.note = width_label(emb.width)
            out.skipped[emb.name] = emb
    return out


class Library:
    """The embeddings folder as a cache: rescanned when a file in it changes (A1111 checks the mtime)."""

    def __init__(self, folder: Path, cache_dir: Path | None = None) -> None:
        self.folder = Path(folder)
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._width = 0
        self._folder = Folder()
        self.version = 0  # counts rescans, so a cache built on a scan knows when it is stale

    def _stamp(self) -> tuple[tuple[str, int, int], ...]:
        if not self.folder.is_dir():
            return ()
        files, _ = walk(self.folder, recursive=True)
        stamps = []
        for p in files:
            if p.suffix.lower() in SUFFIXES:
                st = p.stat()
                stamps.append((str(p), st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def get(self, width: int) -> Folder:
        with self._lock:
            stamp = self._stamp()
            if stamp != self._seen or width != self._width:
                self._folder = scan(self.folder, width, self.cache_dir)
                self._seen, self._width = stamp, width
                self.version += 1
            return self._folder


class Table:
    """Embeddings matched by their names' token ids, longest name first (A1111's ``ids_lookup``)."""

    def __init__(self, tokenizer: CLIPTokenizer, width: int, embeddings: list[Embedding], skipped: list[Embedding]):
        self.width = width
        self.by_name = {e.name: e for e in embeddings}
        self.names = {e.name for e in [*embeddings, *skipped]}  # usable or not: a prompt may name either
        self._lookup: dict[int, list[tuple[list[int], Embedding, bool]]] = {}
        for emb, usable in [*((e, True) for e in embeddings), *((e, False) for e in skipped)]:
            ids = tokenizer(emb.name, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
            if ids:
                self._lookup.setdefault(ids[0], []).append((ids, emb, usable))
        for entries in self._lookup.values():
            entries.sort(key=lambda x: len(x[0]), reverse=True)

    def __bool__(self) -> bool:
        return bool(self._lookup)

    def find(self, tokens: list[int], offset: int) -> tuple[Embedding, int] | None:
        """The embedding whose name starts at ``tokens[offset]``, and how many tokens its name takes."""
        for ids, emb, usable in self._lookup.get(tokens[offset], ()):
            if tokens[offset : offset + len(ids)] == ids:
                if not usable:
                    raise EmbeddingError(
                        f"embedding {emb.name!r} was made for {emb.note or width_label(emb.width)} "
                        f"({emb.width}-wide text); this model's text encoder is {self.width}-wide"
                    )
                return emb, len(ids)
        return None

    def prepare(self, prompt: str) -> str:
        """The prompt with ComfyUI's ``embedding:name`` written as the name, and names that begin or end
        in punctuation set apart by spaces: CLIP's tokenizer joins a run of punctuation into one piece
        (``<my-style>,`` is not ``<my-style>`` followed by ``,``), which would hide the name's ids."""
        prompt = self.comfy_form(prompt)
        for name in self.by_name:
            if name in prompt and (not name[0].isalnum() or not name[-1].isalnum()):
                prompt = prompt.replace(name, f" {name} ")
        return prompt

    def comfy_form(self, prompt: str) -> str:
        """ComfyUI's ``embedding:name`` written as the name itself; an unknown name is an error."""

        def plain(match: re.Match[str]) -> str:
            name = match.group(1)
            stem = Path(name).stem if Path(name).suffix.lower() in SUFFIXES else name
            if stem not in self.names:
                raise EmbeddingError(f"embedding {stem!r} not found in the embeddings folder")
            return stem

        return COMFY_FORM.sub(plain, prompt)


def import_embedding(source: Path, folder: Path, name: str | None = None, *, allow_pickle: bool = False) -> Path:
    """Convert an embedding file once to ``folder/NAME.safetensors`` (kohya's ``emb_params``, A1111's fields
    in the metadata), so it loads without pickle from then on."""
    from safetensors.torch import save

    from lanskap.io import atomic_write_bytes
    from lanskap.names import check_name

    source = Path(source)
    data, meta = _read(source, allow_pickle=allow_pickle)
    out_name = check_name(name or source.stem, "embedding name")
    vec = vectors_of(data, out_name).contiguous()
    fields = {k: str(v) for k in FIELDS if (v := _field(data, meta, k)) is not None}
    target = folder / f"{out_name}.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, save({"emb_params": vec}, metadata={"name": out_name, **fields}))
    return target


def find_embedding(name: str, folder: Path, *, allow_paths: bool = True) -> Embedding:
    """An embedding by its name in ``folder``, or (where paths are allowed: the CLI) by its file."""
    from lanskap.names import check_name

    path = Path(name).expanduser()
    if Path(name).suffix.lower() in SUFFIXES or "/" in name or "\\" in name:
        if not allow_paths:
            raise EmbeddingError(f"invalid embedding name {name!r}: give a name from the embeddings folder")
        if not path.is_file():
            raise EmbeddingError(f"embedding file not found: {name}")
        return read_embedding(path)
    check_name(name, "embedding name")
    for suffix in SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file() and inside(candidate, folder):
            return read_embedding(candidate)
    raise EmbeddingError(f"embedding {name!r} not found in {folder}")


def check_token(tokenizer: CLIPTokenizer, token: str) -> None:
    """Refuse a new embedding's token that the text encoder already knows as one word."""
    ids = tokenizer(token, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    if not token.strip() or not ids:
        raise EmbeddingError("the embedding token is empty")
    if len(ids) == 1:
        raise EmbeddingError(
            f"the token {token!r} is already a word of the text encoder's vocabulary; "
            'choose a new one, such as "<my-style>"'
        )


#: Per chunk row, the (offset in the 77-token row, embedding) pairs to write in.
Fixes = list[list[tuple[int, Embedding]]]


@contextlib.contextmanager
def substituted(text_encoder: CLIPTextModel, fixes: Fixes) -> Iterator[None]:
    """The text encoder's token embeddings, with each embedding's vectors written where its name was.

    The encoder must be called with exactly ``len(fixes)`` rows. Gradients reach the vectors
    (textual-inversion training uses the same path as generation).
    """
    if not any(fixes):
        yield
        return
    layer = text_encoder.get_input_embeddings()

    def hook(_module: torch.nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
        if out.shape[0] != len(fixes):
            return out
        rows = []
        for r, row_fixes in enumerate(fixes):
            row = out[r]
            for offset, emb in row_fixes:
                n = min(emb.count, row.shape[0] - offset)
                vec = emb.vectors[:n].to(row.device, row.dtype)
                row = torch.cat([row[:offset], vec, row[offset + n :]])
            rows.append(row)
        return torch.stack(rows)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
