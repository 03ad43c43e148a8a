"""The FastAPI app behind ``lanskap serve``: A1111's ``/sdapi/v1``, lanskap's ``/api/v1``, health and metrics.

Every route is a thin mapping onto :class:`lanskap.service.Service`: the same
checks, queue, engine and gallery as the web app. Long jobs are waited for off
the event loop, so one slow generation never blocks ``/progress`` or ``/health``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from lanskap import __version__
from lanskap.api.a1111_options import A1111Options
from lanskap.api.observability import AccessMiddleware, Metrics, setup_access_log
from lanskap.api.security import GuardMiddleware, ServeConfig
from lanskap.errors import LanskapError, QueueFullError


def _queue_depth(service: Any) -> float:
    return len(service.queue.pending()) + (1 if service.queue.current is not None else 0)


def create_app(service: Any, cfg: ServeConfig) -> Any:
    """The ASGI app: FastAPI routes wrapped in the guard (auth, size, rate) and the access log."""
    setup_access_log()
    metrics = Metrics(lambda: _queue_depth(service))
    api = FastAPI(
        title="lanskap",
        version=__version__,
        description="Fantasy-landscape concept art with SD 2.1 + LoRA. A1111-compatible under /sdapi/v1.",
    )
    options = A1111Options(service)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which fails on NaN and repeats huge bodies: where and why only.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @api.exception_handler(LanskapError)
    async def _user_error(request: Request, exc: LanskapError) -> JSONResponse:
        if isinstance(exc, QueueFullError):
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"detail": str(exc)}, status_code=422)

    # -- A1111 -------------------------------------------------------------------------------------
    from lanskap.api import a1111_generate, a1111_listing

    a1111_generate.register(api, service, options, cfg, metrics)
    a1111_listing.register(api, service, options, cfg)

    # -- lanskap's own API ---------------------------------------------------------------------------
    from lanskap.api.native import register

    register(api, service, cfg)

    # -- operations --------------------------------------------------------------------------------
    @api.api_route("/health", methods=["GET", "HEAD"], tags=["operations"])
    async def health() -> dict[str, Any]:
        info = service.engine.info()
        return {
            "status": "ok",
            "version": __version__,
            "model": info.model,
            "model_loaded": info.loaded,
            "device": info.device,
            "queue_depth": _queue_depth(service),
        }

    @api.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        api.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["*"], allow_headers=["*"])
    app = GuardMiddleware(api, cfg)
    return AccessMiddleware(app, metrics)
