"""The gallery's embedded database: one SQLite file in WAL mode, shared by the processes of one machine.

Each call opens its own short connection with a busy timeout, so the CLI, the API server and
the web app write at once. A writer's lease is an ``flock`` on its own file in
``.gallery-writers/``, so a writer is known dead when its lease can be locked, also when it ran
as another PID in another PID namespace (a container's server as PID 1).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lanskap.errors import LanskapError
from lanskap.gallery.schema import statements

SCHEMA = ";\n".join(statements(postgres=False)) + ";\n"


class GalleryDamagedError(LanskapError):
    """The gallery database is empty or damaged; its images are still on disk."""


#: How a damaged database is put right, said in every message about one.
REPAIR_HINT = "its images are still on disk; run 'lanskap gallery repair' to rebuild it from them"

_LEASES: dict[Path, tuple[str, int]] = {}  # gallery home -> (this process's lease name, its locked fd)


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


class SqliteDatabase:
    """``home/gallery.sqlite3`` (or ``db``): the embedded default."""

    IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    like = "LIKE"  # case-blind for ASCII in SQLite
    lora_names_sql = "SELECT DISTINCT json_extract(value, '$.name') FROM images, json_each(images.loras) "
    lora_filter_sql = "EXISTS (SELECT 1 FROM json_each(images.loras) WHERE json_extract(value, '$.name') = ?)"

    def __init__(self, home: Path, db: Path) -> None:
        self.home, self.path = Path(home), Path(db)
        self.label = str(self.path)

    def prepare(self) -> None:
        """Create the database whole (never seen empty) and bring an older schema up to date."""
        if self.path.is_file() and self.path.stat().st_size == 0:  # SQLite would call it a new, empty gallery
            raise GalleryDamagedError(f"gallery database {self.path} is empty (0 bytes); {REPAIR_HINT}")
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create()
        with self.connect() as con:
            con.executescript(SCHEMA)
            if "owner" not in {r[1] for r in con.execute("PRAGMA table_info(images)")}:  # a gallery from before leases
                con.execute("ALTER TABLE images ADD COLUMN owner TEXT")

    def _create(self) -> None:
        """Make the database whole in a temp file and link it into place, so ``gallery.sqlite3`` is
        never seen empty while another process creates it: an empty one is always damage."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            con = sqlite3.connect(tmp)
            try:
                con.executescript(SCHEMA)
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, self.path)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """One short autocommit connection (``?`` placeholders; rows by name and by index)."""
        try:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise GalleryDamagedError(f"gallery database {self.path} can't be opened ({exc}); {REPAIR_HINT}") from None
        try:
            con.row_factory = sqlite3.Row
            _ensure_wal(con)
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError) or "locked" in str(exc):
                raise  # a name taken by another writer, or a busy database: not damage
            raise GalleryDamagedError(f"gallery database {self.path} is damaged ({exc}); {REPAIR_HINT}") from None
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: the statements inside commit together, or none does."""
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def after_explicit_ids(self, con: Any) -> None:
        """Rows inserted with their own ids: AUTOINCREMENT already continues after the largest."""

    def lease(self) -> str:
        """This process's writer lease: a file it holds an flock on until it exits."""
        key = self.home.resolve()
        if key not in _LEASES:
            folder = key / ".gallery-writers"
            folder.mkdir(parents=True, exist_ok=True)
            name = uuid.uuid4().hex
            fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            _LEASES[key] = (name, fd)
        return _LEASES[key][0]

    def writer_alive(self, owner: str | None, pid: int) -> bool:
        """Whether the process that left a row half-done still runs: by its lease, else (older rows) by PID."""
        if not owner:
            return _alive(pid)
        if _LEASES.get(self.home.resolve(), ("", 0))[0] == owner:
            return True
        lock = self.home / ".gallery-writers" / f"{owner}.lock"
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

    def integrity(self) -> list[str]:
        """SQLite's own check of every page and index: empty when the file is sound."""
        with self.connect() as con:
            found = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
        return [] if found == ["ok"] else found
