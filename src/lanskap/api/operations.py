"""Operations routes: ``/health`` for load balancers and ``/metrics`` for Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from lanskap import __version__
from lanskap.api.deps import StateDep
from lanskap.api.schema import COMMON
from lanskap.service.service import Service

router = APIRouter(tags=["operations"], responses={k: v for k, v in COMMON.items() if k != 422})


def queue_depth(service: Service) -> float:
    """Jobs waiting plus those running: the gauge Prometheus scrapes and ``/health`` reports."""
    return len(service.queue.pending()) + len(service.queue.running())


@router.get("/health")
async def health(state: StateDep) -> dict[str, Any]:
    info = state.service.engine.info()
    replicas = state.service.replicas()  # kept up to date in the background: no waiting here
    out = {
        "status": "ok",
        "version": __version__,
        "model": info.model,
        "model_loaded": info.loaded,
        "device": info.device,
        "queue_depth": queue_depth(state.service),
    }
    if replicas:  # a scaled server: its replicas stand for the model (details: /api/v1/replicas)
        out.update(replicas=len(replicas), model_loaded=True, device=replicas[0].get("device", info.device))
    return out


router.add_api_route("/health", health, methods=["HEAD"], operation_id="health_head")  # load balancers' probe


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def prometheus(state: StateDep) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
