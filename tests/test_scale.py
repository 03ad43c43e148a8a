"""One API over two replicas on Ray Serve, with the gallery in PostgreSQL (issue #38).

The real thing: ``lanskap serve --replicas 2`` started as a process (a local Ray instance on this
machine's CPUs, two CPU replicas of the tiny model), a real PostgreSQL server (tests/pgserver.py)
holding the gallery, and plain HTTP. These tests share one server, in this order, so they carry the
``scale`` mark and run in one process (CI runs them as their own step: scripts/test.sh -m scale).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import REPO, stop_gently

ray = pytest.importorskip("ray", reason="Ray is not installed (scripts/setup.sh --dev installs ray[serve])")

LONG = {"prompt": "a long road", "steps": 60, "width": 256, "height": 256, "batch_size": 2}
SHORT = {"prompt": "a castle", "steps": 8, "width": 128, "height": 128}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str, home: Path, gallery: str, log: Path) -> None:
        self.proc, self.url, self.home, self.gallery, self.log = proc, url, home, gallery, log

    def get(self, path: str, **kw: Any) -> Any:
        r = requests.get(self.url + path, timeout=30, **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any] | None = None, timeout: float = 120) -> requests.Response:
        return requests.post(self.url + path, json=body or {}, timeout=timeout)

    def replicas(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/replicas")["replicas"]

    def jobs(self) -> dict[str, Any]:
        return self.get("/api/v1/jobs")

    def wait_for(self, what: str, test: Any, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = test()
            except requests.RequestException:
                got = None
            if got:
                return got
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; server log:\n{self.log.read_text()[-4000:]}")

    def rows(self) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.gallery) as con:
            return con.execute("SELECT id, path, state FROM images ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def server(tiny_sd: Path, postgres_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("scale") / "home"
    home.mkdir()
    gallery = postgres_server.database()
    port = _free_port()
    log = home.parent / "serve.log"
    env = {**os.environ, "LANSKAP_HOME": str(home), "LANSKAP_GALLERY_URL": gallery, "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}  # fmt: skip
    cmd = [sys.executable, "-m", "lanskap", "serve", "--replicas", "2", "--model", str(tiny_sd), "--fallback", "none",
           "--port", str(port), "--max-queue", "1", "--rate-limit", "100000", "--rate-burst", "10000"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    srv = Server(proc, f"http://127.0.0.1:{port}", home, gallery, log)
    try:
        srv.wait_for("two replicas", lambda: len(srv.replicas()) == 2 and srv.get("/health")["replicas"] == 2, 240)
        yield srv
    finally:
        stop_gently(proc)


def _generate(srv: Server, body: dict[str, Any], out: list[Any]) -> None:
    try:
        r = srv.post("/sdapi/v1/txt2img", body)
        is_json = r.headers.get("content-type", "").startswith("application/json")
        out.append((r.status_code, r.json() if is_json else r.text, r.headers))
    except requests.RequestException as exc:
        out.append((None, str(exc), {}))


def _start(srv: Server, body: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=_generate, args=(srv, body, out))
    t.start()
    return t, out


def _running(srv: Server, n: int) -> list[dict[str, Any]] | None:
    jobs = [j for j in srv.jobs()["active"] if j["state"] == "running" and j.get("replica") and j["step"] > 0]
    return jobs if len(jobs) >= n else None


def _info(out: list[Any]) -> dict[str, Any]:
    status, body, _ = out[0]
    assert status == 200, body
    return json.loads(body["info"])


@pytest.mark.scale
def test_two_replicas_share_the_work_and_the_gallery_holds_each_image_once(server: Server) -> None:
    threads = [_start(server, {**SHORT, "steps": 30, "width": 256, "height": 256, "seed": s}) for s in (1, 2)]
    for t, _ in threads:
        t.join(120)
    infos = [_info(out) for _, out in threads]
    assert {i["replica"] for i in infos} == {r["name"] for r in server.replicas()}, "each replica made one"
    made = [i["gallery_ids"][0] for i in infos]
    recent = [j for j in server.jobs()["recent"] if j["kind"] == "generate"]
    assert {j["replica"] for j in recent} == {i["replica"] for i in infos}  # /api/v1/jobs lists both replicas' jobs
    a, b = sorted(recent[:2], key=lambda j: j["started"])
    assert b["started"] < a["finished"], "the two jobs ran at the same time"
    rows = server.rows()
    assert sorted(r[0] for r in rows) == sorted(made) and len({r[1] for r in rows}) == len(rows)
    assert all(r[2] == "ok" and Path(r[1]).is_file() for r in rows)
    entry = server.get(f"/api/v1/gallery/{made[0]}")  # the ingress reads the same PostgreSQL gallery
    assert entry["seed"] in (1, 2) and entry["width"] == 256


@pytest.mark.scale
def test_upscale_and_dataset_jobs_run_on_a_replica_too(server: Server) -> None:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 48), 40).convert("RGB").save(buf, "PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "upscaler_1": "Lanczos", "upscaling_resize": 2}
    r = server.post("/sdapi/v1/extra-single-image", body)
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["image"]))).size == (128, 96)
    raw = server.home / "incoming" / "raw"
    raw.mkdir(parents=True)
    for i in range(3):
        Image.effect_noise((64, 64), 20 + 15 * i).convert("RGB").save(raw / f"{i}.png")
        (raw / f"{i}.txt").write_text(f"a landscape number {i}")
    started = server.post("/api/v1/jobs/dataset", {"source": "raw", "name": "set1", "min_side": 32})
    assert started.status_code == 202, started.text
    job = server.wait_for("the dataset job", lambda: (j := server.get(f"/api/v1/jobs/{started.json()['id']}"))
                          and j["state"] not in ("queued", "running") and j)  # fmt: skip
    assert job["state"] == "done" and job["result"]["images"] == 3 and job["replica"]
    assert (server.home / "datasets" / "set1" / "dataset.json").is_file()
    kinds = {j["kind"]: j.get("replica") for j in server.jobs()["recent"]}
    assert kinds["upscale"] and kinds["dataset"]


@pytest.mark.scale
def test_a_full_system_answers_503_and_interrupt_reaches_the_right_replica(server: Server) -> None:
    first, second = _start(server, {**LONG, "seed": 10}), _start(server, {**LONG, "seed": 20})
    running = server.wait_for("both replicas busy", lambda: _running(server, 2))
    assert len({j["replica"] for j in running}) == 2
    # Ray's queue takes --max-queue (1) plus one per replica (requests on their way to a free one) ...
    queued = [_start(server, {**SHORT, "seed": 30 + i}) for i in range(3)]
    waiting = lambda: len([j for j in server.jobs()["active"] if j["state"] == "queued"]) == 3  # noqa: E731
    server.wait_for("three jobs waiting", waiting)
    full: list[Any] = []
    _generate(server, {**SHORT, "seed": 40}, full)  # ... and refuses the next
    status, body, headers = full[0]
    assert status == 503 and "busy" in body["detail"] and int(headers["Retry-After"]) > 0, body

    # Progress, interrupt and skip name a job: each reaches the replica that runs it, and only that job.
    target, other = running[0], running[1]
    progress = server.get("/sdapi/v1/progress", params={"job": target["id"]})
    assert progress["state"]["job"] == target["id"] and progress["state"]["sampling_step"] > 0
    assert progress["current_image"], "the live preview comes from the replica"
    assert server.post("/sdapi/v1/interrupt?job=" + target["id"]).status_code == 200
    assert server.post("/sdapi/v1/skip?job=" + other["id"]).status_code == 200
    for t, _ in (first, second, *queued):
        t.join(120)
    results = [_info(out) for _, out in (first, second)]
    stopped = next(i for i in results if i["replica"] == target["replica"])
    other = next(i for i in results if i["replica"] != target["replica"])
    assert stopped["interrupted"] and not other["interrupted"] and len(other["all_seeds"]) == 2
    assert other["skipped_images"] == [0, 1], "the skip ended the other job's batch as it stood"
    assert sorted(_info(out)["seed"] for _, out in queued) == [30, 31, 32]
    assert requests.get(server.url + "/sdapi/v1/progress?job=nope", timeout=30).status_code == 422


@pytest.mark.scale
def test_killing_a_replica_fails_or_retries_its_job_and_ray_replaces_it(server: Server) -> None:
    before = {r["name"]: r["pid"] for r in server.replicas()}
    victim_t, victim = _start(server, {**LONG, "prompt": "victim", "seed": 50})
    bystander_t, bystander = _start(server, {**LONG, "prompt": "bystander", "seed": 60})
    running = server.wait_for("both jobs running", lambda: _running(server, 2))
    doomed = next(j for j in running if j["label"].endswith("victim"))
    os.kill(before[doomed["replica"]], signal.SIGKILL)
    victim_t.join(180)
    bystander_t.join(180)
    assert _info(bystander)["seed"] == 60, "the other replica carried on"
    status, body, headers = victim[0]
    if status == 200:  # killed before it saved anything: retried once, on another replica
        assert json.loads(body["info"])["replica"] != doomed["replica"]
    else:
        assert status == 503 and "replica running this job stopped" in body["detail"] and headers["Retry-After"]
    server.wait_for("a replacement replica", lambda: len(names := {r["name"] for r in server.replicas()}) == 2
                    and names - set(before), 180)  # fmt: skip
    fresh: list[Any] = []
    _generate(server, {**SHORT, "seed": 70}, fresh)
    assert _info(fresh)["seed"] == 70
    assert all(state == "ok" and Path(path).is_file() for _, path, state in server.rows())


@pytest.mark.scale
def test_a_job_that_had_saved_work_is_not_sent_again_when_its_replica_dies(server: Server) -> None:
    """A training run writes as it goes (its run folder, checkpoints): it fails in one clear line instead."""
    before = {r["name"]: r["pid"] for r in server.replicas()}
    body = {"dataset": "set1", "name": "doomed", "max_train_steps": 5000, "resolution": 64}
    started = server.post("/api/v1/jobs/training", body)  # set1: made by the dataset test above
    assert started.status_code == 202, started.text
    url = f"/api/v1/jobs/{started.json()['id']}"
    job = server.wait_for("training steps", lambda: (j := server.get(url))["step"] > 0 and j.get("replica") and j)
    os.kill(before[job["replica"]], signal.SIGKILL)
    job = server.wait_for("the job to end", lambda: (j := server.get(url))["state"] not in ("queued", "running") and j)
    assert job["state"] == "failed" and "the replica running this job stopped" in job["error"], job
    server.wait_for("a replacement replica", lambda: len(names := {r["name"] for r in server.replicas()}) == 2
                    and names - set(before), 180)  # fmt: skip


@pytest.mark.scale
def test_killing_the_ingress_loses_no_saved_image(server: Server) -> None:
    count = len(server.rows())
    ingress = server.get("/api/v1/replicas")["ingress"]["pid"]
    t, out = _start(server, {**LONG, "steps": 40, "seed": 80})
    server.wait_for("the job running", lambda: _running(server, 1))
    os.kill(ingress, signal.SIGKILL)
    t.join(120)
    assert out[0][0] != 200  # its answer is lost with the ingress ...
    rows = server.wait_for("the replica's images", lambda: (r := server.rows()) and len(r) == count + 2 and r, 120)
    assert all(state == "ok" and Path(path).is_file() for _, path, state in rows)  # ... its images are not
    server.wait_for("a new ingress", lambda: server.get("/api/v1/replicas")["ingress"]["pid"] != ingress, 180)
    assert server.get("/health")["status"] == "ok"
    import psycopg

    with psycopg.connect(server.gallery) as con:  # every image of every test exactly once, retries included
        twice = con.execute("SELECT prompt, seed FROM images GROUP BY prompt, seed HAVING count(*) > 1").fetchall()
    assert twice == []


def test_plain_serve_never_imports_ray_and_a_wrong_count_is_one_line(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from lanskap.api.app import create_app\n"
        "from lanskap.api.security import ServeConfig\n"
        "from lanskap.config import load_settings\n"
        "from lanskap.service import Service\n"
        "create_app(Service(load_settings(fallback='none')), ServeConfig().check())\n"
        "print('ray' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    no_ray = "import sys; sys.modules['ray'] = None; from lanskap.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", no_ray, "serve", "--replicas", "2"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "needs Ray Serve" in proc.stderr and "Traceback" not in proc.stderr
    missing = ["--model", str(tmp_path / "no-such-model"), "--fallback", "none"]  # found out before Ray starts
    for args, needle in ((["0"], "1 or more"), (["lots"], "whole number or auto"), (["2", *missing], "not found")):
        proc = subprocess.run([sys.executable, "-m", "lanskap", "serve", "--replicas", *args], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
