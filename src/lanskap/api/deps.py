"""What the routers get through FastAPI's dependencies: the Service, and the server around it.

:func:`lanskap.api.app.create_app` puts one :class:`ServerState` on ``app.state``; the router
modules name what they need by type (``ServiceDep``, ``StateDep``), so a route closes over
nothing and any app built around any Service serves the same routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request

from lanskap.api.a1111_options import A1111Options
from lanskap.api.observability import Metrics
from lanskap.api.security import ServeConfig
from lanskap.service.service import Service

#: How many user pictures are decoded at once, off the event loop.
DECODE_SLOTS = 2


@dataclass
class ServerState:
    """One server's Service, its A1111 options, its settings and its metrics."""

    service: Service
    options: A1111Options
    cfg: ServeConfig
    metrics: Metrics
    _decode: list[anyio.CapacityLimiter] = field(default_factory=list)

    def decode_slots(self) -> anyio.CapacityLimiter:
        """The pool that decodes user pictures (made on first use, inside the event loop)."""
        if not self._decode:
            self._decode.append(anyio.CapacityLimiter(DECODE_SLOTS))
        return self._decode[0]


def _state(request: Request) -> ServerState:
    return request.app.state.lanskap


def _service(request: Request) -> Service:
    return request.app.state.lanskap.service


StateDep = Annotated[ServerState, Depends(_state)]
ServiceDep = Annotated[Service, Depends(_service)]
