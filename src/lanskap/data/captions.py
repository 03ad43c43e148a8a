"""Where captions come from, in order: sidecar .txt, imagefolder metadata, thesis CSV, then BLIP."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from lanskap.errors import LanskapError, ModelUnavailableError
from lanskap.folders import check_entry, walk

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"


def sidecar_caption(src: Path, rel: str) -> str | None:
    """``IMAGE.txt`` beside the image (kohya's convention), or ``IMAGE.png.txt``."""
    path = src / rel
    for cand in (path.with_suffix(".txt"), path.with_name(path.name + ".txt")):
        if cand.is_file() and check_entry(cand, src, cand.relative_to(src).as_posix()) is None:
            text = cand.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                return " ".join(text.split())
    return None


def _key(rel: str) -> str:
    return rel.replace("\\", "/").lstrip("./").lower()


def metadata_captions(src: Path) -> dict[str, tuple[str, str]]:
    """``{relative path (lowercase): (caption, source name)}`` from every metadata.jsonl/csv and thesis CSV.

    Hugging Face imagefolder: ``metadata.jsonl``/``metadata.csv`` with ``file_name`` and a text column
    (``text``, ``caption`` or ``captions``), paths relative to the metadata file's folder. Thesis CSV: any
    other CSV with ``image`` and ``captions`` columns; absolute Colab paths are matched by file name.
    """
    found: dict[str, tuple[str, str]] = {}
    by_name: dict[str, tuple[str, str]] = {}
    files = walk(src)[0]  # the same files the scan reads: no links out of SRC
    for meta in [f for f in files if f.name == "metadata.jsonl"]:
        base = meta.parent.relative_to(src).as_posix()
        for n, line in enumerate(meta.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise LanskapError(f"{meta.relative_to(src)} line {n} is not JSON") from None
            _add(found, row, base, "metadata.jsonl")
    for table in [f for f in files if f.suffix.lower() == ".csv"]:
        try:
            with table.open(newline="", encoding="utf-8", errors="replace") as f:
                rows = list(csv.DictReader(f))
        except csv.Error as exc:
            raise LanskapError(f"{table.relative_to(src)} is not a readable CSV: {exc}") from None
        base = table.parent.relative_to(src).as_posix()
        if table.name == "metadata.csv":
            for row in rows:
                _add(found, row, base, "metadata.csv")
        elif rows and {"image", "captions"} <= {k.strip().lower() for k in rows[0] if k}:
            for row in rows:
                low = {k.strip().lower(): v for k, v in row.items() if k}
                img, cap = (low.get("image") or "").strip(), " ".join((low.get("captions") or "").split())
                if img and cap:
                    p = PurePosixPath(img.replace("\\", "/"))
                    if not p.is_absolute():
                        found.setdefault(_key(str(PurePosixPath(base) / p)), (cap, "thesis-csv"))
                    by_name.setdefault(p.name.lower(), (cap, "thesis-csv"))
    found.update({f"name:{k}": v for k, v in by_name.items()})
    return found


def _add(found: dict, row: dict[str, Any], base: str, source: str) -> None:
    name = str(row.get("file_name") or "").strip()
    text = next((row[k] for k in ("text", "caption", "captions") if row.get(k)), None)
    if name and text:
        found.setdefault(_key(str(PurePosixPath(base) / name)), (" ".join(str(text).split()), source))


def lookup(table: dict[str, tuple[str, str]], rel: str) -> tuple[str, str] | None:
    return table.get(_key(rel)) or table.get(f"name:{PurePosixPath(rel).name.lower()}")


class BlipCaptioner:
    """BLIP image captioning (the thesis's BlipProcessor + BlipForConditionalGeneration), batched."""

    def __init__(self, model: str = DEFAULT_CAPTIONER, device: str = "cpu", batch_size: int = 8) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.batch_size = batch_size
        self.device = device
        local = Path(model).expanduser()
        try:
            if local.exists():
                self.processor = BlipProcessor.from_pretrained(str(local))
                self.model = BlipForConditionalGeneration.from_pretrained(str(local), use_safetensors=True)
            else:
                self.processor = BlipProcessor.from_pretrained(model)
                self.model = BlipForConditionalGeneration.from_pretrained(model, use_safetensors=True)
        except OSError:
            raise ModelUnavailableError(
                f"captioner {model!r} is not available offline; download it with 'hf download {model}', "
                "give a local folder as the captioner, or caption with none",
                "captioner",
            ) from None
        self.model.to(device).eval()

    def caption(self, images: list[Image.Image], progress: Callable[[int, int], None] | None = None) -> list[str]:
        import torch

        out: list[str] = []
        for i in range(0, len(images), self.batch_size):
            batch = images[i : i + self.batch_size]
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            with torch.no_grad():
                ids = self.model.generate(**inputs, max_new_tokens=40)
            out.extend(" ".join(t.split()) for t in self.processor.batch_decode(ids, skip_special_tokens=True))
            if progress:
                progress(len(out), len(images))
        return out
