"""The HTTP API's safety rules: who may call it, how big and how often.

Written as plain ASGI middleware and a small token bucket because the usual
packages either buffer the whole body before checking its size (so a huge
upload is read anyway) or bring a cache server for rate limits; one process
with one GPU needs neither.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lanskap.auth import MIN_SECRET_CHARS, FailedLogins, UserStore
from lanskap.errors import LanskapError, SettingError
from lanskap.netaddr import is_ip_literal, is_loopback, split_host_port

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Send


log = logging.getLogger("lanskap.access")

#: Paths anyone may call: liveness for load balancers and process managers.
OPEN_PATHS = ("/health",)


@dataclass
class ServeConfig:
    """How ``lanskap serve`` exposes the Service; every limit has a safe default."""

    host: str = "127.0.0.1"
    port: int = 7861
    api_keys: list[str] = field(default_factory=list)
    basic_auth: list[tuple[str, str]] = field(default_factory=list)  # A1111's --api-auth user:pass,...
    max_body_mb: float = 32.0
    rate_per_minute: int = 120  # per client, every route but /health and /metrics
    rate_burst: int = 30
    cors_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # Host header values beyond the bound address; "*": any
    max_queue: int = 8
    max_prompt_chars: int = 8000
    max_images: int = 16  # per request: batch_size x n_iter
    max_side: int = 2048
    max_panorama_side: int = 8192  # a panorama's memory is bounded by its window batch, not its size
    max_input_pixels: int = 8192 * 8192  # largest picture a request may send (checked before decoding)
    max_steps: int = 150
    users: UserStore | None = None  # the logins file shared with the web app (lanskap users ...)
    _latched: bool = field(default=False, init=False, repr=False)

    @property
    def auth_enabled(self) -> bool:
        """Whether callers must log in. Once stored logins exist it stays on, even if they are all removed,
        so removing the last user never opens the server."""
        if not self._latched and (self.api_keys or self.basic_auth or (self.users is not None and self.users)):
            self._latched = True
        return self._latched

    def check(self) -> ServeConfig:
        if not is_loopback(self.host) and not self.auth_enabled:
            raise LanskapError(
                f"refusing to listen on {self.host} without authentication: anyone who can reach it could use "
                "your GPU; add a login with 'lanskap users add NAME' (or --api-key / --api-auth), "
                "or keep the default 127.0.0.1"
            )
        if not 1 <= self.port <= 65535:
            raise SettingError(f"port must be between 1 and 65535, got {self.port}", "port")
        if self.max_body_mb <= 0 or self.rate_per_minute < 1 or self.rate_burst < 1 or self.max_queue < 1:
            raise SettingError(
                "the body size, rate limit, burst and queue length must be positive",
                "max_body_mb",
                "rate_limit",
                "rate_burst",
                "max_queue",
            )
        for key in self.api_keys:
            if len(key) < MIN_SECRET_CHARS:  # the one strength rule, shared with the logins file
                raise LanskapError(f"an API key must be at least {MIN_SECRET_CHARS} characters long")
        if not is_loopback(self.host):
            for user, password in self.basic_auth:
                if len(password) < MIN_SECRET_CHARS:
                    raise LanskapError(
                        f"the password of {user!r} must be at least {MIN_SECRET_CHARS} characters long "
                        f"to listen on {self.host}"
                    )
        return self


def parse_basic_auth(text: str) -> list[tuple[str, str]]:
    """A1111's ``--api-auth`` format: ``user:password[,user2:password2]``."""
    pairs = []
    for item in text.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise SettingError("API logins must look like user:password[,user2:password2]", "api_auth")
        pairs.append((user, password))
    return pairs


def _eq(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def authenticate(headers: dict[str, str], cfg: ServeConfig) -> str | None:
    """The caller's identity if its credentials match, else None. Every candidate is compared (constant time).

    Checking a stored password runs argon2 (a tenth of a second on purpose): call this off the event loop.
    """
    who = None
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    key = headers.get("x-api-key", "") or (value.strip() if scheme.lower() == "bearer" else "")
    if key:
        for i, candidate in enumerate(cfg.api_keys):
            if _eq(key, candidate) and who is None:
                who = f"key{i + 1}"
        if who is None and cfg.users is not None:
            name = cfg.users.check_key(key)
            who = f"key:{name}" if name else None
    if scheme.lower() == "basic" and who is None:
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return who
        for name, secret in cfg.basic_auth:
            ok_user, ok_pass = _eq(user, name), _eq(password, secret)
            if ok_user and ok_pass and who is None:
                who = name
        if who is None and cfg.users is not None:
            who = cfg.users.check_password(user, password)
    return who


#: Methods that change state: a foreign Origin may not send them.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_allowed(host_header: str | None, cfg: ServeConfig) -> bool:
    """Whether a request's ``Host`` names this server, which defeats DNS rebinding.

    A rebinding page reaches 127.0.0.1 under its own DNS name, so its requests carry that name.
    Loopback names and addresses are always this server; an IP literal is too when it listens on
    every address (no DNS name is involved, so nothing can be rebound); other names only when
    listed with ``--allowed-host`` (a reverse proxy's public name, say).
    """
    if not host_header:
        return True  # HTTP/1.0 without Host: no browser sends that
    if "*" in cfg.allowed_hosts:
        return True
    name = split_host_port(host_header)[0].lower()
    if name in (h.lower() for h in cfg.allowed_hosts):
        return True
    if name == "localhost" or name.endswith(".localhost") or (is_ip_literal(name) and is_loopback(name)):
        return True
    if cfg.host in ("0.0.0.0", "::"):
        return is_ip_literal(name)
    return name == cfg.host.lower()


def origin_allowed(origin: str | None, host_header: str | None, cfg: ServeConfig) -> bool:
    """Whether a state-changing request may come from ``origin``: its own page, or a ``--cors-origin``."""
    if origin is None:
        return True  # not a browser's cross-origin request (curl, A1111 clients, scripts)
    if origin in cfg.cors_origins or "*" in cfg.cors_origins:
        return True
    scheme, sep, rest = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and host_header is not None and rest == host_header


def json_body_allowed(method: str, headers: dict[str, str]) -> bool:
    """POST/PUT/PATCH bodies must be JSON: a form or text/plain post is how a page skips the CORS preflight."""
    if method not in UNSAFE_METHODS:
        return True
    ctype = headers.get("content-type")
    if ctype is None:
        length = headers.get("content-length", "0")
        return length in ("", "0") and "transfer-encoding" not in headers
    media = ctype.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def is_preflight(method: str, headers: dict[str, str], cfg: ServeConfig) -> bool:
    """A CORS preflight from a configured origin: answered before authentication (browsers send no credentials)."""
    return (
        method == "OPTIONS"
        and "access-control-request-method" in headers
        and (headers.get("origin") in cfg.cors_origins or "*" in cfg.cors_origins)
    )


class TokenBucket:
    """Per-client request budget: ``rate`` per minute, bursts up to ``burst``."""

    def __init__(self, rate_per_minute: int, burst: int, max_clients: int = 10_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._state[client] = (tokens - 1, now)
                wait = 0.0
            else:
                self._state[client] = (tokens, now)
                wait = (1 - tokens) / self.rate
            if len(self._state) > self.max_clients:  # forget the quietest clients
                for k in sorted(self._state, key=lambda k: self._state[k][1])[: self.max_clients // 10]:
                    del self._state[k]
            return wait


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    import json

    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """Host and origin checks, body size limit, authentication and rate limiting, before any route runs."""

    def __init__(self, app: ASGIApp, cfg: ServeConfig) -> None:
        self.app = app
        self.cfg = cfg
        self.max_body = int(cfg.max_body_mb * 2**20)
        self.bucket = TokenBucket(cfg.rate_per_minute, cfg.rate_burst)
        self.logins = FailedLogins()

    def _refusal(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """Requests a web page could forge against this server: a foreign Host, Origin or body type."""
        host = headers.get("host")
        if not host_allowed(host, self.cfg):
            return 421, f"host {host!r} is not this server; start it with --allowed-host to accept that name"
        if method in UNSAFE_METHODS and not origin_allowed(headers.get("origin"), host, self.cfg):
            return 403, f"cross-origin request from {headers.get('origin')!r} refused"
        if not json_body_allowed(method, headers):
            return 415, "the request body must be JSON (Content-Type: application/json)"
        return None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(method, headers)
        if refusal is not None:
            await _send_json(send, refusal[0], {"detail": refusal[1]}, [])
            return
        if path in OPEN_PATHS or is_preflight(method, headers, self.cfg):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        if self.cfg.auth_enabled:
            wait = self.logins.wait(client)
            if wait > 0:
                retry = str(max(1, int(wait + 0.999))).encode()
                await _send_json(
                    send, 429, {"detail": "too many failed logins; wait and try again"}, [(b"retry-after", retry)]
                )
                return
            who = await asyncio.to_thread(authenticate, headers, self.cfg)
            if who is None:
                if "authorization" in headers or "x-api-key" in headers:  # a wrong credential, not a missing one
                    failures = self.logins.failed(client)
                    log.warning("failed login from %s (%d in a row) for %s", client, failures, path)
                basic = self.cfg.basic_auth or self.cfg.users is not None
                challenge = [(b"www-authenticate", b'Basic realm="lanskap"')] if basic else []
                await _send_json(send, 401, {"detail": "authentication required"}, challenge)
                return
            self.logins.succeeded(client)
            scope.setdefault("state", {})["user"] = who
        if path != "/metrics":
            wait = self.bucket.take(scope.get("state", {}).get("user") or client)
            if wait > 0:
                retry = str(max(1, int(wait + 0.999))).encode()
                await _send_json(send, 429, {"detail": "too many requests; slow down"}, [(b"retry-after", retry)])
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_json(send, 413, {"detail": f"request body over {self.cfg.max_body_mb:g} MB"}, [])
            return
        seen, too_large, replaced = 0, False, False

        async def limited_receive() -> dict[str, Any]:
            # A chunked body has no Content-Length: count it, and hang up once it passes the limit.
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal replaced
            if too_large:  # whatever the app answers to a cut-off body, the client gets a 413
                if not replaced:
                    replaced = True
                    await _send_json(send, 413, {"detail": f"request body over {self.cfg.max_body_mb:g} MB"}, [])
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
            if not replaced:
                await _send_json(send, 413, {"detail": f"request body over {self.cfg.max_body_mb:g} MB"}, [])
