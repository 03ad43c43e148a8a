"""``lanskap gallery repair``: a fresh gallery database from the image files themselves.

Every image lanskap saves carries its A1111 infotext, so the files are the record and the
database is an index of them. A rebuild builds a new database beside the old one: rows the
old one can still give are copied whole (with their timings and devices), every other image
file under the output folders is indexed from its infotext, and only then does the new file
take the old one's place. The old database is kept beside it, renamed, so nothing is lost
even when the rebuild is wrong.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lanskap.folders import walk
from lanskap.gallery.store import COLUMNS, Gallery

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class RebuildReport:
    """What a rebuild did, for the person who asked for it."""

    copied: int = 0  # rows taken whole from the old database
    indexed: int = 0  # images found on disk and indexed from their infotext
    skipped: list[str] = field(default_factory=list)  # image files with no infotext (not lanskap's)
    old_database: Path | None = None  # where the old database now is


def _old_rows(db: Path) -> list[dict[str, Any]]:
    """The old database's finished rows, as far as it can still be read (none when it can't)."""
    if not db.is_file() or db.stat().st_size == 0:
        return []
    rows: list[dict[str, Any]] = []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        try:
            for row in con.execute(f"SELECT {', '.join(COLUMNS)} FROM images WHERE state='ok' ORDER BY id"):
                rows.append(dict(row))
        finally:
            con.close()
    except sqlite3.DatabaseError:  # a damaged page: keep what was read before it
        pass
    return rows


def record_from_image(path: Path) -> dict[str, Any] | None:
    """A gallery row from an image's own infotext; None for a picture that has none."""
    from lanskap.generation.infotext import parse_infotext
    from lanskap.generation.output import image_info

    try:
        text, _ = image_info(path.read_bytes(), max_pixels=2**34)
    except Exception:  # an unreadable file is skipped, like a file with no infotext
        return None
    if not text or "Steps:" not in text:
        return None
    p = parse_infotext(text)
    width, _, height = p.get("Size", "0x0").partition("x")

    def number(key: str, kind: type) -> Any:
        with contextlib.suppress(ValueError, TypeError):
            return kind(p[key])
        return None

    made = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="milliseconds")
    return {
        "created": made,
        "prompt": p.get("Prompt", ""),
        "negative_prompt": p.get("Negative prompt", ""),
        "seed": number("Seed", int) or 0,
        "steps": number("Steps", int),
        "guidance": number("CFG scale", float),
        "sampler": p.get("Sampler"),
        "width": int(width) if width.isdigit() else 0,
        "height": int(height) if height.isdigit() else 0,
        "mode": "img2img" if "Denoising strength" in p else "txt2img",
        "model": p.get("Model"),
        "model_hash": p.get("Model hash"),
        "params": {k: v for k, v in p.items() if k not in ("Prompt", "Negative prompt")},
        "infotext": text,
        "source": "repair",
    }


def rebuild(home: Path, folders: list[Path]) -> RebuildReport:
    """Build a fresh ``home/gallery.sqlite3`` from the old rows that can be read and the image files."""
    home = Path(home)
    db = home / "gallery.sqlite3"
    report = RebuildReport()
    fresh_path = home / f".gallery.rebuild-{os.getpid()}.sqlite3"
    for leftover in (fresh_path, *(fresh_path.with_name(fresh_path.name + s) for s in ("-wal", "-shm"))):
        leftover.unlink(missing_ok=True)
    fresh = Gallery(home, db=fresh_path)
    known: set[Path] = set()
    for row in _old_rows(db):
        path = Path(row["path"])
        if path.is_file() and path.resolve() not in known:
            fresh.index(path, _decoded(row))
            known.add(path.resolve())
            report.copied += 1
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for path in walk(Path(folder))[0]:
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.resolve() in known:
                continue
            record = record_from_image(path)
            if record is None:
                report.skipped.append(str(path))
                continue
            fresh.index(path, record)
            known.add(path.resolve())
            report.indexed += 1
    _swap(db, fresh_path, report)
    return report


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    import json

    out = dict(row)
    out["loras"] = json.loads(out.get("loras") or "[]")
    out["params"] = json.loads(out.get("params") or "{}")
    return out


def _swap(db: Path, fresh: Path, report: RebuildReport) -> None:
    """Keep the old database (and its journal) aside, then move the new one into its place."""
    with sqlite3.connect(fresh) as con:  # fold the write-ahead log into the file before it moves
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if db.exists():
        report.old_database = db.with_name(f"{db.name}.old-{stamp}")
        os.replace(db, report.old_database)
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        if side.exists():
            os.replace(side, db.with_name(f"{db.name}.old-{stamp}{suffix}"))
        fresh.with_name(fresh.name + suffix).unlink(missing_ok=True)
    os.replace(fresh, db)
