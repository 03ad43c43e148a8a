"""Caption editing for a prepared dataset: list, set, replace, CSV export/import.

Edited captions are marked ``edited`` in the manifest, and ``prepare --update``
keeps them, so fixing BLIP's mistakes by hand is never undone.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from lanskap.data.layout import caption_source_counts, read_manifest, write_captions
from lanskap.errors import LanskapError
from lanskap.io import atomic_write_text


def list_captions(out: Path, search: str | None = None) -> list[dict[str, Any]]:
    items = read_manifest(out)["items"]
    if search:
        needle = search.lower()
        items = [it for it in items if needle in it["caption"].lower() or needle in it["file"].lower()]
    return items


def _find(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    hits = [it for it in items if key in (it["file"], Path(it["file"]).name, it["source"], it["sha256"])]
    if len(hits) != 1:
        raise LanskapError(f"no image {key!r} in the dataset" if not hits else f"{key!r} names several images")
    return hits[0]


def _edit(it: dict[str, Any], text: str) -> bool:
    text = " ".join(text.split())
    if not text:
        raise LanskapError(f"caption for {it['file']} would be empty")
    if text == it["caption"]:
        return False
    it.update(caption=text, raw_caption=text, caption_source="edited", enriched=False, captioner=None)
    it["tokens"] = None
    it["over_token_window"] = None
    return True


def _save(out: Path, manifest: dict[str, Any]) -> None:
    manifest["counts"]["caption_sources"] = caption_source_counts(manifest["items"])
    write_captions(out, manifest)


def set_caption(out: Path, key: str, text: str) -> dict[str, Any]:
    manifest = read_manifest(out)
    it = _find(manifest["items"], key)
    if _edit(it, text):
        _save(out, manifest)
    return it


def replace_text(out: Path, old: str, new: str, regex: bool = False) -> int:
    """Replace ``old`` with ``new`` in every caption; returns how many captions changed."""
    manifest = read_manifest(out)
    try:
        pattern = re.compile(old if regex else re.escape(old))
    except re.error as exc:
        raise LanskapError(f"bad regular expression {old!r}: {exc}") from None
    changed = sum(_edit(it, pattern.sub(new, it["caption"])) for it in manifest["items"])
    if changed:
        _save(out, manifest)
    return changed


def export_csv(out: Path, dest: Path) -> int:
    items = read_manifest(out)["items"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "caption", "split", "source", "caption_source"])
    for it in items:
        w.writerow([it["file"], it["caption"], it["split"], it["source"], it["caption_source"]])
    atomic_write_text(dest, buf.getvalue())
    return len(items)


def import_csv(out: Path, src: Path) -> int:
    """Apply a CSV with ``file`` and ``caption`` columns (as written by export); returns the number changed."""
    if not src.is_file():
        raise LanskapError(f"CSV not found: {src}")
    manifest = read_manifest(out)
    with src.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise LanskapError(f"{src.name} needs 'file' and 'caption' columns")
        rows = list(reader)
    changed = sum(_edit(_find(manifest["items"], row["file"]), row["caption"] or "") for row in rows)
    if changed:
        _save(out, manifest)
    return changed
