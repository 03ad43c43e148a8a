"""``lanskap serve --replicas N [--ray-address ADDRESS]``: start Ray (or join a cluster) and deploy the API.

Ray Serve's HTTP proxy listens on ``--host``/``--port`` (127.0.0.1:7861 unless told) and sends every
request to the ingress; the generation replicas take one job each (``max_ongoing_requests=1``), and
at most ``--max-queue`` more wait in Ray's queue (``max_queued_requests``, which also counts the
requests on their way to an idle replica, so it is ``--max-queue`` plus one per replica; beyond, 503).
Each replica asks Ray for one GPU where the cluster has them, else an equal share of the CPUs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray import serve

from lanskap.api.security import ServeConfig
from lanskap.config import Settings
from lanskap.errors import LanskapError
from lanskap.scale.board import Board
from lanskap.scale.ingress import Ingress
from lanskap.scale.replica import GenerationReplica

APP = "lanskap"
NAMESPACE = "lanskap"


@dataclass
class Plan:
    """How many replicas, and what each asks Ray for."""

    replicas: int
    gpus: int  # per replica: 1 on GPU machines, 0 here
    cpus: float
    threads: int | None  # torch threads per CPU replica

    def actor_options(self) -> dict[str, Any]:
        return {"num_gpus": self.gpus, "num_cpus": self.cpus}


def parse_replicas(text: str) -> int | None:
    """``N`` (1 or more) or ``auto`` (None: one per GPU), checked before Ray starts."""
    if text.strip().lower() == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        raise LanskapError(f"replicas must be a whole number or auto, not {text!r}") from None
    if count < 1:
        raise LanskapError(f"replicas must be 1 or more, not {count}")
    return count


def plan(replicas: str, resources: dict[str, float]) -> Plan:
    """``N`` or ``auto`` (one per GPU in the cluster) against what the cluster has."""
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    wanted = parse_replicas(replicas)
    count = wanted if wanted is not None else (gpus or 1)
    if gpus:
        if count > gpus:
            raise LanskapError(f"{count} replicas need {count} GPUs; the cluster has {gpus}")
        return Plan(count, 1, min(1.0, cpus / count), None)
    share = cpus / count
    return Plan(count, 0, share, max(1, int(share)))


def start_ray(address: str | None) -> None:
    """Join the cluster at ``address`` (started with ``ray start --head``), or start a local instance."""
    options: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise LanskapError(f"can't start or reach {where}: {' '.join(str(exc).split())[:300]}") from None


def deploy(settings: Settings, cfg: ServeConfig, replicas: str) -> Plan:
    """Deploy the board, the replicas and the ingress; returns the plan it followed."""
    machines = [n for n in ray.nodes() if n.get("Alive")]
    if len(machines) > 1 and not settings.gallery_url:
        raise LanskapError(
            f"replicas on {len(machines)} machines need a gallery they all reach: "
            "set the gallery URL (LANSKAP_GALLERY_URL=postgresql://…)"
        )
    chosen = plan(replicas, ray.cluster_resources())
    if chosen.threads is not None and settings.threads is None:
        settings = replace(settings, threads=chosen.threads)
    board = ray.remote(Board).options(name="lanskap-board", num_cpus=0, max_restarts=-1, get_if_exists=True).remote()
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    worker = serve.deployment(GenerationReplica).options(
        name="lanskap-replica",
        num_replicas=chosen.replicas,
        max_ongoing_requests=1,
        # Ray counts a request as queued until a replica takes it, also on its way to an idle one: a
        # burst of N at an idle server would be refused without the N slots for those in transit.
        max_queued_requests=cfg.max_queue + chosen.replicas,
        ray_actor_options=chosen.actor_options(),
        health_check_period_s=2,
        graceful_shutdown_timeout_s=5,
    )
    ingress = serve.deployment(serve.ingress()(Ingress)).options(
        name="lanskap-api", num_replicas=1, max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0}
    )
    shipped = replace(cfg, users=None)  # the ingress reads the logins file itself
    app = ingress.bind(settings, shipped, worker.bind(settings, board), board)
    try:
        serve.run(app, name=APP, route_prefix="/")
    except RuntimeError as exc:  # a replica that can't start (no model, no home folder): say why
        raise LanskapError(f"the replicas could not start: {_why_not_started(str(exc))}") from None
    return chosen


def _why_not_started(fallback: str) -> str:
    """The replicas' own one-line error (a LanskapError in their constructor), from Ray Serve's status."""
    try:
        deployments = serve.status().applications[APP].deployments.values()
        messages = "\n".join(d.message for d in deployments if d.message)
    except Exception:
        messages = ""
    found = [line.split("Error: ", 1)[1].strip() for line in messages.splitlines() if "Error: " in line]
    return (found[-1] if found else " ".join(fallback.split()))[:400]


def serve_scaled(settings: Settings, cfg: ServeConfig, replicas: str, address: str | None,
                 announce: Callable[[str], None] = print) -> None:  # fmt: skip
    """Run until Ctrl-C or SIGTERM, then take the app and (a local) Ray down."""
    parse_replicas(replicas)  # a wrong count is a one-line error before Ray starts
    if settings.fallback == "none":  # a model that isn't there, too (a hub id is fetched by the replicas)
        from lanskap.models.resolve import resolve_model_ref

        resolve_model_ref(settings.model, settings)
    start_ray(address)
    try:
        chosen = deploy(settings, cfg, replicas)
        where = "GPU" if chosen.gpus else f"{chosen.cpus:g} CPU"
        announce(f"lanskap API on http://{cfg.host}:{cfg.port} with {chosen.replicas} replica(s), one {where} each "
                 f"(Ray Serve; model {settings.model})")  # fmt: skip
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
