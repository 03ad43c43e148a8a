"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries, started with ``initdb`` and
``pg_ctl`` in a temporary folder on a free port of 127.0.0.1, and stopped afterwards.

PostgreSQL refuses to run as root, so under root (CI's containers) the server runs as the
``postgres`` user the package creates. Where neither the binaries nor psycopg are there, the
tests that need it skip and say why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (scripts/setup.sh --dev installs it)"
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        return "PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL can't be started as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One PostgreSQL server; :meth:`database` makes a fresh empty database and returns its URL."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="lanskap-pg-"))
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"

    def _run(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self._as_root else list(args)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> Server:
        self._run(_binary("initdb") or "initdb", "-D", str(self.data), "-A", "trust", "-U", "lanskap", "--no-sync")
        opts = f"-p {self.port} -k {self.folder} -h 127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(_binary("pg_ctl") or "pg_ctl", "-D", str(self.data), "-o", opts, "-w", "-t", "60",
                  "-l", str(self.folder / "log"), "start")  # fmt: skip
        return self

    @property
    def url(self) -> str:
        return f"postgresql://lanskap@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return f"postgresql://lanskap@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(_binary("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running() -> Iterator[Server]:
    server = Server().start()
    try:
        yield server
    finally:
        server.stop()
