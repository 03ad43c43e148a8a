"""What the OpenAPI schema says beyond the routes: every error a route can answer, and how to log in.

FastAPI answers 400 for a body it can't parse; the guard (``security.GuardMiddleware``) answers
401, 403, 413, 415, 421 and 429 before any route runs, and the error handlers in ``app.py``
answer 422 and 503. FastAPI can't see those, so each router lists them here, and clients
generated from the schema (and schemathesis) know them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from lanskap.api.security import OPEN_PATHS, ServeConfig


class Problem(BaseModel):
    """Every refusal: one sentence that says what is wrong."""

    detail: str


class ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    """A 422: the malformed fields (a list), or a refused value as one sentence with the settings it names."""

    detail: list[ValidationItem] | str
    settings: list[str] | None = None


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


#: Answers any route can give, whatever it does.
COMMON: dict[int | str, dict[str, Any]] = {
    400: _problem("The request body could not be parsed (not UTF-8 JSON)"),
    401: _problem("Authentication required: an API key (Bearer or X-API-Key) or a Basic login"),
    403: _problem("A state-changing request from a foreign Origin"),
    413: _problem("The request body is over the server's limit"),
    415: _problem("A request body that is not JSON"),
    421: _problem("The Host header does not name this server"),
    422: {"model": Invalid, "description": "A malformed request, or a value lanskap refuses"},
    429: _problem("Too many requests, or too many failed logins; see Retry-After"),
}
#: Answers of the routes that queue a job and wait for it.
JOBS: dict[int | str, dict[str, Any]] = {
    500: _problem("The job crashed (a bug: the server log has the details)"),
    503: _problem("The job queue is full; see Retry-After"),
}
#: Answers of routes that look something up by id.
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem("No such gallery image or job")}

SECURITY_SCHEMES = {
    "apiKeyBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from 'lanskap users key' or --api-key",
    },
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "A user from 'lanskap users add', or --api-auth (A1111's)",
    },
}


def install_openapi(api: FastAPI, cfg: ServeConfig) -> None:
    """Add the security schemes; every route needs one of them when auth is on, none otherwise."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            if cfg.auth_enabled:
                schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
                for path in OPEN_PATHS:
                    for operation in schema["paths"].get(path, {}).values():
                        operation["security"] = []
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
