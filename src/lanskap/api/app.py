"""The FastAPI app behind ``lanskap serve``: A1111's ``/sdapi/v1``, lanskap's ``/api/v1``, health and metrics.

The routes live in router modules (``a1111_generate``, ``a1111_listing``, ``native``,
``operations``) and get the Service through a dependency (:mod:`lanskap.api.deps`); this module
only assembles them, maps errors to status codes, and wraps the app in the guard and the access
log. Every route is a thin mapping onto :class:`lanskap.service.Service`: the same checks, queue,
engine and gallery as the web app. Long jobs are waited for off the event loop, so one slow
generation never blocks ``/progress`` or ``/health``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from lanskap import __version__
from lanskap.api import a1111_controlnet, a1111_extras, a1111_generate, a1111_listing, native, operations
from lanskap.api.a1111_options import A1111Options
from lanskap.api.deps import ServerState
from lanskap.api.observability import AccessMiddleware, Metrics, setup_access_log
from lanskap.api.schema import install_openapi
from lanskap.api.security import GuardMiddleware, ServeConfig
from lanskap.errors import LanskapError, QueueFullError, SettingError
from lanskap.service.service import Service


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's own handler echoes the input, which fails on NaN and repeats huge bodies: where and why only.
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()[:20]
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _user_error(request: Request, exc: LanskapError) -> JSONResponse:
    if isinstance(exc, QueueFullError):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})
    if isinstance(exc, SettingError) and exc.settings:  # which settings to change, as lanskap names them
        return JSONResponse({"detail": str(exc), "settings": list(exc.settings)}, status_code=422)
    return JSONResponse({"detail": str(exc)}, status_code=422)


def create_app(service: Service, cfg: ServeConfig) -> ASGIApp:
    """The ASGI app: FastAPI routes wrapped in the guard (auth, size, rate) and the access log."""
    setup_access_log()
    metrics = Metrics(lambda: operations.queue_depth(service))
    api = FastAPI(
        title="lanskap",
        version=__version__,
        description="Fantasy-landscape concept art with SD 2.1 + LoRA. A1111-compatible under /sdapi/v1.",
    )
    api.state.lanskap = ServerState(service, A1111Options(service), cfg, metrics)
    api.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    api.add_exception_handler(LanskapError, _user_error)  # type: ignore[arg-type]
    for module in (a1111_generate, a1111_extras, a1111_listing, a1111_controlnet, native, operations):
        api.include_router(module.router)
    install_openapi(api, cfg)
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        api.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["*"], allow_headers=["*"])
    app = GuardMiddleware(api, cfg)
    return AccessMiddleware(app, metrics)
