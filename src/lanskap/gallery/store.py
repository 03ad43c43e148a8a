"""The gallery: every generated image as a file plus a row in one database.

The database is SQLite by default (:mod:`lanskap.gallery.sqlite_db`: one file, WAL, shared by
the processes of one machine) or PostgreSQL (:mod:`lanskap.gallery.postgres_db`, when the
``gallery_url`` setting is ``postgresql://…``: shared by many machines, whose image files
then live on a path they all mount). A crash must never leave a row without its file or a file
without its row, so every change is journalled in the row's ``state``:

* add: the row is committed as ``pending`` with its final path first; the file
  then appears atomically (written to a temp file, then linked into place), and
  the row becomes ``ok``. A file therefore never exists without its row.
* delete: the row becomes ``deleting``, the file is removed, the row is removed.

:meth:`Gallery.repair` finishes whatever a dead process left half-done (a
pending row whose file exists is kept, one without a file is dropped; deleting
rows are completed). It runs whenever a gallery is opened. Rows of processes
that are still alive are left alone: each writing process holds a lease (an ``flock``,
or a PostgreSQL advisory lock) and signs its rows with the lease's name. The store never
trusts a file it can't see: a row whose folder this machine doesn't have (another
machine's, not shared) is neither judged missing nor deleted here.

A database that is empty or damaged is never taken for an empty gallery: opening it is
a one-line error, and ``lanskap gallery repair`` (:mod:`lanskap.gallery.rebuild`) builds
a fresh one from the image files' own infotexts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanskap.errors import LanskapError
from lanskap.gallery.sqlite_db import REPAIR_HINT, GalleryDamagedError, SqliteDatabase
from lanskap.io import atomic_write_bytes

if TYPE_CHECKING:
    from lanskap.config import Settings
    from lanskap.gallery.postgres_db import PostgresDatabase

__all__ = ["COLUMNS", "REPAIR_HINT", "Entry", "Gallery", "GalleryDamagedError"]

COLUMNS = (
    "id", "path", "created", "prompt", "negative_prompt", "seed", "steps", "guidance", "sampler", "width",
    "height", "mode", "model", "model_hash", "loras", "params", "infotext", "seconds", "device", "dtype", "source",
)  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One gallery image as the shells show it."""

    id: int
    path: Path
    created: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int | None
    guidance: float | None
    sampler: str | None
    width: int
    height: int
    mode: str
    model: str | None
    model_hash: str | None
    loras: list[dict[str, Any]]
    params: dict[str, Any]
    infotext: str
    seconds: float | None
    device: str | None
    dtype: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def _entry(row: Any) -> Entry:
    d = {k: row[k] for k in COLUMNS}
    d["path"] = Path(d["path"])
    d["loras"] = json.loads(d["loras"])
    d["params"] = json.loads(d["params"])
    return Entry(**d)


class Gallery:
    """The gallery database (``home/gallery.sqlite3``, or PostgreSQL at ``url``); image files live
    wherever they were saved."""

    def __init__(self, home: Path, db: Path | None = None, url: str | None = None) -> None:
        from lanskap.gallery.postgres_db import PostgresDatabase, is_postgres_url

        self.home = Path(home)
        self.store: SqliteDatabase | PostgresDatabase
        if url:
            if not is_postgres_url(url):
                raise LanskapError(f"the gallery URL must start with postgresql://, not {url.split(':')[0]!r}")
            self.db: Path | None = None
            self.store = PostgresDatabase(url)
        else:
            self.db = Path(db) if db is not None else self.home / "gallery.sqlite3"
            self.store = SqliteDatabase(self.home, self.db)
        self.store.prepare()
        self.repair()

    @classmethod
    def open(cls, settings: Settings) -> Gallery:
        """The gallery the settings name: PostgreSQL when ``gallery_url`` is set, else the home's SQLite file."""
        return cls(settings.home, url=settings.gallery_url)

    @property
    def location(self) -> str:
        """Where the rows are, for messages: the file, or the URL without its password."""
        return self.store.label

    def _connect(self) -> Any:
        return self.store.connect()

    # -- writing -------------------------------------------------------------------------------
    def add(self, data: bytes, folder: Path, fmt: str, record: dict[str, Any]) -> Entry:
        """Store ``data`` as ``folder/NNNNN-SEED.fmt`` (A1111's naming, next free number) with its row."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        created = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        fields = {
            "created": created,
            "prompt": record.get("prompt", ""),
            "negative_prompt": record.get("negative_prompt", ""),
            "seed": int(record["seed"]),
            "steps": record.get("steps"),
            "guidance": record.get("guidance"),
            "sampler": record.get("sampler"),
            "width": int(record["width"]),
            "height": int(record["height"]),
            "mode": record.get("mode", "txt2img"),
            "model": record.get("model"),
            "model_hash": record.get("model_hash"),
            "loras": json.dumps(record.get("loras", [])),
            "params": json.dumps(record.get("params", {}), default=str),
            "infotext": record.get("infotext", ""),
            "seconds": record.get("seconds"),
            "device": record.get("device"),
            "dtype": record.get("dtype"),
            "source": record.get("source", "cli"),
        }
        from lanskap.generation.output import next_index

        index = 0
        while True:
            index = max(index + 1, next_index(folder))
            path = (folder / f"{index:05d}-{fields['seed']}.{fmt}").resolve()
            with self._connect() as con:
                try:
                    cur = con.execute(
                        f"INSERT INTO images (path, state, owner_pid, owner, {', '.join(fields)}) "
                        f"VALUES (?, 'pending', ?, ?, {', '.join('?' * len(fields))}) RETURNING id",
                        (str(path), os.getpid(), self.store.lease(), *fields.values()),
                    )
                    row_id = cur.fetchone()[0]
                except self.store.IntegrityError:  # another process reserved this name first
                    continue
            try:
                atomic_write_bytes(path, data, replace=False)
            except FileExistsError:  # a file not in the gallery holds the name: take the next one
                self._drop(row_id)
                continue
            except BaseException:
                self._drop(row_id)
                raise
            with self._connect() as con:
                con.execute("UPDATE images SET state='ok' WHERE id=?", (row_id,))
            return self.get(row_id)

    def _drop(self, row_id: int | None) -> None:
        with self._connect() as con:
            con.execute("DELETE FROM images WHERE id=?", (row_id,))

    def delete(self, ids: list[int]) -> int:
        """Remove each image's file and row; return how many existed.

        A file in a folder this machine can't see is refused, not forgotten: its row stays until a
        machine that mounts that folder deletes it.
        """
        done = 0
        for row_id in ids:
            with self._connect() as con:
                row = con.execute("SELECT path FROM images WHERE id=? AND state='ok'", (row_id,)).fetchone()
                if row is None:
                    continue
                if not Path(row["path"]).parent.is_dir():
                    raise LanskapError(
                        f"image {row_id} is in {Path(row['path']).parent}, which this machine can't see; "
                        "delete it from a machine that mounts the shared images folder"
                    )
                con.execute(
                    "UPDATE images SET state='deleting', owner_pid=?, owner=? WHERE id=?",
                    (os.getpid(), self.store.lease(), row_id),
                )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(row["path"])
            self._drop(row_id)
            done += 1
        return done

    def repair(self) -> dict[str, int]:
        """Finish the adds and deletes of processes that died half-way (see the module docstring)."""
        fixed = {"kept": 0, "dropped": 0, "deleted": 0}
        with self._connect() as con:
            rows = con.execute("SELECT id, path, state, owner_pid, owner FROM images WHERE state != 'ok'").fetchall()
        for row in rows:
            path = Path(row["path"])
            if not path.parent.is_dir():  # another machine's folder: not this machine's to judge
                continue
            if self.store.writer_alive(row["owner"], row["owner_pid"]):
                continue
            with self._connect() as con:
                if row["state"] == "pending" and path.is_file():
                    con.execute("UPDATE images SET state='ok' WHERE id=? AND state='pending'", (row["id"],))
                    fixed["kept"] += 1
                    continue
                if row["state"] == "deleting":
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    fixed["deleted"] += 1
                else:
                    for tmp in path.parent.glob(f".{path.name}.*.tmp"):  # the dead writer's partial file
                        with contextlib.suppress(OSError):
                            tmp.unlink()
                    fixed["dropped"] += 1
                con.execute("DELETE FROM images WHERE id=? AND state=?", (row["id"], row["state"]))
        return fixed

    # -- reading -------------------------------------------------------------------------------
    def get(self, row_id: int) -> Entry:
        with self._connect() as con:
            row = con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM images WHERE id=? AND state='ok'", (row_id,)
            ).fetchone()
        if row is None:
            raise LanskapError(f"no image {row_id} in the gallery")
        return _entry(row)

    def by_path(self, path: Path) -> Entry | None:
        """The gallery's entry for an image file, if it holds one (an upscale then links to it by id)."""
        with self._connect() as con:
            row = con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM images WHERE path IN (?, ?) AND state='ok'",
                (str(Path(path)), str(Path(path).resolve())),
            ).fetchone()
        return None if row is None else _entry(row)

    def query(
        self,
        search: str | None = None,
        *,
        lora: str | None = None,
        width: int | None = None,
        height: int | None = None,
        since: str | None = None,
        until: str | None = None,
        seed: int | None = None,
        mode: str | None = None,
        model: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Entry], int]:
        """Newest first, filtered; returns one page and the total number of matches.

        ``mode`` is txt2img, img2img or inpaint, ``model`` the model's name as the infotext gives it.
        """
        where, args = ["state='ok'"], []
        for word in (search or "").split():
            like = self.store.like
            where.append(f"(prompt {like} ? ESCAPE '\\' OR negative_prompt {like} ? ESCAPE '\\')")
            pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
        if lora:
            where.append(self.store.lora_filter_sql)
            args.append(lora)
        for value, test in (
            (width, "width = ?"),
            (height, "height = ?"),
            (since, "created >= ?"),
            (until, "created < ?"),
            (mode, "mode = ?"),
            (model, "model = ?"),
        ):
            if value:
                where.append(test)
                args.append(value)
        if seed is not None:  # 0 is a seed like any other
            where.append("seed = ?")
            args.append(seed)
        clause = " AND ".join(where)
        with self._connect() as con:
            total = con.execute(f"SELECT COUNT(*) FROM images WHERE {clause}", args).fetchone()[0]
            rows = con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM images WHERE {clause} "
                "ORDER BY created DESC, id DESC LIMIT ? OFFSET ?",
                [*args, max(0, limit), max(0, offset)],
            ).fetchall()
        return [_entry(r) for r in rows], total

    def models(self) -> list[str]:
        """Every model name in the gallery, for the filter."""
        with self._connect() as con:
            rows = con.execute("SELECT DISTINCT model FROM images WHERE state='ok' AND model != '' ORDER BY 1")
            return [r[0] for r in rows.fetchall()]

    def loras(self) -> list[str]:
        """Every LoRA name used in the gallery, for the filter."""
        with self._connect() as con:
            rows = con.execute(self.store.lora_names_sql + "WHERE state='ok' ORDER BY 1").fetchall()
        return [r[0] for r in rows if r[0]]

    def prompts(self, limit: int = 100) -> list[tuple[str, str]]:
        """The latest distinct (prompt, negative prompt) pairs, newest first: the prompt history."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT prompt, negative_prompt FROM images WHERE state='ok' AND prompt != '' "
                "GROUP BY prompt, negative_prompt ORDER BY MAX(created) DESC, MAX(id) DESC LIMIT ?",
                [max(0, limit)],
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def sizes(self) -> list[tuple[int, int]]:
        """Every image size in the gallery, largest first, for the filter."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT width, height FROM images WHERE state='ok' GROUP BY width, height "
                "ORDER BY width * height DESC, width DESC"
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def check(self) -> dict[str, list]:
        """Consistency report: ok rows whose file is gone (deleted by hand), unfinished rows, and rows in
        folders this machine can't see (another machine's; never taken for missing)."""
        with self._connect() as con:
            rows = con.execute("SELECT id, path, state FROM images").fetchall()
        visible = [r for r in rows if Path(r["path"]).parent.is_dir()]
        report: dict[str, list] = {
            "missing_files": [r["id"] for r in visible if r["state"] == "ok" and not Path(r["path"]).is_file()],
            "unfinished": [r["id"] for r in rows if r["state"] != "ok"],
        }
        unseen = [r["id"] for r in rows if r not in visible]
        if unseen:
            report["unseen"] = unseen
        return report

    def integrity(self) -> list[str]:
        """The database's own check (SQLite's pages and indexes): empty when it is sound."""
        return self.store.integrity()

    def paths(self) -> set[Path]:
        """Every file the gallery knows, whatever its state."""
        with self._connect() as con:
            return {Path(r[0]) for r in con.execute("SELECT path FROM images").fetchall()}

    def index(self, path: Path, record: dict[str, Any]) -> None:
        """Add a row for an image file that is already in place (a rebuild: the file is not written)."""
        fields = {name: record[name] for name in COLUMNS if name not in ("id", "path") and name in record}
        fields["loras"] = json.dumps(fields.get("loras", []))
        fields["params"] = json.dumps(fields.get("params", {}), default=str)
        with self._connect() as con:
            con.execute(
                f"INSERT INTO images (path, state, owner_pid, {', '.join(fields)}) "
                f"VALUES (?, 'ok', ?, {', '.join('?' * len(fields))}) ON CONFLICT DO NOTHING",
                (str(Path(path).resolve()), os.getpid(), *fields.values()),
            )

    def rows(self) -> list[dict[str, Any]]:
        """Every finished row as stored (JSON columns as text), oldest first: what a migration copies."""
        with self._connect() as con:
            rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM images WHERE state='ok' ORDER BY id").fetchall()
        return [{k: r[k] for k in COLUMNS} for r in rows]
