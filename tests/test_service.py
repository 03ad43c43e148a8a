"""The shared core of the web app and the API: the one-at-a-time queue and the Service around the engine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from lanskap.errors import CancelledError, LanskapError, QueueFullError
from lanskap.service import JobQueue


def _blocking(started: threading.Event, release: threading.Event, log: list[str], name: str):
    def work(job):
        log.append(f"start {name}")
        started.set()
        for i in range(100):
            if release.wait(0.05) or job.cancel.is_set():
                break
            job.report(i + 1, 100, f"step {i + 1}")
        if job.cancel.is_set():
            raise CancelledError("interrupted")
        log.append(f"end {name}")
        return name

    return work


def test_queue_runs_one_job_at_a_time_in_order_and_is_bounded() -> None:
    q = JobQueue(max_pending=2)
    log: list[str] = []
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(job):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        log.append(job.label)
        with lock:
            running -= 1
        return job.label.upper()

    gate_started, gate = threading.Event(), threading.Event()
    first = q.submit("generate", "first", _blocking(gate_started, gate, log, "first"))
    assert gate_started.wait(5)
    a = q.submit("generate", "a", work)
    b = q.submit("generate", "b", work)
    assert q.position(first) == 0 and q.position(a) == 1 and q.position(b) == 2
    with pytest.raises(QueueFullError, match="queue is full"):
        q.submit("generate", "c", work)
    snap = q.snapshot()
    assert snap["running"]["label"] == "first" and [j["label"] for j in snap["pending"]] == ["a", "b"]
    gate.set()
    assert b.wait(10)
    assert (first.state, a.state, b.state) == ("done", "done", "done")
    assert (a.result, b.result) == ("A", "B")
    assert log == ["start first", "end first", "a", "b"]
    assert peak == 1
    assert q.position(a) is None
    q.shutdown()


def test_queue_cancel_waiting_and_running_jobs_and_survives_errors() -> None:
    q = JobQueue(max_pending=4)
    started, release = threading.Event(), threading.Event()
    log: list[str] = []
    running = q.submit("train", "long", _blocking(started, release, log, "long"))
    assert started.wait(5)
    waiting = q.submit("generate", "never", lambda job: log.append("never ran"))
    assert q.cancel(waiting.id)
    assert waiting.state == "cancelled" and waiting.wait(0)

    def user_error(job):
        raise LanskapError("the mask is empty (all black): nothing to repaint")

    def crash(job):
        raise RuntimeError("boom")

    bad = q.submit("generate", "bad", user_error)
    broken = q.submit("generate", "broken", crash)
    ok = q.submit("generate", "ok", lambda job: 42)
    time.sleep(0.2)
    assert running.state == "running" and running.step > 0 and running.eta is not None
    assert q.cancel(running.id)
    assert ok.wait(10)
    assert running.state == "cancelled"
    assert bad.state == "failed" and bad.error == "the mask is empty (all black): nothing to repaint"
    assert broken.state == "failed" and broken.error == "internal error: RuntimeError: boom"
    assert ok.state == "done" and ok.result == 42
    assert "never ran" not in log
    with pytest.raises(LanskapError, match="no job"):
        q.get("nope")
    q.shutdown()


@pytest.fixture
def service(tiny_sd: Path, isolated_home: Path, tiny_lora: Path):
    import shutil

    from lanskap.config import load_settings
    from lanskap.service import Service

    (isolated_home / "loras").mkdir(parents=True)
    shutil.copy(tiny_lora, isolated_home / "loras" / tiny_lora.name)  # only this LoRA in the folder
    settings = load_settings(model=str(tiny_sd))
    svc = Service(settings, max_pending=3)
    yield svc
    svc.queue.shutdown()


def test_service_generates_into_the_gallery_with_progress(service) -> None:
    from lanskap.generation.params import GenerationRequest, LoraSpec

    seen: list[tuple[int, int]] = []
    req = GenerationRequest("a castle in the mist", seed=7, steps=3, width=64, height=64, num_images=2)
    req = GenerationRequest(**{**req.__dict__, "loras": (LoraSpec("mist-style", 0.8),)})
    job = service.submit_generation(req, source="ui")
    while not job.wait(0.01):
        if job.state == "running" and job.total:
            seen.append((job.step, job.total))
    assert job.state == "done", job.error
    out = job.result
    assert out.result.seeds == [7, 8]
    assert len(out.ids) == 2 and all(p.is_file() for p in out.paths)
    entry = service.gallery.get(out.ids[0])
    assert entry.source == "ui" and entry.seed == 7 and entry.loras[0]["name"] == "mist-style"
    assert entry.model_hash == out.result.model_hash
    assert Image.open(entry.path).size == (64, 64)
    assert job.step == job.total == 6  # 3 steps x 2 images, reported live
    assert service.lora_names() == ["mist-style"]
    status = service.status()
    assert status["model"]["loaded"] is True and status["device"] == "cpu"
    assert status["memory"]["process_rss_mb"] > 0 and status["queue"]["running"] is None


def test_service_refuses_bad_requests_before_queueing(service) -> None:
    from lanskap.generation.params import GenerationRequest, LoraSpec

    for bad, needle in (
        (GenerationRequest("x", loras=(LoraSpec("../../etc/passwd"),)), "passwd"),
        (GenerationRequest("x <lora:/tmp/evil:1>"), "evil"),
        (GenerationRequest("x", steps=0), "steps"),
    ):
        with pytest.raises(LanskapError, match=needle):
            service.submit_generation(bad, source="api")
    assert service.queue.pending() == [] and service.queue.current is None
    with pytest.raises(LanskapError, match="bad run name"):
        from lanskap.training import build_config

        service.submit_training(build_config(None, None, {"data": "x"}), "../escape")


def test_jobs_wait_for_another_process_holding_the_gpu_lock(service) -> None:
    """The web app, the API and CLI runs share $LANSKAP_HOME/gpu.lock (flock: released if a process dies)."""
    import subprocess
    import sys

    from lanskap.generation.params import GenerationRequest

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from lanskap.gpulock import gpu_lock\n"
            "with gpu_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(service.settings.home),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        job = service.submit_generation(GenerationRequest("x", seed=1, steps=1, width=64, height=64), source="api")
        deadline = time.time() + 20
        while "another lanskap process" not in job.message and time.time() < deadline:
            time.sleep(0.05)
        assert job.state == "running" and "waiting for another lanskap process" in job.message
        time.sleep(0.5)
        assert not job.wait(0)  # still waiting while the other process holds the GPU
    finally:
        holder.kill()  # a dead holder releases the lock
        holder.wait()
    assert job.wait(60) and job.state == "done", job.error


def test_the_gpu_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path: Path) -> None:
    """Job functions take the lock inside fronts that already hold it; that must not deadlock,
    while another thread (another job of this process) still waits its turn."""
    from lanskap.gpulock import gpu_lock

    order: list[str] = []
    with gpu_lock(tmp_path), gpu_lock(tmp_path):  # nested: a front, then its job function
        waiter = threading.Thread(target=lambda: _take(tmp_path, order))
        waiter.start()
        time.sleep(0.5)
        order.append("holder done")
    waiter.join(10)
    assert order == ["holder done", "other thread got it"]


def _take(home: Path, order: list[str]) -> None:
    from lanskap.gpulock import gpu_lock

    with gpu_lock(home, poll=0.05):
        order.append("other thread got it")
