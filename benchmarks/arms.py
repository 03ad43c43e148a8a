"""What the benchmarks that run each arm in its own process share (upscale.py, panorama.py).

An arm runs in a child process, so its peak memory is its own: the parent runs the script again
with ``--arm NAME``, the child prints one ``RESULT {json}`` line, and the parent reads it back.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Callable


def peak_gib(device: str) -> float:
    """This process's peak memory: CUDA's max allocated, or the CPU's peak RSS."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(arms: dict[str, Callable[[argparse.Namespace], dict]], args: argparse.Namespace) -> None:
    """Run ``args.arm`` here and print its result with this process's peak memory."""
    result = arms[args.arm](args)
    result["peak_gib"] = peak_gib(args.device)
    print("RESULT " + json.dumps(result), flush=True)


def run_arm(script: str, arm: str, flags: list[str]) -> dict:
    """Run ``script --arm ARM FLAGS`` in a child process; its result, or ``{"error": last line}``."""
    proc = subprocess.run([sys.executable, script, "--arm", arm, *flags], capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:160]}
    return json.loads(lines[-1][7:])
