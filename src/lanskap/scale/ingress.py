"""The ingress deployment: the unchanged FastAPI app (routes, auth, limits, metrics, logs) around a
:class:`~lanskap.scale.remote.ScaledService`, built inside its Ray Serve replica."""

from __future__ import annotations

from dataclasses import replace

from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp

from lanskap.api.security import ServeConfig
from lanskap.config import Settings
from lanskap.scale.remote import ScaledService


class Ingress:
    """One replica of it serves HTTP; the jobs it hands out run on the generation replicas."""

    def __init__(self, settings: Settings, cfg: ServeConfig, replicas: DeploymentHandle, board: ActorHandle) -> None:
        from lanskap.api.app import create_app
        from lanskap.auth import store_at

        # The logins file is read here, in the ingress's own process (it holds locks, so it isn't shipped).
        cfg = replace(cfg, users=store_at(settings.home))
        self.service = ScaledService(settings, handle=replicas, board=board, max_pending=cfg.max_queue)
        self._asgi = create_app(self.service, cfg)

    def __serve_build_asgi_app__(self) -> ASGIApp:
        return self._asgi
