"""The fp16 black-image check: SD 2.1 768-v in half precision must not overflow to NaN or black.

SD 2.1's attention overflows fp16 unless it is computed in fp32 (``upcast_attention``); the
symptom is NaN latents and an all-black picture. lanskap's CUDA default is fp16 with upcast
attention. This runs lanskap's engine in fp16 at 768 px with every sampler family and checks
that each image is finite and not black. With random weights of SD 2.1's shapes (no --model) it
checks the arithmetic path; with the real weights it checks the pictures too.

    python benchmarks/blackimage.py                     # CUDA, 768 px
    python benchmarks/blackimage.py --model /models/sd21 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SAMPLERS = ("DPM++ 2M Karras", "Euler a", "Euler", "DDIM", "UniPC", "Heun", "DPM++ SDE Karras", "LMS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="diffusers folder (default: SD 2.1's architecture with random weights)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not args.model:
        from lanskap.models.reference import build_random_sd21

        cache = Path(os.environ.get("LANSKAP_BENCH_CACHE", Path(tempfile.gettempdir()) / "lanskap-sd21-random"))
        args.model = str(build_random_sd21(cache))
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest

    engine = Engine(args.model, device=args.device, dtype=args.dtype, fallback="none")
    loaded = engine.load()
    print(f"{args.device} {loaded.placement.dtype_name}, upcast attention: {loaded.pipe.unet.config.upcast_attention}")
    rows, failed = [], 0
    for sampler in args.samplers.split(","):
        seen: dict[str, bool] = {"finite": True}

        def watch(p, seen=seen):  # type: ignore[no-untyped-def]
            if p.latents is not None and not torch.isfinite(p.latents).all():
                seen["finite"] = False

        t = time.perf_counter()
        req = GenerationRequest("a castle above a misty valley at dawn", seed=7, steps=args.steps, width=args.size,
                                height=args.size, scheduler=sampler, watermark=False)  # fmt: skip
        image = np.asarray(engine.generate(req, progress=watch).images[0])
        black = bool(image.max() <= 8)
        ok = seen["finite"] and not black
        failed += not ok
        rows.append({"sampler": sampler, "finite": seen["finite"], "black": black, "mean": float(image.mean()),
                     "seconds": time.perf_counter() - t, "ok": ok})  # fmt: skip
        r = rows[-1]
        print(f"{sampler:<20} finite={r['finite']!s:<5} black={r['black']!s:<5} mean={r['mean']:6.1f} "
              f"{r['seconds']:6.1f}s  {'ok' if ok else 'FAIL'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "dtype": args.dtype, "rows": rows}, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
