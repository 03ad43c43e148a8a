"""The gallery: every generated image as a file plus a row in one SQLite database.

Several processes (the CLI, the API server, the web app) write at once, so the
database runs in WAL mode with a busy timeout, and each call uses its own short
connection. A crash must never leave a row without its file or a file without
its row, so every change is journalled in the row's ``state``:

* add: the row is committed as ``pending`` with its final path first; the file
  then appears atomically (written to a temp file, then linked into place), and
  the row becomes ``ok``. A file therefore never exists without its row.
* delete: the row becomes ``deleting``, the file is removed, the row is removed.

:meth:`Gallery.repair` finishes whatever a dead process left half-done (a
pending row whose file exists is kept, one without a file is dropped; deleting
rows are completed). It runs whenever a gallery is opened. Rows of processes
that are still alive are left alone: each writing process holds an ``flock`` on its
own lease file in ``.gallery-writers/`` and signs its rows with the lease's name, so a
writer is known dead when its lease can be locked, also when it ran as another PID in
another PID namespace (a container's server as PID 1).

A database that is empty or damaged is never taken for an empty gallery: opening it is
a one-line error, and ``lanskap gallery repair`` (:mod:`lanskap.gallery.rebuild`) builds
a fresh one from the image files' own infotexts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lanskap.errors import LanskapError
from lanskap.io import atomic_write_bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'pending',
    owner_pid INTEGER NOT NULL,
    created TEXT NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL DEFAULT '',
    seed INTEGER NOT NULL,
    steps INTEGER,
    guidance REAL,
    sampler TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mode TEXT NOT NULL DEFAULT 'txt2img',
    model TEXT,
    model_hash TEXT,
    loras TEXT NOT NULL DEFAULT '[]',
    params TEXT NOT NULL DEFAULT '{}',
    infotext TEXT NOT NULL DEFAULT '',
    seconds REAL,
    device TEXT,
    dtype TEXT,
    source TEXT NOT NULL DEFAULT 'cli',
    owner TEXT
);
CREATE INDEX IF NOT EXISTS images_created ON images(created);
CREATE INDEX IF NOT EXISTS images_state ON images(state);
"""
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


def _entry(row: sqlite3.Row) -> Entry:
    d = {k: row[k] for k in COLUMNS}
    d["path"] = Path(d["path"])
    d["loras"] = json.loads(d["loras"])
    d["params"] = json.loads(d["params"])
    return Entry(**d)


class GalleryDamagedError(LanskapError):
    """The gallery database is empty or damaged; its images are still on disk."""


#: How a damaged database is put right, said in every message about one.
REPAIR_HINT = "its images are still on disk; run 'lanskap gallery repair' to rebuild it from them"

_LEASES: dict[Path, tuple[str, int]] = {}  # gallery home -> (this process's lease name, its locked fd)


def _lease(home: Path) -> str:
    """This process's writer lease for the gallery in ``home``: a file it holds an flock on until it exits."""
    key = Path(home).resolve()
    if key not in _LEASES:
        folder = key / ".gallery-writers"
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _LEASES[key] = (name, fd)
    return _LEASES[key][0]


def _writer_alive(home: Path, owner: str | None, pid: int) -> bool:
    """Whether the process that left a row half-done still runs: by its lease, else (older rows) by PID."""
    if not owner:
        return _alive(pid)
    if _LEASES.get(Path(home).resolve(), ("", 0))[0] == owner:
        return True
    lock = Path(home) / ".gallery-writers" / f"{owner}.lock"
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock
    with contextlib.suppress(OSError):
        lock.unlink()  # the writer is gone: its lease goes too
    return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _ensure_wal(con: sqlite3.Connection, patience: float = 30.0) -> None:
    """Switch a new database to WAL once; it stays WAL in the file for every later connection.

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once instead
    of calling the busy handler when several processes open a new gallery together, so retry.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Gallery:
    """The gallery database at ``home/gallery.sqlite3``; image files live wherever they were saved."""

    def __init__(self, home: Path, db: Path | None = None) -> None:
        self.home = Path(home)
        self.db = Path(db) if db is not None else self.home / "gallery.sqlite3"
        if self.db.is_file() and self.db.stat().st_size == 0:  # SQLite would call it a new, empty gallery
            raise GalleryDamagedError(f"gallery database {self.db} is empty (0 bytes); {REPAIR_HINT}")
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.db.exists():
            self._create()
        with self._connect() as con:
            con.executescript(SCHEMA)
            if "owner" not in {r[1] for r in con.execute("PRAGMA table_info(images)")}:  # a gallery from before leases
                con.execute("ALTER TABLE images ADD COLUMN owner TEXT")
        self.repair()

    def _create(self) -> None:
        """Make the database whole in a temp file and link it into place, so ``gallery.sqlite3`` is
        never seen empty while another process creates it: an empty one is always damage."""
        tmp = self.db.with_name(f".{self.db.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            con = sqlite3.connect(tmp)
            try:
                con.executescript(SCHEMA)
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, self.db)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise GalleryDamagedError(f"gallery database {self.db} can't be opened ({exc}); {REPAIR_HINT}") from None
        try:
            con.row_factory = sqlite3.Row
            _ensure_wal(con)
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError) or "locked" in str(exc):
                raise  # a name taken by another writer, or a busy database: not damage
            raise GalleryDamagedError(f"gallery database {self.db} is damaged ({exc}); {REPAIR_HINT}") from None
        finally:
            con.close()

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
                        f"VALUES (?, 'pending', ?, ?, {', '.join('?' * len(fields))})",
                        (str(path), os.getpid(), _lease(self.home), *fields.values()),
                    )
                except sqlite3.IntegrityError:  # another process reserved this name first
                    continue
                row_id = cur.lastrowid
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
        """Remove each image's file and row; return how many existed."""
        done = 0
        for row_id in ids:
            with self._connect() as con:
                row = con.execute("SELECT path FROM images WHERE id=? AND state='ok'", (row_id,)).fetchone()
                if row is None:
                    continue
                con.execute(
                    "UPDATE images SET state='deleting', owner_pid=?, owner=? WHERE id=?",
                    (os.getpid(), _lease(self.home), row_id),
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
            if _writer_alive(self.home, row["owner"], row["owner_pid"]):
                continue
            path = Path(row["path"])
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
            where.append("(prompt LIKE ? ESCAPE '\\' OR negative_prompt LIKE ? ESCAPE '\\')")
            pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
        if lora:
            where.append("EXISTS (SELECT 1 FROM json_each(images.loras) WHERE json_extract(value, '$.name') = ?)")
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
            rows = con.execute(
                "SELECT DISTINCT json_extract(value, '$.name') FROM images, json_each(images.loras) "
                "WHERE state='ok' ORDER BY 1"
            ).fetchall()
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
                "SELECT DISTINCT width, height FROM images WHERE state='ok' ORDER BY width * height DESC, width DESC"
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def check(self) -> dict[str, list]:
        """Consistency report: ok rows whose file is gone (deleted by hand) and unfinished rows."""
        with self._connect() as con:
            rows = con.execute("SELECT id, path, state FROM images").fetchall()
        return {
            "missing_files": [r["id"] for r in rows if r["state"] == "ok" and not Path(r["path"]).is_file()],
            "unfinished": [r["id"] for r in rows if r["state"] != "ok"],
        }

    def integrity(self) -> list[str]:
        """SQLite's own check of every page and index: empty when the file is sound."""
        with self._connect() as con:
            found = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
        return [] if found == ["ok"] else found

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
                f"INSERT OR IGNORE INTO images (path, state, owner_pid, {', '.join(fields)}) "
                f"VALUES (?, 'ok', ?, {', '.join('?' * len(fields))})",
                (str(Path(path).resolve()), os.getpid(), *fields.values()),
            )
