"""What operators watch: Prometheus metrics and one JSON access-log line per request."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Receive, Send


access_log = logging.getLogger("lanskap.access")


class Metrics:
    """One registry per app, so several apps (tests) in one process don't collide."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lanskap_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.errors = Counter("lanskap_errors_total", "Failed requests and jobs", ["kind"], registry=self.registry)
        self.generation = Histogram(
            "lanskap_generation_seconds",
            "Time from queueing to finished images",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.queue = Gauge("lanskap_queue_depth", "Jobs waiting plus running", registry=self.registry)
        self.queue.set_function(queue_depth)


def setup_access_log() -> None:
    """JSON lines on stderr, unless the host application configured the logger already."""
    if access_log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


class AccessMiddleware:
    """Counts every request by route template and status, and logs it as one JSON line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        size = 0
        recorded = False

        def record() -> None:
            # Recorded just before the last body chunk goes out, not after: a client that has
            # its answer can then already see the request in /metrics and in the access log.
            nonlocal recorded
            if recorded:
                return
            recorded = True
            route = scope.get("route")
            template = getattr(route, "path", None) or ("unmatched" if status == 404 else scope.get("path", ""))
            self.metrics.requests.labels(template, scope.get("method", ""), str(status)).inc()
            if status >= 500:
                self.metrics.errors.labels("http_5xx").inc()
            client = scope.get("client") or ("?", 0)
            access_log.info(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "client": client[0],
                        "user": scope.get("state", {}).get("user"),
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "route": template,
                        "status": status,
                        "bytes": size,
                        "ms": round((time.perf_counter() - start) * 1000, 1),
                    }
                )
            )

        async def watch(message: dict[str, Any]) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    record()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            record()
