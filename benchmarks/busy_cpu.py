"""Generation on a busy CPU: lanskap and the stock diffusers pipeline, quiet and with other work running.

On a 2-core machine where another process keeps a core busy, torch's OpenMP threads spin-wait
for a thread that isn't running, and an image takes several times longer than the load share
explains. lanskap sets ``OMP_WAIT_POLICY=PASSIVE`` when the machine is busy as it starts
(unless the user set it); this script shows what each wait policy does, side by side with stock
diffusers ("default": nothing set, each pipeline as it runs by itself).

    python benchmarks/busy_cpu.py                       # lanskap-mini, 25 steps, 1 busy process
    python benchmarks/busy_cpu.py --burners 2 --steps 10

Each variant runs in its own process (the wait policy is read once, when torch loads), makes an
untimed warm-up image, then times ``--repeats`` images of the same seed. "busy" starts
``--burners`` processes that spin on the CPU for the whole variant. The quality column is the
largest pixel difference from lanskap's quiet image: the wait policy leaves the thread count, and
so the pixels, as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "a castle by a lake at sunset, fantasy landscape"
SPIN = "while True:\n    pass\n"


def run_variant(kind: str, model: str, steps: int, size: int, repeats: int, out: Path) -> dict:
    """Inside the variant's own process: load, warm up, time; the image goes to ``out``."""
    if kind == "lanskap":
        import lanskap  # noqa: F401 - first, as the CLI does: it decides the wait policy before torch loads
    import numpy as np
    import torch

    if kind == "stock":
        from diffusers import StableDiffusionPipeline

        kw = {"safety_checker": None, "requires_safety_checker": False}
        pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32, **kw)  # fp16 files, a CPU
        pipe.set_progress_bar_config(disable=True)

        def make() -> object:
            gen = torch.Generator("cpu").manual_seed(1)
            return pipe(PROMPT, num_inference_steps=steps, width=size, height=size, generator=gen).images[0]
    else:
        from lanskap.config import Settings
        from lanskap.generation.engine import Engine
        from lanskap.generation.params import GenerationRequest

        home = out.parent / "home"
        engine = Engine(settings=Settings(home=home, model=model, device="cpu", dtype="fp32"))
        req = GenerationRequest(PROMPT, seed=1, steps=steps, width=size, height=size, watermark=False)

        def make() -> object:
            return engine.generate(req).images[0]

    make()  # warm-up: loading and first-call costs stay out of the timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        image = make()
        times.append(time.perf_counter() - start)
    image.save(out)  # type: ignore[attr-defined]
    return {"seconds": float(np.median(times)), "threads": torch.get_num_threads()}


def measure(kind: str, policy: str, burners: int, args: argparse.Namespace, out: Path) -> dict:
    """``policy``: ACTIVE or PASSIVE (OMP_WAIT_POLICY), or spin:N (GNU OpenMP spins N times, then sleeps)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = policy.split(":", 1)[1]
    elif policy != "default":  # default: nothing set, so each pipeline does what it does by itself
        env["OMP_WAIT_POLICY"] = policy
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(burners)]
    try:
        cmd = [sys.executable, __file__, "--variant", kind, "--model", args.model, "--steps", str(args.steps),
               "--size", str(args.size), "--repeats", str(args.repeats), "--image", str(out)]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    if proc.returncode != 0:
        raise SystemExit(f"{kind}/{policy} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _settle(limit: float = 120.0) -> None:
    """Wait (a while at most) for the 1-minute load average to fall, so "quiet" is quiet."""
    start = time.time()
    while os.getloadavg()[0] > 0.4 and time.time() - start < limit:
        time.sleep(5)
    print(f"  load average {os.getloadavg()[0]:.2f} for the quiet rows", flush=True)


def max_diff(a: Path, b: Path) -> int:
    import numpy as np
    from PIL import Image

    return int(np.abs(np.asarray(Image.open(a)).astype(int) - np.asarray(Image.open(b)).astype(int)).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="diffusers folder [the shipped lanskap-mini]")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--burners", type=int, default=1, help="busy processes in the 'busy' rows")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/busy_cpu"))
    ap.add_argument("--policies", default="default,ACTIVE,PASSIVE", help="default (none set), ACTIVE, PASSIVE, spin:N")
    ap.add_argument("--pipelines", default="stock,lanskap")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        from lanskap.models.builtin import shipped

        args.model = str(shipped())
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.model, args.steps, args.size, args.repeats, args.image)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; {args.model}; {args.steps} steps at {args.size} px; busy: {args.burners} spinner(s)")
    rows = []
    for load in ("quiet", "busy"):
        if load == "quiet":
            _settle()
        for kind in args.pipelines.split(","):
            for policy in args.policies.split(","):
                image = args.out / f"{kind}-{policy}-{load}.png"
                r = measure(kind, policy, args.burners if load == "busy" else 0, args, image)
                rows.append((load, kind, policy, r, image))
                print(f"  measured {kind:<8} {policy:<8} {load:<6} {r['seconds']:.2f} s", flush=True)
    ref = next(img for load, kind, _, _, img in rows if (load, kind) == ("quiet", "lanskap"))
    # the ratio column: against stock diffusers as it runs by default, under the same load
    base = {load: r["seconds"] for load, kind, policy, r, _ in rows if (kind, policy) == ("stock", "default")}
    head = ("load", "pipeline", "OMP wait", "threads", "s/image", "vs stock", "max px diff")
    print("\n{:<6} {:<8} {:<8} {:>7} {:>8} {:>9} {:>11}".format(*head))
    for load, kind, policy, r, image in rows:
        ratio = base.get(load, r["seconds"]) / r["seconds"]
        diff = max_diff(image, ref) if kind == "lanskap" else "-"
        print(f"{load:<6} {kind:<8} {policy:<8} {r['threads']:>7} {r['seconds']:>8.2f} {ratio:>8.2f}x {diff!s:>11}")


if __name__ == "__main__":
    main()
