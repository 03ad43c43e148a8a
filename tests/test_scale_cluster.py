"""``lanskap serve --ray-address`` joins a cluster that Ray's own ``ray start`` made (issue #38).

Two Ray nodes on this machine stand for two machines: a head (``ray start --head``, one CPU) and a
second node that joins it (``ray start --address``, one CPU), both with Ray's token authentication.
Without a shared gallery the server refuses, in one line; with one in PostgreSQL it places a
replica on each node and answers. Carries the ``scale`` mark: it runs after tests/test_scale.py's
server is gone (``ray stop`` ends every Ray process of the machine).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import REPO, stop_gently

pytest.importorskip("ray", reason="Ray is not installed (scripts/setup.sh --dev installs ray[serve])")
RAY = str(Path(sys.executable).with_name("ray"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster() -> Iterator[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = f"127.0.0.1:{_port()}"
    try:
        for cmd in (
            [RAY, "start", "--head", "--port", head.split(":")[1], "--num-cpus", "1", "--include-dashboard=false"],
            [RAY, "start", "--address", head, "--num-cpus", "1"],
        ):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield head
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def _serve(head: str, home: Path, model: Path, port: int, gallery: str | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "LANSKAP_GALLERY_URL")}
    env.update(LANSKAP_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if gallery:
        env["LANSKAP_GALLERY_URL"] = gallery
    cmd = [sys.executable, "-m", "lanskap", "serve", "--ray-address", head, "--replicas", "2", "--model", str(model),
           "--fallback", "none", "--port", str(port)]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.scale
def test_replicas_that_cannot_start_say_why_in_one_line(tmp_path: Path) -> None:
    """A model the replicas can't load (here a hub id, offline) ends the server with their own reason.
    (Ray's forwarded worker log above it shows the replica's trace; lanskap's last line is the message.)"""
    env = {**os.environ, "LANSKAP_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lanskap", "serve", "--replicas", "1", "--model", "nobody/no-such-model",
           "--fallback", "none", "--port", str(_port())]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("error: the replicas could not start: "), last
    assert "nobody/no-such-model" in last


@pytest.mark.scale
def test_joining_a_two_machine_cluster_needs_a_shared_gallery_and_uses_both(
    cluster: str, tiny_sd: Path, postgres_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    refused = _serve(cluster, home, tiny_sd, _port(), None)
    out, _ = refused.communicate(timeout=180)
    assert refused.returncode != 0, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("error: replicas on 2 machines need a gallery") and "LANSKAP_GALLERY_URL" in last
    assert "Traceback" not in out

    port = _port()
    proc = _serve(cluster, home, tiny_sd, port, postgres_url)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        replicas: list[dict] = []
        while time.monotonic() < deadline and len(replicas) < 2:
            try:
                replicas = requests.get(url + "/api/v1/replicas", timeout=5).json()["replicas"]
            except (requests.RequestException, ValueError, KeyError):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.5)
        assert len({r["node"] for r in replicas}) == 2, "one replica on each machine"
        r = requests.post(url + "/sdapi/v1/txt2img", json={"prompt": "a bridge", "steps": 4, "width": 64,
                                                           "height": 64, "seed": 3}, timeout=120)  # fmt: skip
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["replica"] in {x["name"] for x in replicas} and info["gallery_ids"]
        import psycopg

        with psycopg.connect(postgres_url) as con:
            rows = con.execute("SELECT id, path FROM images WHERE state = 'ok'").fetchall()
        assert [row[0] for row in rows] == info["gallery_ids"] and Path(rows[0][1]).is_file()
    finally:
        stop_gently(proc)
