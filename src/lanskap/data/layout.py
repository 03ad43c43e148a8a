"""The prepared dataset on disk: imagefolder splits, thesis CSV and the dataset.json manifest.

One module reads and writes it, so ``prepare``, ``captions`` editing, ``preview``
and the trainer agree on the layout. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from lanskap.errors import LanskapError
from lanskap.io import atomic_write_text

MANIFEST = "dataset.json"
THESIS_CSV = "captions.csv"
SPLITS = ("train", "test")


def read_manifest(out: Path) -> dict[str, Any]:
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise LanskapError(f"{out} is not a prepared dataset (no {MANIFEST}); run 'lanskap dataset prepare' first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LanskapError(f"{path} is damaged: {exc.msg}") from None


def caption_source_counts(items: list[dict[str, Any]]) -> dict[str, int]:
    """How many captions came from each source (sidecar, blip, edited, ...), for the manifest."""
    counts: dict[str, int] = {}
    for it in items:
        counts[it["caption_source"]] = counts.get(it["caption_source"], 0) + 1
    return dict(sorted(counts.items()))


def write_captions(out: Path, manifest: dict[str, Any]) -> None:
    """metadata.jsonl per split, the thesis CSV, then the manifest (last: it is the commit point)."""
    items = manifest["items"]
    for split in SPLITS:
        lines = [
            json.dumps({"file_name": Path(it["file"]).name, "text": it["caption"]}, ensure_ascii=False)
            for it in items
            if it["split"] == split
        ]
        (out / split).mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / split / "metadata.jsonl", "".join(line + "\n" for line in lines))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "captions", "split"])
    for it in items:
        w.writerow([it["file"], it["caption"], it["split"]])
    atomic_write_text(out / THESIS_CSV, buf.getvalue())
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
