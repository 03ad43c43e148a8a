"""The logins the API and the web app share: users with passwords, and named API keys, in one file.

``$LANSKAP_HOME/users.json`` (mode 0600) holds no secret in the clear:
- passwords as argon2id hashes (argon2-cffi: salted, memory-hard, the parameters stored in the hash);
- API keys as SHA-256 digests. A key is 32 random bytes made by lanskap, so a fast hash is as safe as
  a slow one (nothing to guess), and every API call can check it without an argon2 run.

The file is re-read whenever it changes on disk, so ``lanskap users add/remove`` takes effect in a
running server or web app at its next request: a removed login stops working at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from lanskap.errors import LanskapError
from lanskap.io import atomic_write_bytes
from lanskap.names import check_name

FORMAT = "lanskap-users/1"
#: The strength rule for every secret a server accepts: stored passwords, --api-auth on a public
#: bind, and --api-key (a 16-character random string is out of reach of online guessing).
MIN_SECRET_CHARS = 16
KEY_PREFIX = "lk_"
#: How long a checked password is remembered (as a digest, in memory), so a client that sends
#: Basic credentials with every call pays for one argon2 check, not one per call.
VERIFIED_TTL_S = 300.0


@dataclass(frozen=True)
class Login:
    """One entry of the file, as ``lanskap users list`` shows it (never the hash)."""

    name: str
    kind: str  # "user" or "key"
    created: str
    hint: str = ""  # a key's first characters, to tell keys apart


def check_secret(secret: str, what: str = "password") -> str:
    if len(secret) < MIN_SECRET_CHARS:
        raise LanskapError(f"a {what} must be at least {MIN_SECRET_CHARS} characters long")
    return secret


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class UserStore:
    """Reads, checks and edits the logins file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._hasher = PasswordHasher()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, dict[str, dict[str, str]]] = {"users": {}, "keys": {}}
        self._verified: dict[str, tuple[str, float]] = {}
        self._decoy_hash: str | None = None
        # Each argon2 check takes 64 MiB for a tenth of a second; two at a time keeps a flood of
        # wrong passwords from taking the server's memory (the API also throttles each client).
        self._slots = threading.BoundedSemaphore(2)

    # reading -------------------------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, dict[str, str]]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"users": {}, "keys": {}}
        except OSError as exc:
            raise LanskapError(f"can't read the logins file {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ValueError
            users, keys = data["users"], data["keys"]
            if not isinstance(users, dict) or not isinstance(keys, dict):
                raise ValueError
        except (ValueError, KeyError, AttributeError, TypeError):
            raise LanskapError(
                f"the logins file {self.path} is damaged; move it away and add the users again (lanskap users add NAME)"
            ) from None
        return {"users": users, "keys": keys}

    def _fresh(self) -> dict[str, dict[str, dict[str, str]]]:
        """The file's content, re-read only when its size or modification time changed."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._data = self._read()
                self._stamp = stamp
                self._verified.clear()  # a removed or changed login must stop working now
            return self._data

    def logins(self) -> list[Login]:
        data = self._fresh()
        users = [Login(n, "user", e.get("created", "")) for n, e in sorted(data["users"].items())]
        keys = [Login(n, "key", e.get("created", ""), e.get("hint", "")) for n, e in sorted(data["keys"].items())]
        return users + keys

    def __bool__(self) -> bool:
        data = self._fresh()
        return bool(data["users"] or data["keys"])

    # checking ------------------------------------------------------------------------------------

    def check_password(self, name: str, password: str) -> str | None:
        """``name`` if the password is right, else None (an unknown name costs the same argon2 run)."""
        data = self._fresh()
        token = _digest(f"{name}\0{password}")
        with self._lock:
            hit = self._verified.get(token)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        entry = data["users"].get(name)
        stored = entry.get("password", "") if isinstance(entry, dict) else ""
        try:
            with self._slots:
                self._hasher.verify(stored or self._decoy(), password)
        except (VerificationError, InvalidHashError):
            return None
        if not stored:
            return None
        with self._lock:
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified[token] = (name, time.monotonic() + VERIFIED_TTL_S)
        return name

    def _decoy(self) -> str:
        if self._decoy_hash is None:
            self._decoy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._decoy_hash

    def check_key(self, key: str) -> str | None:
        """The key's name if it is one of the stored keys, else None (every key is compared)."""
        digest = _digest(key)
        found = None
        for name, entry in self._fresh()["keys"].items():
            if hmac.compare_digest(digest, entry.get("sha256", "")) and found is None:
                found = name
        return found

    # editing -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, dict[str, dict[str, str]]]]:
        """Read, change and write back under a file lock, so two ``users`` commands never lose an edit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            body = {"format": FORMAT, "users": data["users"], "keys": data["keys"]}
            atomic_write_bytes(self.path, (json.dumps(body, indent=2) + "\n").encode(), mode=0o600)
        with self._lock:
            self._stamp = None

    @staticmethod
    def _now() -> str:
        return datetime.now(UTC).replace(microsecond=0).isoformat()

    def add_user(self, name: str, password: str, *, replace: bool = False) -> None:
        check_name(name, "user name")
        check_secret(password)
        hashed = self._hasher.hash(password)
        with self._editing() as data:
            if name in data["users"] and not replace:
                raise LanskapError(f"user {name!r} exists; set a new password with --replace")
            data["users"][name] = {"password": hashed, "created": self._now()}

    def add_key(self, name: str) -> str:
        """Make, store and return a new API key; only its digest is kept, so it is shown once."""
        check_name(name, "key name")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._editing() as data:
            if name in data["keys"]:
                raise LanskapError(f"a key named {name!r} exists; remove it first")
            data["keys"][name] = {"sha256": _digest(key), "created": self._now(), "hint": key[:7] + "…"}
        return key

    def remove(self, name: str) -> str:
        """Remove the user or key called ``name``; returns which it was."""
        with self._editing() as data:
            for kind in ("users", "keys"):
                if name in data[kind]:
                    del data[kind][name]
                    return kind[:-1]
        raise LanskapError(f"no user or key named {name!r}")


def store_at(home: Path) -> UserStore:
    return UserStore(Path(home) / "users.json")


__all__ = ["MIN_SECRET_CHARS", "Login", "UserStore", "check_secret", "store_at"]
