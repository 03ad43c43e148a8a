"""Serving throughput: the single-process ``lanskap serve`` against Ray Serve with 1 and 2 replicas.

Each configuration is a real server process on 127.0.0.1 with its own fresh home; after one warm-up
request per replica, a bounded burst of ``--requests`` A1111 txt2img calls goes in from
``--concurrency`` client threads. It prints throughput (images per minute over the burst), p50 and
p95 latency, the ratio to the first configuration, and how far seed 0's picture is from the first
configuration's (largest pixel difference and PSNR: scaling out must not change a picture; CPU
replicas with fewer torch threads add up in another order, which moves a few pixels by a level or two).

    python benchmarks/serve.py                                        # lanskap-mini on CPU: plain, 1, 2
    python benchmarks/serve.py --model /models/sd21 --size 768 --steps 25 --configs plain,1,2,4,8   # GPUs

On a CPU machine every replica gets an equal share of the cores (and that many torch threads), so
two replicas on two cores compete with one two-thread replica for the same silicon; on GPUs each
replica has a device of its own.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

PROMPT = "a fantasy landscape, a castle on a cliff above a misty valley, two moons, concept art"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(config: str, args: argparse.Namespace, home: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    port = _port()
    cmd = [sys.executable, "-m", "lanskap", "serve", "--model", args.model, "--port", str(port),
           "--max-queue", str(args.requests), "--rate-limit", "100000", "--rate-burst", "10000"]  # fmt: skip
    replicas = 1
    if config != "plain":
        cmd += ["--replicas", config]
        replicas = int(config)
    env = {**os.environ, "LANSKAP_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        try:
            health = requests.get(url + "/health", timeout=5).json()
            if config == "plain" or health.get("replicas") == replicas:
                return proc, url, replicas
        except (requests.RequestException, ValueError):
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{config}: the server did not start; see {home / 'serve.log'}")


def _request(url: str, args: argparse.Namespace, seed: int) -> tuple[float, np.ndarray]:
    body = {"prompt": PROMPT, "steps": args.steps, "width": args.size, "height": args.size, "seed": seed,
            }  # fmt: skip
    t = time.perf_counter()
    r = requests.post(url + "/sdapi/v1/txt2img", json=body, timeout=3600)
    took = time.perf_counter() - t
    r.raise_for_status()
    with Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))) as im:
        return took, np.asarray(im.convert("RGB"), dtype=np.float64)


def _burst(url: str, args: argparse.Namespace) -> tuple[float, list[float], np.ndarray]:
    latencies: list[float] = []
    first: dict[int, np.ndarray] = {}
    seeds = iter(range(args.requests))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                seed = next(seeds, None)
            if seed is None:
                return
            took, pixels = _request(url, args, seed)
            with lock:
                latencies.append(took)
                first[seed] = pixels

    t = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, latencies, first[0]


def measure(config: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"lanskap-serve-{config}-") as tmp:
        home = Path(tmp)
        proc, url, replicas = _start(config, args, home)
        try:
            warm = [threading.Thread(target=_request, args=(url, args, 10_000 + i)) for i in range(replicas)]
            for th in warm:
                th.start()
            for th in warm:
                th.join()
            wall, latencies, pixels = _burst(url, args)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    ordered = sorted(latencies)
    return {
        "config": config,
        "images_per_min": 60 * len(latencies) / wall,
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "wall": wall,
        "pixels": pixels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lanskap-mini")
    parser.add_argument("--configs", default="plain,1,2", help="plain (no Ray) and replica counts, comma-separated")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--start-timeout", type=float, default=600)
    args = parser.parse_args()
    rows = [measure(c.strip(), args) for c in args.configs.split(",") if c.strip()]
    base = rows[0]
    print(f"model {args.model}, {args.size} px, {args.steps} steps, burst of {args.requests} from "
          f"{args.concurrency} clients; {os.cpu_count()} CPUs")  # fmt: skip
    head = f"{'config':<8} {'img/min':>8} {'ratio':>6} {'p50 s':>7} {'p95 s':>7} {'burst s':>8}"
    print(f"{head} {'max diff':>8} {'PSNR dB':>8}")
    for r in rows:
        diff = np.abs(r["pixels"] - base["pixels"])
        mse = float((diff**2).mean())
        psnr = "same" if mse == 0 else f"{10 * np.log10(255**2 / mse):.1f}"
        print(f"{r['config']:<8} {r['images_per_min']:>8.1f} {r['images_per_min'] / base['images_per_min']:>6.2f} "
              f"{r['p50']:>7.2f} {r['p95']:>7.2f} {r['wall']:>8.1f} {int(diff.max()):>8} {psnr:>8}")  # fmt: skip


if __name__ == "__main__":
    main()
