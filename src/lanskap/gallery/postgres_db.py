"""The gallery in PostgreSQL (psycopg 3), for galleries that several machines write to.

The same journal as the embedded database (a row ``pending`` before its file, ``deleting``
before the file goes), with two differences that many machines need: a writer's lease is a
PostgreSQL advisory lock held by a connection that lives as long as the process (the server
lets it go when the process or its machine dies, so any machine can tell a dead writer), and
schema changes run under a transaction-level advisory lock, so writers starting together
never race to create the table.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from lanskap.errors import LanskapError
from lanskap.gallery.schema import statements

if TYPE_CHECKING:
    import psycopg

SCHEMA_LOCK = 0x4C414E534B4150  # "LANSKAP": one key for every lanskap schema change
SCHEMES = ("postgresql", "postgres")

_LEASES: dict[str, tuple[str, psycopg.Connection]] = {}  # url -> (lease name, the connection holding it)
_LEASE_LOCK = threading.Lock()


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme in SCHEMES


def redacted(url: str) -> str:
    """The URL without its password, for messages and listings."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _key(lease: str) -> int:
    """An advisory-lock key (a signed 64-bit number) from a lease's name."""
    return int(lease[:15], 16)


class _Row(tuple):
    """A row readable by column name and by position, as ``sqlite3.Row`` is."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


def _row_factory(cursor: Any) -> Any:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}
    kind = type("Row", (_Row,), {"names": names})
    return lambda values: kind(values)


def _clean(value: Any) -> Any:
    """PostgreSQL text can't hold NUL characters; a prompt that has them keeps a visible mark instead."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class _Connection:
    """psycopg's connection with SQLite's ``?`` placeholders, so the store writes its SQL once; a lost
    server is a one-line error (a name another writer took still raises UniqueViolation)."""

    def __init__(self, con: psycopg.Connection, label: str) -> None:
        self._con, self._label = con, label

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        import psycopg

        try:
            return self._con.execute(sql.replace("?", "%s"), [_clean(a) for a in args])
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise LanskapError(f"the gallery database {self._label} failed: {reason}") from None


class PostgresDatabase:
    """A gallery in the PostgreSQL database at ``url`` (``postgresql://user:pass@host:port/db``)."""

    like = "ILIKE"  # SQLite's LIKE is case-blind; searches should find the same rows on both
    lora_names_sql = "SELECT DISTINCT e->>'name' FROM images, json_array_elements(images.loras::json) AS e "
    lora_filter_sql = "EXISTS (SELECT 1 FROM json_array_elements(images.loras::json) AS e WHERE e->>'name' = ?)"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise LanskapError("a PostgreSQL gallery needs psycopg 3: pip install 'psycopg[binary]'") from None
        self.url = url
        self.label = redacted(url)
        self.IntegrityError: tuple[type[Exception], ...] = (psycopg.errors.UniqueViolation,)

    def _open(self) -> psycopg.Connection:
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10, row_factory=_row_factory)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise LanskapError(f"the gallery database {self.label} can't be reached: {reason}") from None

    def prepare(self) -> None:
        """Create the table once, under a lock, however many writers start together."""
        with self.transaction() as con:
            con.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            for statement in statements(postgres=True):
                con.execute(statement)

    @contextlib.contextmanager
    def connect(self) -> Iterator[_Connection]:
        """One short autocommit connection."""
        con = self._open()
        try:
            yield _Connection(con, self.label)
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Connection]:
        """All or nothing: the statements inside commit together, or none does."""
        con = self._open()
        try:
            with con.transaction():
                yield _Connection(con, self.label)
        finally:
            con.close()

    def after_explicit_ids(self, con: _Connection) -> None:
        """Rows inserted with their own ids: the id sequence continues after the largest."""
        con.execute("SELECT setval(pg_get_serial_sequence('images', 'id'), (SELECT COALESCE(MAX(id), 1) FROM images))")

    def lease(self) -> str:
        """This process's writer lease: an advisory lock its own connection holds until the process ends."""
        with _LEASE_LOCK:
            held = _LEASES.get(self.url)
            if held is not None and not _holds(held[1]):
                held = None  # the server dropped it (a restart): take a new lease
            if held is None:
                name = uuid.uuid4().hex
                con = self._open()
                con.execute("SELECT pg_advisory_lock(%s)", [_key(name)])
                _LEASES[self.url] = held = (name, con)
            return held[0]

    def writer_alive(self, owner: str | None, pid: int) -> bool:
        """Whether a row's writer still holds its lease, on whichever machine it runs."""
        if not owner:
            return False  # every PostgreSQL row names its lease; one without is nobody's
        held = _LEASES.get(self.url)
        if held is not None and held[0] == owner and not held[1].closed:
            return True
        with self.connect() as con:
            got = con.execute("SELECT pg_try_advisory_lock(?)", [_key(owner)]).fetchone()[0]
            if got:
                con.execute("SELECT pg_advisory_unlock(?)", [_key(owner)])
        return not got

    def integrity(self) -> list[str]:
        """PostgreSQL checks its own pages; a reachable database with the table is sound to lanskap."""
        with self.connect() as con:
            con.execute("SELECT 1 FROM images LIMIT 1")
        return []


def _holds(con: psycopg.Connection) -> bool:
    """Whether a lease's connection (and so its advisory lock) is still there: one round trip."""
    import psycopg

    if con.closed:
        return False
    try:
        con.execute("SELECT 1")
    except psycopg.Error:
        with contextlib.suppress(Exception):
            con.close()
        return False
    return True
