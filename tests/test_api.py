"""The HTTP API over real HTTP on 127.0.0.1 (uvicorn in a thread), with the tiny model."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from conftest import assert_one_line_error, run_cli

KEY = "k" * 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, service, cfg) -> None:
        import uvicorn

        from lanskap.api.app import create_app

        self.service = service
        cfg.port = _free_port()
        self.url = f"http://127.0.0.1:{cfg.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(service, cfg), host="127.0.0.1", port=cfg.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            try:
                requests.get(self.url + "/health", timeout=10)
                return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a busy machine
                time.sleep(0.05)
        raise AssertionError("server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.service.queue.shutdown()


def _start(tiny_sd: Path, tiny_lora: Path, home: Path, **cfg_kw):
    from lanskap.api.security import ServeConfig
    from lanskap.config import load_settings
    from lanskap.service import Service

    (home / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_lora, home / "loras" / tiny_lora.name)
    svc = Service(load_settings(model=str(tiny_sd)), max_pending=cfg_kw.pop("max_queue", 8))
    return Server(svc, ServeConfig(**cfg_kw))


@pytest.fixture
def server(tiny_sd: Path, tiny_lora: Path, isolated_home: Path):
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=100_000, rate_burst=1000)  # tests poll fast
    yield s
    s.stop()


def _png(size=(64, 64), color=(120, 60, 200)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_a1111_endpoints_round_trip(server, isolated_home: Path) -> None:
    from lanskap.gallery import Gallery

    u = server.url
    body = {
        "prompt": "a castle <lora:mist-style:0.7>",
        "negative_prompt": "blurry",
        "seed": 1234,
        "steps": 2,
        "width": 64,
        "height": 64,
        "batch_size": 2,
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "subseed_strength": 0.5,  # not supported: accepted, ignored, warned about
        "restore_faces": False,  # A1111's default value: no warning
    }
    r = requests.post(u + "/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"images", "parameters", "info"} and isinstance(out["info"], str)
    info = json.loads(out["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235]
    assert info["sampler_name"] == "DPM++ 2M Karras" and info["steps"] == 2 and len(info["infotexts"]) == 2
    assert info["warnings"] == ["ignored unsupported field 'subseed_strength'"]
    assert info["loras"][0]["name"] == "mist-style" and info["loras"][0]["scale"] == 0.7
    assert out["parameters"]["prompt"] == body["prompt"] and out["parameters"]["cfg_scale"] == 7.0  # A1111 default
    assert len(out["images"]) == 2 and _img(out["images"][0]).size == (64, 64)
    rows = {e.id: e for e in Gallery(isolated_home).query()[0]}
    assert sorted(rows) == sorted(info["gallery_ids"]) and all(e.source == "api" for e in rows.values())

    # png-info reads the parameters back out of the returned picture.
    r = requests.post(u + "/sdapi/v1/png-info", json={"image": "data:image/png;base64," + out["images"][0]}, timeout=30)
    assert r.status_code == 200
    png = r.json()
    assert png["info"] == info["infotexts"][0]
    assert png["parameters"]["Seed"] == "1234" and png["parameters"]["Negative prompt"] == "blurry"

    # img2img with a mask (inpainting): pixels far from the mask are the input's.
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    body2 = {
        "prompt": "a tower",
        "init_images": [_png()],
        "mask": base64.b64encode(buf.getvalue()).decode(),
        "denoising_strength": 0.9,
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 5,
        "mask_blur": 2,
        "inpainting_fill": 1,
        "inpaint_full_res": False,
    }
    r = requests.post(u + "/sdapi/v1/img2img", json=body2, timeout=120)
    assert r.status_code == 200, r.text
    result = _img(r.json()["images"][0]).convert("RGB")
    assert result.getpixel((2, 2)) == (120, 60, 200) and result.getpixel((32, 32)) != (120, 60, 200)
    assert r.json()["parameters"]["init_images"] is None

    models = [m["model_name"] for m in requests.get(u + "/sdapi/v1/sd-models", timeout=10).json()]
    assert models == ["tiny-sd", "lanskap-mini"], "the model in use first, then the installed ones"
    assert [lo["name"] for lo in requests.get(u + "/sdapi/v1/loras", timeout=10).json()] == ["mist-style"]
    names = [s["name"] for s in requests.get(u + "/sdapi/v1/samplers", timeout=10).json()]
    assert "DPM++ 2M" in names and "Euler a" in names
    labels = {s["label"] for s in requests.get(u + "/sdapi/v1/schedulers", timeout=10).json()}
    assert labels == {"Automatic", "Uniform", "Karras", "Exponential", "Beta", "SGM Uniform"}
    opts = requests.get(u + "/sdapi/v1/options", timeout=10).json()
    assert opts["sd_model_checkpoint"].startswith("tiny-sd") and opts["samples_format"] == "png"
    assert requests.post(u + "/sdapi/v1/options", json={"samples_format": "jpg"}, timeout=10).status_code == 200
    assert requests.get(u + "/sdapi/v1/options", timeout=10).json()["samples_format"] == "jpg"
    bad = requests.post(u + "/sdapi/v1/options", json={"sd_model_checkpoint": "sd_xl_base"}, timeout=10)
    assert bad.status_code == 422 and "not installed" in bad.json()["detail"] and "tiny-sd" in bad.json()["detail"]
    idle = requests.get(u + "/sdapi/v1/progress", timeout=10).json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_progress_and_interrupt_while_generating(server) -> None:
    u = server.url
    box: dict = {}

    def call() -> None:
        box["r"] = requests.post(
            u + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 150, "width": 64, "height": 64}, timeout=300
        )

    t = threading.Thread(target=call)
    t.start()
    deadline = time.time() + 60
    seen = None
    while time.time() < deadline:
        p = requests.get(u + "/sdapi/v1/progress", timeout=10).json()
        if p["state"]["sampling_step"] >= 2:
            seen = p
            break
        time.sleep(0.05)
    assert seen is not None and 0 < seen["progress"] < 1 and seen["eta_relative"] > 0
    assert seen["state"]["sampling_steps"] == 150
    assert requests.post(u + "/sdapi/v1/interrupt", timeout=10).json() == {}  # A1111's answer
    t.join(120)
    r = box["r"]
    # As A1111: the image in progress comes back as it stands (a client reading r.image works).
    assert r.status_code == 200 and len(r.json()["images"]) == 1 and json.loads(r.json()["info"])["interrupted"]
    assert _img(r.json()["images"][0]).size == (64, 64)
    from lanskap.gallery import Gallery

    assert Gallery(server.service.settings.home).query()[1] == 0, "an unfinished image is not saved"
    end = time.time() + 10  # the answer can arrive a moment before the worker clears its current job
    while server.service.queue.current is not None and time.time() < end:
        time.sleep(0.05)
    assert server.service.queue.current is None


def test_native_gallery_and_jobs(server, isolated_home: Path) -> None:
    u = server.url
    r = requests.post(
        u + "/sdapi/v1/txt2img",
        json={"prompt": "misty lake", "steps": 1, "width": 64, "height": 64, "seed": 3},
        timeout=120,
    )
    (image_id,) = json.loads(r.json()["info"])["gallery_ids"]
    listing = requests.get(u + "/api/v1/gallery", params={"search": "lake"}, timeout=10).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == image_id and "path" not in listing["items"][0]
    assert requests.get(u + "/api/v1/gallery", params={"search": "dragon"}, timeout=10).json()["total"] == 0
    by = {"seed": 3, "mode": "txt2img", "model": "tiny-sd"}  # the peers' habit: find an image by its seed
    assert requests.get(u + "/api/v1/gallery", params=by, timeout=10).json()["total"] == 1
    for miss in ({"seed": 0}, {"mode": "inpaint"}, {"model": "other"}):
        assert requests.get(u + "/api/v1/gallery", params=miss, timeout=10).json()["total"] == 0, miss
    assert requests.get(u + "/api/v1/gallery", params={"mode": "zoom"}, timeout=10).status_code == 422
    assert requests.get(u + f"/api/v1/gallery/{image_id}", timeout=10).json()["seed"] == 3
    jpg = requests.get(u + f"/api/v1/gallery/{image_id}/image", params={"format": "jpg"}, timeout=10)
    assert jpg.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(jpg.content)).format == "JPEG"
    z = requests.post(u + "/api/v1/gallery/export", json={"ids": [image_id]}, timeout=10)
    assert z.headers["content-type"] == "application/zip" and z.content[:2] == b"PK"
    g = requests.post(u + "/api/v1/gallery/grid", json={"ids": [image_id, image_id, image_id]}, timeout=30)
    assert g.headers["content-type"] == "image/png" and Image.open(io.BytesIO(g.content)).size == (128, 128)
    too_many = requests.post(u + "/api/v1/gallery/grid", json={"ids": [image_id] * 65}, timeout=10)
    assert too_many.status_code == 422
    assert requests.delete(u + f"/api/v1/gallery/{image_id}", timeout=10).json()["deleted"] == 1
    assert requests.get(u + f"/api/v1/gallery/{image_id}", timeout=10).status_code == 404

    # A dataset job from a folder in $LANSKAP_HOME/incoming; then its status; names with paths are refused.
    src = isolated_home / "incoming" / "raw"
    src.mkdir(parents=True)
    for i in range(5):
        Image.effect_noise((64, 64), 20 + 15 * i).convert("RGB").save(src / f"{i}.png")  # no two alike
        (src / f"{i}.txt").write_text(f"a landscape number {i}")
    started = requests.post(
        u + "/api/v1/jobs/dataset", json={"source": "raw", "name": "set1", "min_side": 32}, timeout=10
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    deadline = time.time() + 60
    while requests.get(u + f"/api/v1/jobs/{job_id}", timeout=10).json()["state"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.1)
    status = requests.get(u + f"/api/v1/jobs/{job_id}", timeout=10).json()
    assert status["state"] == "done" and status["result"]["images"] == 5
    assert (isolated_home / "datasets" / "set1" / "dataset.json").is_file()
    for bad in ({"source": "../raw", "name": "x"}, {"source": "raw", "name": "../../etc"}):
        r = requests.post(u + "/api/v1/jobs/dataset", json=bad, timeout=10)
        assert r.status_code == 422 and "bad" in r.json()["detail"]
    r = requests.post(u + "/api/v1/jobs/training", json={"dataset": "../x", "name": "run"}, timeout=10)
    assert r.status_code == 422
    # A setting the core refuses comes back as a 422 that names the setting, as JSON fields are named.
    r = requests.post(
        u + "/api/v1/jobs/training", json={"dataset": "set1", "name": "run", "resolution": 100}, timeout=10
    )
    assert r.status_code == 422 and r.json()["settings"] == ["resolution"], r.text
    assert "multiple of 8" in r.json()["detail"] and "--" not in r.json()["detail"]
    assert requests.post(u + "/api/v1/jobs/nope/cancel", timeout=10).status_code == 404
    assert requests.get(u + "/docs", timeout=10).status_code == 200
    assert "/sdapi/v1/txt2img" in requests.get(u + "/openapi.json", timeout=10).json()["paths"]


def test_security_rules(tiny_sd: Path, tiny_lora: Path, isolated_home: Path) -> None:
    s = _start(tiny_sd, tiny_lora, isolated_home, api_keys=[KEY], basic_auth=[("ann", "s3cret-pass")], max_body_mb=0.05)
    u = s.url
    try:
        assert requests.get(u + "/health", timeout=10).status_code == 200  # open
        r = requests.get(u + "/sdapi/v1/samplers", timeout=10)
        assert r.status_code == 401 and "basic" in r.headers["www-authenticate"].lower()
        assert (
            requests.get(
                u + "/sdapi/v1/samplers", headers={"Authorization": "Bearer wrong-key-0123456789"}, timeout=10
            ).status_code
            == 401
        )
        assert requests.get(u + "/sdapi/v1/samplers", auth=("ann", "nope"), timeout=10).status_code == 401
        assert requests.get(u + "/sdapi/v1/samplers", headers={"X-API-Key": KEY}, timeout=10).status_code == 200
        assert requests.get(u + "/sdapi/v1/samplers", auth=("ann", "s3cret-pass"), timeout=10).status_code == 200
        h = {"Authorization": f"Bearer {KEY}"}
        # traversal names are refused with a 4xx and never touch the disk
        for prompt in ("x <lora:../../secret:1>", "x <lora:/etc/passwd:1>"):
            r = requests.post(u + "/sdapi/v1/txt2img", json={"prompt": prompt, "steps": 1}, headers=h, timeout=30)
            assert r.status_code == 422, r.text
        # a pickled LoRA in the LoRA folder is never loaded by the server
        (isolated_home / "loras" / "evil.ckpt").write_bytes(b"\x80\x04not really a pickle")
        r = requests.post(
            u + "/sdapi/v1/txt2img", json={"prompt": "x <lora:evil:1>", "steps": 1}, headers=h, timeout=30
        )
        assert r.status_code == 422, r.text
        assert "evil" not in [lo["name"] for lo in requests.get(u + "/sdapi/v1/loras", headers=h, timeout=10).json()]
        # bounds: a clear 422
        r = requests.post(u + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 500}, headers=h, timeout=10)
        assert r.status_code == 422 and "steps" in r.text
        r = requests.post(u + "/sdapi/v1/txt2img", json={"prompt": "x" * 9000}, headers=h, timeout=10)
        assert r.status_code == 422 and "prompt too long" in r.json()["detail"]
        # body size: over 0.05 MB is refused, with and without Content-Length
        big = {"prompt": "x", "init_images": ["A" * 80_000]}
        assert requests.post(u + "/sdapi/v1/img2img", json=big, headers=h, timeout=10).status_code == 413
        chunks = iter([b'{"prompt": "', b"x" * 40_000, b"y" * 40_000, b'"}'])
        r = requests.post(
            u + "/sdapi/v1/txt2img", data=chunks, headers={**h, "Content-Type": "application/json"}, timeout=10
        )
        assert r.status_code == 413
        # metrics count requests by route and status
        text = requests.get(u + "/metrics", headers=h, timeout=10).text
        assert 'lanskap_http_requests_total{method="GET",route="/sdapi/v1/samplers",status="401"}' in text
        assert "lanskap_queue_depth" in text and "lanskap_generation_seconds_bucket" in text
    finally:
        s.stop()


def test_rate_limit_per_client(tiny_sd: Path, tiny_lora: Path, isolated_home: Path) -> None:
    s = _start(tiny_sd, tiny_lora, isolated_home, rate_per_minute=60, rate_burst=3)
    try:
        codes = [requests.get(s.url + "/sdapi/v1/samplers", timeout=10).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = requests.get(s.url + "/sdapi/v1/samplers", timeout=10)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert requests.get(s.url + "/health", timeout=10).status_code == 200  # never limited
    finally:
        s.stop()


def test_bounded_load_every_request_completes_or_gets_a_clean_503(
    tiny_sd: Path, tiny_lora: Path, isolated_home: Path
) -> None:
    from lanskap.gallery import Gallery

    s = _start(tiny_sd, tiny_lora, isolated_home, max_queue=2, rate_burst=100)
    results: list = []
    lock = threading.Lock()

    def client(i: int) -> None:
        r = requests.post(
            s.url + "/sdapi/v1/txt2img",
            json={"prompt": f"load {i}", "steps": 2, "width": 64, "height": 64, "seed": i},
            timeout=300,
        )
        with lock:
            results.append(r)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        codes = sorted(r.status_code for r in results)
        assert len(codes) == 10 and set(codes) <= {200, 503}, codes
        assert codes.count(200) >= 3 and codes.count(503) >= 1, codes  # one running + two waiting fit
        for r in results:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) > 0 and "queue is full" in r.json()["detail"]
        ok = [json.loads(r.json()["info"])["gallery_ids"][0] for r in results if r.status_code == 200]
        g = Gallery(isolated_home)
        assert sorted(e.id for e in g.query(limit=100)[0]) == sorted(ok)
        assert g.check() == {"missing_files": [], "unfinished": []}
        assert requests.get(s.url + "/health", timeout=10).json()["status"] == "ok"
    finally:
        s.stop()


def test_serve_refuses_a_public_address_without_auth() -> None:
    proc = run_cli("serve", "--host", "0.0.0.0")
    assert_one_line_error(proc, "refusing to listen on 0.0.0.0 without authentication")


def _finished(url: str, job_id: str, deadline: float) -> dict:  # type: ignore[type-arg]
    """The job's status once it has run, which must be "done"."""
    while (status := requests.get(url + f"/api/v1/jobs/{job_id}", timeout=10).json())["state"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.2)
    assert status["state"] == "done", status
    return status


def test_training_and_evaluation_jobs_start_report_and_cancel(
    server, isolated_home: Path, tmp_path: Path, models_dir: Path
) -> None:
    from lanskap.models.tiny_aux import build_clip
    from test_training import write_imagefolder

    u = server.url
    write_imagefolder(isolated_home / "datasets" / "stripes", n=6)
    body = {"dataset": "stripes", "name": "stripes-lora", "max_train_steps": 200, "resolution": 64, "rank": 4}
    job = requests.post(u + "/api/v1/jobs/training", json=body, timeout=10).json()
    deadline = time.time() + 120
    while requests.get(u + f"/api/v1/jobs/{job['id']}", timeout=10).json()["step"] < 2:
        assert time.time() < deadline
        time.sleep(0.1)
    listed = requests.get(u + "/api/v1/jobs", timeout=10).json()
    assert [j["id"] for j in listed["active"]] == [job["id"]]
    assert requests.post(u + f"/api/v1/jobs/{job['id']}/cancel", timeout=10).json()["cancelled"] is True
    while requests.get(u + f"/api/v1/jobs/{job['id']}", timeout=10).json()["state"] == "running":
        assert time.time() < deadline
        time.sleep(0.1)
    status = requests.get(u + f"/api/v1/jobs/{job['id']}", timeout=10).json()
    assert status["state"] == "cancelled" and status["result"]["interrupted"] and 2 <= status["result"]["steps"] < 200
    assert list((isolated_home / "training" / "stripes-lora").glob("checkpoint-*"))

    clip = models_dir / "tiny-clip-api"
    if not clip.exists():
        build_clip(clip)
    (isolated_home / "datasets" / "held-out").mkdir(parents=True)
    write_imagefolder(isolated_home / "datasets" / "held-out" / "test", n=3)
    # Metric models are named, never given as server paths; what isn't installed is refused alike.
    # A path that exists and one that doesn't get the same answer, so a caller learns nothing of the disk.
    for bad, said in ((str(clip), "bad CLIP model name"), ("/no/such", "bad CLIP model name"), ("../models", "bad"),
                      ("nope", "no CLIP model named 'nope' is installed")):  # fmt: skip
        r = requests.post(u + "/api/v1/jobs/evaluation", json={"dataset": "held-out", "clip_model": bad}, timeout=10)
        assert r.status_code == 422 and said in r.json()["detail"], r.text
    shutil.copytree(clip, isolated_home / "models" / "tiny-clip")
    body = {"dataset": "held-out", "lora": "mist-style", "steps": 1, "clip_model": "tiny-clip"}
    job = requests.post(u + "/api/v1/jobs/evaluation", json=body, timeout=10).json()
    assert "id" in job, job
    status = _finished(u, job["id"], time.time() + 180)
    assert Path(status["result"]["report"]).is_file() and any("CMMD" in v for v in status["result"]["verdict"])

    # FID only: "none" skips CLIP, and the Inception weights are named too (the renders are cached).
    from lanskap.models.tiny import make_tiny

    make_tiny(isolated_home / "models" / "tiny-inception", "inception")
    body = {"dataset": "held-out", "steps": 1, "clip_model": "none", "inception_model": "tiny-inception"}
    job = requests.post(u + "/api/v1/jobs/evaluation", json=body, timeout=10).json()
    status = _finished(u, job["id"], time.time() + 180)
    report = json.loads(Path(status["result"]["report"]).read_text())
    assert "fid" in report["metrics"]["base"] and "cmmd" not in report["metrics"]["base"]


def test_cors_is_off_unless_configured_and_requests_are_logged_as_json(
    tiny_sd, tiny_lora, isolated_home, caplog
) -> None:
    import logging

    origin = {"Origin": "https://studio.example"}
    s = _start(tiny_sd, tiny_lora, isolated_home)
    try:
        with caplog.at_level(logging.INFO, logger="lanskap.access"):
            logging.getLogger("lanskap.access").addHandler(caplog.handler)
            r = requests.get(s.url + "/sdapi/v1/samplers", headers=origin, timeout=10)
        assert "access-control-allow-origin" not in r.headers
        lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "lanskap.access"]
        line = next(x for x in lines if x["path"] == "/sdapi/v1/samplers")
        assert (
            line["status"] == 200
            and line["method"] == "GET"
            and line["route"] == "/sdapi/v1/samplers"
            and line["ms"] >= 0
        )
    finally:
        s.stop()
    s = _start(tiny_sd, tiny_lora, isolated_home, cors_origins=["https://studio.example"])
    try:
        r = requests.get(s.url + "/sdapi/v1/samplers", headers=origin, timeout=10)
        assert r.headers["access-control-allow-origin"] == "https://studio.example"
    finally:
        s.stop()


@pytest.mark.e2e
def test_lanskap_serve_command_answers_health(tiny_sd: Path, isolated_home: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lanskap.cli.main",
            "serve",
            "--port",
            str(port),
            "--model",
            str(tiny_sd),
            "--api-key",
            KEY,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LANSKAP_HOME": str(isolated_home)},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                health = requests.get(url + "/health", timeout=10).json()
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        else:
            raise AssertionError((tmp_path / "serve.log").read_text())
        assert health["status"] == "ok"
        r = requests.post(
            url + "/sdapi/v1/txt2img",
            json={"prompt": "x", "steps": 1, "width": 64, "height": 64},
            headers={"X-API-Key": KEY},
            timeout=120,
        )
        assert r.status_code == 200 and len(r.json()["images"]) == 1
        assert requests.get(url + "/sdapi/v1/loras", timeout=10).status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_each_app_serves_its_own_service(tmp_path: Path, tiny_sd: Path) -> None:
    """The routers get the Service through a dependency, so two apps in one process never share one."""
    from lanskap.api.security import ServeConfig
    from lanskap.config import load_settings
    from lanskap.service import Service

    servers = []
    for name in ("north", "south"):
        home = tmp_path / name
        home.mkdir()
        (home / "styles.csv").write_text(f'name,prompt,negative_prompt\n{name},"{{prompt}}, {name}",\n')
        settings = load_settings(model=str(tiny_sd), home=str(home))
        servers.append(Server(Service(settings), ServeConfig(rate_per_minute=100_000, rate_burst=1000)))
    try:
        for s, name in zip(servers, ("north", "south"), strict=True):
            styles = requests.get(s.url + "/sdapi/v1/prompt-styles", timeout=10).json()
            assert [st["name"] for st in styles] == [name]
            assert requests.get(s.url + "/api/v1/jobs", timeout=10).json() == {"active": [], "recent": []}
    finally:
        for s in servers:
            s.stop()


def test_a_client_that_hangs_up_cancels_its_queued_job(server) -> None:
    """A request waiting in line whose client disconnects is dropped, not generated for nobody."""
    release = threading.Event()
    server.service.queue.submit("train", "someone else's run", lambda job: release.wait(60))
    body = json.dumps({"prompt": "a lake nobody will see", "steps": 2, "width": 64, "height": 64}).encode()
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.time() + 10
        while not any(j.kind == "generate" for j in server.service.queue.pending()):
            assert time.time() < deadline, "the request never reached the queue"
            time.sleep(0.05)
    # The client has hung up: within a few polls its job leaves the queue, cancelled, before it ran.
    deadline = time.time() + 10
    while any(j.kind == "generate" for j in server.service.queue.pending()):
        assert time.time() < deadline, "the hung-up client's job is still waiting"
        time.sleep(0.05)
    (job,) = [j for j in server.service.queue.recent(10) if j.kind == "generate"]
    assert job.state == "cancelled" and job.result is None
    release.set()
    assert requests.get(server.url + "/api/v1/gallery", timeout=10).json()["total"] == 0
