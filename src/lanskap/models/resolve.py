"""Turn what the user typed after ``--model`` into something loadable.

A model reference is, in order of checking: a local diffusers folder, a local
single-file checkpoint, a name under ``LANSKAP_HOME/models``, or a hub repo id.
Names from users are validated before they become paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lanskap.config import Settings
from lanskap.errors import LanskapError, ModelUnavailableError
from lanskap.folders import Skipped, check_entry, escapes, inside, shown
from lanskap.models.safety import PICKLE_SUFFIXES, check_allowed

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][\w.\- ]*$")
MINI_NAME = "lanskap-mini"  # the built-in model (lanskap.mini), always available
CHECKPOINT_SUFFIXES = (".safetensors", *sorted(PICKLE_SUFFIXES))


@dataclass(frozen=True)
class ModelRef:
    """A resolved reference; ``location`` is a hub id or an absolute path."""

    kind: Literal["hub", "folder", "single_file"]
    location: str
    name: str

    @property
    def path(self) -> Path:
        return Path(self.location)


def validate_name(name: str, what: str = "name") -> str:
    """Accept a plain file name only: no separators, no '..', no leading dot."""
    if not name or not SAFE_NAME.match(name) or ".." in name or "/" in name or "\\" in name:
        raise LanskapError(f"invalid {what} {name!r}: use a plain name without path separators or '..'")
    return name


def _local(path: Path, allow_pickle: bool) -> ModelRef | None:
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise LanskapError(f"{path} is not a diffusers model folder (it has no model_index.json)")
        return ModelRef("folder", str(path.resolve()), path.resolve().name)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in CHECKPOINT_SUFFIXES:
            raise LanskapError(f"{path.name} is not a model checkpoint (.safetensors expected)")
        check_allowed(path, allow_pickle)
        return ModelRef("single_file", str(path.resolve()), path.stem)
    return None


def resolve_model_ref(spec: str, settings: Settings) -> ModelRef:
    """Resolve ``spec`` or raise a one-line error saying what was tried."""
    spec = spec.strip()
    if not spec:
        raise LanskapError("no model given")
    if spec == MINI_NAME:
        from lanskap.models.builtin import shipped

        return ModelRef("folder", str(shipped().resolve()), MINI_NAME)
    found = _local(Path(spec).expanduser(), settings.allow_pickle)
    if found:
        return found
    if SAFE_NAME.match(spec) and ".." not in spec:
        names = [spec, *(f"{spec}{suffix}" for suffix in CHECKPOINT_SUFFIXES)]
        for candidate in (settings.models_dir / n for n in names):
            found = _local(candidate, settings.allow_pickle)
            if found:
                return found
    if HUB_ID.match(spec):
        return ModelRef("hub", spec, spec)
    raise ModelUnavailableError(
        f"model {spec!r} not found: it is not a diffusers folder, a .safetensors file, a name under "
        f"{settings.models_dir}, or a hub id like owner/name",
        "model",
    )


def installed_models(settings: Settings) -> list[str]:
    """Model names a server may switch to: ``LANSKAP_HOME/models`` entries and the built-in model."""
    return [MINI_NAME, *scan_models(settings)[0]]


def scan_models(settings: Settings) -> tuple[list[str], list[Skipped]]:
    """The models folder's diffusers folders and single-file checkpoints, and what was passed over.

    The folder rules of every scan apply (``lanskap.folders``), at every depth: an entry, or a
    file inside a model folder, that links out of the models folder, or is a FIFO or a device,
    rules that model out, so a name never makes a loader read a file the user did not put there.
    """
    root = settings.models_dir
    names: list[str] = []
    skipped: list[Skipped] = []
    if not root.is_dir():
        return names, skipped
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or not SAFE_NAME.match(entry.name):
            continue
        if entry.is_symlink() and not inside(entry, root):
            skipped.append(Skipped(shown(entry.name), "a link that leads out of the folder"))
        elif entry.is_dir() and (entry / "model_index.json").is_file():
            problems = escapes(entry, root)
            if problems:
                first = problems[0]
                skipped.append(Skipped(shown(entry.name), f"{first.rel}: {first.reason}"))
            else:
                names.append(entry.name)
        elif entry.suffix.lower() == ".safetensors":
            reason = check_entry(entry, root, entry.name)
            if reason is None:
                names.append(entry.stem)
            else:
                skipped.append(Skipped(shown(entry.name), reason))
    return names, skipped


def unavailable_message(repo: str, settings: Settings) -> str:
    return (
        f"base model {repo!r} is not available: it is not in the local cache and the hub can't be reached. "
        f"On a connected machine run `hf download {repo}`, or copy a diffusers folder or a .safetensors "
        f"checkpoint here and give its path as the model (or set LANSKAP_MODEL, or put it in {settings.models_dir}); "
        "or use the model lanskap-mini (or the fallback mini), the small built-in landscape model"
    )


def fetch_hub_model(repo: str, settings: Settings) -> Path:
    """Download (or find in the HF cache) a diffusers repo; return its local folder."""
    import logging

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as dlogging

    previous = dlogging.get_verbosity()
    dlogging.set_verbosity(logging.ERROR)  # its "couldn't connect" chatter is replaced by our message
    try:
        folder = StableDiffusionPipeline.download(repo, use_safetensors=not settings.allow_pickle)
    except (OSError, ValueError):
        raise ModelUnavailableError(unavailable_message(repo, settings), "model", "fallback") from None
    finally:
        dlogging.set_verbosity(previous)
    return Path(folder)


def family_label(spec: str, settings: Settings) -> str | None:
    """A model's family as people say it (SD 2.x, SDXL, …), from its configs or tensor names without
    loading it; None when that can't be told (a hub id not fetched yet, an unreadable file)."""
    from lanskap.models.family import label_on_disk
    from lanskap.models.safety import read_safetensors_header

    try:
        ref = resolve_model_ref(spec, settings)
        if ref.kind == "hub":
            return None
        header = read_safetensors_header(ref.path) if ref.kind == "single_file" else None
        return label_on_disk(ref.path, header)
    except (LanskapError, OSError):
        return None
