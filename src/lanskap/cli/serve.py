"""``lanskap serve``: the HTTP API (A1111-compatible) under uvicorn, on 127.0.0.1 unless authenticated."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from lanskap.cli.options import (
    SERVER_DEVICE,
    SERVER_DTYPE,
    SERVER_FALLBACK,
    SERVER_LORA_DIR,
    SERVER_MODEL,
    SERVER_VAE,
)
from lanskap.errors import LanskapError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; another than loopback needs auth."),
    port: int = typer.Option(7861, "--port", help="Port (A1111's API default is 7861)."),
    model: str = SERVER_MODEL,
    device: str = SERVER_DEVICE,
    dtype: str = SERVER_DTYPE,
    lora_dir: list[Path] = SERVER_LORA_DIR,
    fallback: str = SERVER_FALLBACK,
    vae: str = SERVER_VAE,
    api_key: list[str] = typer.Option(
        None, "--api-key", metavar="<str>", help="Accept this key (Bearer or X-API-Key); repeatable."
    ),
    api_auth: str = typer.Option(None, "--api-auth", help="HTTP Basic users, A1111 style: user:pass[,user2:pass2]."),
    max_body_mb: float = typer.Option(32.0, "--max-body-mb", help="Largest request body."),
    rate_limit: int = typer.Option(120, "--rate-limit", help="Requests per minute per client."),
    rate_burst: int = typer.Option(30, "--rate-burst", help="Requests a client may make at once."),
    max_queue: int = typer.Option(8, "--max-queue", help="Jobs that may wait; more get 503 + Retry-After."),
    cors_origin: list[str] = typer.Option(
        None, "--cors-origin", metavar="<str>", help="Allow browser calls from this origin."
    ),
    allowed_host: list[str] = typer.Option(
        None,
        "--allowed-host",
        metavar="<str>",
        help="Also answer requests for this host name (a proxy's); repeatable, * for any.",
    ),
    replicas: str = typer.Option(
        None,
        "--replicas",
        metavar="<N|auto>",
        help="Serve from N model replicas on Ray Serve (auto: one per GPU); unset: one process, no Ray.",
    ),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        metavar="<address>",
        help="Join this Ray cluster (ray start --head); implies --replicas auto.",
    ),
) -> None:
    """Serve the HTTP API: /sdapi/v1 (A1111 clients), /api/v1 (gallery, jobs), /docs, /health, /metrics."""
    from lanskap.api.security import ServeConfig, parse_basic_auth
    from lanskap.auth import store_at
    from lanskap.config import load_settings

    # A server never loads pickles, whatever the config file or environment says.
    settings = load_settings(
        model=model,
        device=device,
        dtype=dtype,
        fallback=fallback,
        lora_dirs=lora_dir or None,
        allow_pickle=False,
        vae=vae,
    )
    keys = list(api_key or [])
    if os.environ.get("LANSKAP_API_KEY"):
        keys.append(os.environ["LANSKAP_API_KEY"])
    cfg = ServeConfig(
        host=host,
        port=port,
        api_keys=keys,
        basic_auth=parse_basic_auth(api_auth) if api_auth else [],
        max_body_mb=max_body_mb,
        rate_per_minute=rate_limit,
        rate_burst=rate_burst,
        cors_origins=list(cors_origin or []),
        allowed_hosts=list(allowed_host or []),
        max_queue=max_queue,
        users=store_at(settings.home),
    ).check()
    if replicas is not None or ray_address is not None:
        if ray_address:
            from lanskap.scale.tokens import use_token_if_present

            use_token_if_present()  # before Ray is imported: it reads the mode once
        try:
            from lanskap.scale.launch import serve_scaled
        except ImportError as exc:
            if "ray" not in str(exc).lower():
                raise
            raise LanskapError(
                "serving from replicas needs Ray Serve: scripts/setup.sh --scale (or pip install 'ray[serve]')"
            ) from None

        announce = lambda text: typer.secho(text, err=True)  # noqa: E731
        serve_scaled(settings, cfg, replicas or "auto", ray_address, announce=announce)
        return
    import uvicorn

    from lanskap.api.app import create_app
    from lanskap.service import Service

    service = Service(settings, max_pending=cfg.max_queue)
    service.submit_load()
    typer.secho(f"lanskap API on http://{host}:{port} (docs at /docs, model {settings.model})", err=True)
    uvicorn.run(create_app(service, cfg), host=host, port=port, log_level="warning", access_log=False)
    service.queue.shutdown()
