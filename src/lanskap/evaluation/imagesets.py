"""The image sets an evaluation compares: folders, prompt files and dataset splits.

Every set is checked before any model loads, so an empty folder, a lone image
or an unreadable file is a one-line error rather than a crash half-way through.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from lanskap.data.scan import IMAGE_EXTS
from lanskap.errors import LanskapError
from lanskap.folders import walk


@dataclass(frozen=True)
class ImageItem:
    path: Path
    prompt: str | None = None
    seed: int | None = None
    key: str = ""  # pairs the same prompt across sets in the side-by-side view


@dataclass
class ImageSet:
    name: str  # short id used in file names and the JSON ("real", "base", "lora", a folder name)
    label: str  # what a reader sees
    items: list[ImageItem]
    source: str = ""
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def prompts(self) -> list[str] | None:
        ps = [it.prompt for it in self.items]
        return None if any(p is None for p in ps) else ps  # type: ignore[return-value]


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_readable(paths: list[Path], where: str) -> None:
    """Decode every file once; name the unreadable ones in one message."""
    bad = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
        except Exception:  # any decoder failure means "unreadable" here
            bad.append(p.name)
    if bad:
        raise LanskapError(f"{len(bad)} unreadable image(s) in {where}: {_shown(bad)}; remove or replace them")


def folder_images(folder: Path, what: str) -> list[Path]:
    """The pictures in ``folder`` (recursively, sorted); errors for missing or empty folders."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise LanskapError(f"{what} folder not found: {folder}")
    if not folder.is_dir():
        raise LanskapError(f"{what} must be a folder of images: {folder}")
    paths = [p for p in walk(folder)[0] if p.suffix.lower() in IMAGE_EXTS]  # no links out, no FIFOs
    if not paths:
        raise LanskapError(f"{what} folder {folder} has no images (PNG, JPEG, WebP or BMP)")
    check_readable(paths, str(folder))
    return paths


def load_folder(folder: Path, what: str, name: str | None = None) -> ImageSet:
    paths = folder_images(folder, what)
    folder = Path(folder).expanduser()
    items = [ImageItem(p, key=p.relative_to(folder).with_suffix("").as_posix()) for p in paths]
    label = name or folder.resolve().name
    return ImageSet(name=label, label=label, items=items, source=str(folder))


def read_prompts(path: Path) -> list[str] | dict[str, str]:
    """Prompts for ``--prompts``: a list (.txt, one per line) or file name → prompt (.jsonl/.csv)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LanskapError(f"prompts file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".csv"):
        rows: list[dict] = []
        if path.suffix.lower() == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        raise LanskapError(f"{path.name} line {n} is not JSON") from None
        else:
            rows = list(csv.DictReader(text.splitlines()))
        table: dict[str, str] = {}
        for row in rows:
            name = row.get("file_name") or row.get("image") or row.get("file")
            prompt = row.get("text") or row.get("prompt") or row.get("caption") or row.get("captions")
            if not name or prompt is None:
                raise LanskapError(
                    f"{path.name}: each row needs a file name (file_name/image) and a prompt (text/prompt/caption)"
                )
            table[Path(str(name).replace("\\", "/")).name] = " ".join(str(prompt).split())
        if not table:
            raise LanskapError(f"prompts file {path} is empty")
        return table
    prompts = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    if not prompts:
        raise LanskapError(f"prompts file {path} is empty")
    return prompts


def attach_prompts(images: ImageSet, prompts: list[str] | dict[str, str], source: Path) -> ImageSet:
    """Give each image its prompt: by position for a list, by file name for a table."""
    if isinstance(prompts, list):
        if len(prompts) != len(images):
            raise LanskapError(
                f"{source.name} has {len(prompts)} prompts but {images.source} has {len(images)} images; "
                "a .txt prompts file needs one line per image, in file-name order"
            )
        pairs = list(zip(images.items, prompts, strict=True))
    else:
        missing = [it.path.name for it in images.items if it.path.name not in prompts]
        if missing:
            raise LanskapError(f"{source.name} has no prompt for {len(missing)} image(s): {_shown(missing)}")
        pairs = [(it, prompts[it.path.name]) for it in images.items]
    items = [ImageItem(it.path, p, it.seed, it.key) for it, p in pairs]
    return ImageSet(images.name, images.label, items, images.source, images.info)
