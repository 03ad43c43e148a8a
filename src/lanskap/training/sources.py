"""Where training pictures and captions come from: a prepared dataset, an imagefolder or a thesis CSV.

Everything is checked here, before a model is loaded, so a typo costs a second and
not a model load: missing files, missing columns and empty sets are one-line errors.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from lanskap.data.captions import sidecar_caption
from lanskap.data.layout import MANIFEST, read_manifest
from lanskap.data.scan import IMAGE_EXTS
from lanskap.errors import LanskapError, SettingError
from lanskap.folders import walk

CAPTION_COLUMNS = ("text", "caption", "captions")


@dataclass(frozen=True)
class Record:
    path: Path
    caption: str
    width: int
    height: int


@dataclass(frozen=True)
class TrainingSet:
    records: list[Record]
    kind: str  # "lanskap dataset", "imagefolder" or "csv"
    source: Path
    fingerprint: str  # changes when any file or caption changes; a resume checks it

    def __len__(self) -> int:
        return len(self.records)


def _missing(paths: list[str], where: Path) -> LanskapError:
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return LanskapError(f"{len(paths)} image file(s) listed in {where} are missing: {shown}")


def _pick_caption_column(columns: list[str], wanted: str | None, where: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise LanskapError(f"{where.name} has no caption column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    for name in CAPTION_COLUMNS:
        if name in columns:
            return name
    raise SettingError(
        f"{where.name} has no caption column (looked for {', '.join(CAPTION_COLUMNS)}; columns: "
        f"{', '.join(columns) or 'none'}); name the column that holds the captions",
        "caption_column",
    )


def _rows_from_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append({k: str(v) for k, v in json.loads(line).items()})
                except (json.JSONDecodeError, AttributeError):
                    raise LanskapError(f"{path.name} line {n} is not a JSON object") from None
        columns = list(dict.fromkeys(k for r in rows for k in r))
        return columns, rows
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise LanskapError(f"{path.name} is not a readable CSV: {exc}") from None
    return columns, rows


def _locate(name: str, base: Path) -> Path | None:
    """A path from a table: relative to the table's folder, absolute, or (Colab paths) by file name."""
    p = Path(name.replace("\\", "/")).expanduser()
    for cand in (p if p.is_absolute() else base / p, base / PurePosixPath(p.as_posix()).name):
        if cand.is_file():
            return cand
    return None


def _from_table(
    table: Path, image_column: str, caption_column: str | None, split: str | None = None
) -> list[tuple[Path, str]]:
    columns, rows = _rows_from_table(table)
    if split and "split" in columns:  # the thesis-style CSV lanskap writes names each row's split
        rows = [r for r in rows if r.get("split", "").strip() == split]
    if not rows:
        raise LanskapError(f"{table} lists no images: the {split or 'training'} set is empty")
    image_col = "file_name" if table.name.startswith("metadata.") and "file_name" in columns else image_column
    if image_col not in columns:
        raise LanskapError(f"{table.name} has no image column {image_col!r} (columns: {', '.join(columns)})")
    cap_col = _pick_caption_column(columns, caption_column, table)
    pairs, missing = [], []
    for row in rows:
        name, caption = row.get(image_col, "").strip(), " ".join(row.get(cap_col, "").split())
        if not name:
            continue
        found = _locate(name, table.parent)
        if found is None:
            missing.append(name)
        else:
            pairs.append((found, caption))
    if missing:
        raise _missing(missing, table)
    return pairs


def _from_folder(folder: Path) -> list[tuple[Path, str]]:
    """An imagefolder without metadata: captions from ``IMAGE.txt`` sidecars (kohya's layout)."""
    images = [p for p in walk(folder)[0] if p.suffix.lower() in IMAGE_EXTS]  # no links out, no FIFOs
    pairs, uncaptioned = [], []
    for p in images:
        rel = p.relative_to(folder).as_posix()
        caption = sidecar_caption(folder, rel)
        (pairs.append((p, caption)) if caption else uncaptioned.append(rel))
    if uncaptioned:
        raise LanskapError(
            f"{len(uncaptioned)} image(s) in {folder} have no caption (no metadata.jsonl/csv and no .txt "
            f"beside them), e.g. {uncaptioned[0]}; prepare the folder with 'lanskap dataset prepare'"
        )
    return pairs


def load_training_set(
    data: str | Path, image_column: str = "image", caption_column: str | None = None, split: str = "train"
) -> TrainingSet:
    """Records from ``data``: a prepared dataset (its ``split``), an imagefolder or a thesis CSV.

    Evaluation reads the ``test`` split through the same function, so both agree on the layout.
    """
    src = Path(data).expanduser()
    what = "training" if split == "train" else split
    if not src.exists():
        raise LanskapError(f"{what} data not found: {src}")
    if src.is_file():
        if src.suffix.lower() not in (".csv", ".jsonl"):
            raise LanskapError(f"{src.name}: {what} data must be a folder, a .csv or a .jsonl file")
        kind, pairs = "csv", _from_table(src, image_column, caption_column, split)
    elif (src / MANIFEST).is_file():
        items = [it for it in read_manifest(src)["items"] if it["split"] == split]
        missing = [it["file"] for it in items if not (src / it["file"]).is_file()]
        if missing:
            raise _missing(missing, src / MANIFEST)
        kind, pairs = "lanskap dataset", [(src / it["file"], it["caption"]) for it in items]
    else:
        root = src / split if (src / split).is_dir() and not _tables(src) else src
        tables = _tables(root)
        kind = "imagefolder"
        pairs = [pair for t in tables for pair in _from_table(t, image_column, caption_column)] if tables else []
        if not tables:
            pairs = _from_folder(root)
    if not pairs:
        raise LanskapError(f"no {what} images in {src}: the {split} split is empty")
    records, digest = [], hashlib.sha256()
    for path, caption in pairs:
        if not caption:
            raise LanskapError(f"{path.name} has an empty caption; every {what} image needs one")
        try:
            with Image.open(path) as im:
                size = im.size
        except (UnidentifiedImageError, OSError):
            raise LanskapError(f"{path} is not a readable image") from None
        records.append(Record(path, caption, *size))
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{caption}\n".encode())
    return TrainingSet(records, kind, src, digest.hexdigest()[:16])


def _tables(folder: Path) -> list[Path]:
    return [p for p in (folder / "metadata.jsonl", folder / "metadata.csv") if p.is_file()]
