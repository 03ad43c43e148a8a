"""``lanskap ui``: start the Streamlit web app on 127.0.0.1 (thin shell: settings go in the environment)."""

from __future__ import annotations

import os
import sys
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
from lanskap.netaddr import is_loopback


def served_names(host: str, extra: list[str]) -> list[str]:
    """The Host names a browser may use to reach the app: loopback, the bound address (every local
    address for a wildcard bind), and the names given."""
    names = ["localhost", "127.0.0.1", "::1", *extra]
    if host in ("0.0.0.0", "::", ""):
        import socket

        import psutil

        names.append(socket.gethostname())
        names += [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family.name in ("AF_INET", "AF_INET6")]  # fmt: skip
    elif not is_loopback(host):
        names.append(host.strip("[]"))
    return list(dict.fromkeys(names))


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)


def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; only this machine by default."),
    port: int = typer.Option(8501, "--port", help="Port to serve on."),
    model: str = SERVER_MODEL,
    device: str = SERVER_DEVICE,
    dtype: str = SERVER_DTYPE,
    lora_dir: list[Path] = SERVER_LORA_DIR,
    fallback: str = SERVER_FALLBACK,
    vae: str = SERVER_VAE,
    max_queue: int = typer.Option(8, "--max-queue", help="Jobs that may wait for the GPU before new ones are refused."),
    session_minutes: float = typer.Option(
        720, "--session-minutes", help="How long a login lasts before the app asks again [720]."
    ),
    no_preload: bool = typer.Option(False, "--no-preload", help="Load the model with the first job, not at start."),
    allowed_host: list[str] = typer.Option(
        None,
        "--allowed-host",
        metavar="<str>",
        help="Also answer browsers that reach the app under this name (a proxy's); repeatable, * for any.",
    ),
) -> None:
    """Start the web app: generate, gallery, training and evaluation pages.

    It asks for a login whenever 'lanskap users' holds one, and always on a non-loopback --host.
    """
    from lanskap.auth import store_at
    from lanskap.config import load_settings

    if not 1 <= port <= 65535:
        raise LanskapError(f"--port must be between 1 and 65535, got {port}")
    if max_queue < 1:
        raise LanskapError("--max-queue must be 1 or more")
    if session_minutes <= 0:
        raise LanskapError("--session-minutes must be more than 0")
    settings = load_settings(
        model=model, device=device, dtype=dtype, fallback=fallback, lora_dirs=lora_dir or None, vae=vae
    )
    logins = bool(store_at(settings.home))
    if not is_loopback(host) and not logins:
        raise LanskapError(
            f"refusing to serve the web app on {host} without a login: anyone who can reach it could use your "
            "GPU and delete your images; add one with 'lanskap users add NAME' (or keep the default 127.0.0.1)"
        )
    env = {
        **os.environ,
        "LANSKAP_HOME": str(settings.home),
        "LANSKAP_MODEL": settings.model,
        "LANSKAP_DEVICE": settings.device,
        "LANSKAP_DTYPE": settings.dtype,
        "LANSKAP_FALLBACK": settings.fallback,
        "LANSKAP_UI_MAX_QUEUE": str(max_queue),
        "LANSKAP_UI_PRELOAD": "0" if no_preload else "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LANSKAP_UI_LOGIN": "1" if logins or not is_loopback(host) else "0",
        "LANSKAP_UI_SESSION_MINUTES": str(session_minutes),
    }
    if settings.vae:
        env["LANSKAP_VAE"] = settings.vae
    if settings.lora_dirs:
        env["LANSKAP_LORA_DIRS"] = os.pathsep.join(str(p) for p in settings.lora_dirs)
    app = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.maxUploadSize",
        "64",
        "--browser.gatherUsageStats",
        "false",
        "--client.showErrorDetails",
        "none",
        "--client.toolbarMode",
        "viewer",
        # A light and a dark theme (not one [theme]): the app follows the system's choice, and
        # Streamlit's menu (Settings, "Choose app theme") switches between them.
        "--theme.light.primaryColor",
        "#2f6f5e",
        "--theme.dark.primaryColor",
        "#5fb39a",
        # The Host names the app answers to: a page that rebinds its own DNS name to this address
        # gets no websocket, so it can't drive the app (Streamlit checks Host only when given a list).
        *[arg for name in served_names(host, allowed_host or []) for arg in ("--server.allowedHosts", name)],
        # Streamlit runs a full gc.collect after every script run; the job panel reruns twice a second,
        # and those collections hold the GIL, starving the model thread (a tiny model's load took minutes).
        "--runner.postScriptGC",
        "false",
    ]
    typer.secho(f"lanskap web app on http://{host}:{port} (model {settings.model}); Ctrl-C stops it", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Become Streamlit rather than wait for it as a child: SIGTERM (kill, systemd, docker stop) and
    # Ctrl-C then reach the server itself, and no orphan is left serving the port.
    os.execve(sys.executable, cmd, env)
