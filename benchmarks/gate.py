"""The quality gate for step-changing speed levers, on lanskap-mini (a trained model).

Random weights can't judge a picture, so each lever is judged on the built-in lanskap-mini: the
same held-out prompts, seeds and steps with and without the lever. It prints, per lever, the time
per image against full compute, the PSNR against full compute (mean and worst over the prompts)
and, with --follow, the prompt-following score (``lanskap mini score``'s measure: the share of
requested attributes the picture shows). A lever passes when the mean PSNR is at least
GATE_PSNR_DB and the score is within 2 points of full compute's (docs/performance.md).

    python benchmarks/gate.py                      # PSNR and speed, 12 prompts
    python benchmarks/gate.py --follow 40          # and prompt following (lanskap mini score's 40)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

GATE_PSNR_DB = 25.0
FOLLOW_POINTS = 2.0
#: name → request fields (on top of full compute: every lever off).
LEVERS: dict[str, dict[str, object]] = {
    "full": {},
    "cache 2": {"cache_interval": 2},
    "cache 3": {"cache_interval": 3},
    "cache 4": {"cache_interval": 4},
    "cache 5": {"cache_interval": 5},
    "cache 2 from 30%": {"cache_interval": 2, "cache_start": 0.3},
    "cache 3 from 50% (balanced)": {"cache_interval": 3, "cache_start": 0.5},
    "cache 3 from 30% (fast)": {"cache_interval": 3, "cache_start": 0.3},
    "cache 4 from 50%": {"cache_interval": 4, "cache_start": 0.5},
    "tome 0.3 @2": {"token_merging": 0.3, "token_merging_downsample": 2},
    "tome 0.5 @2": {"token_merging": 0.5, "token_merging_downsample": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=12, help="held-out prompts for speed and PSNR")
    ap.add_argument("--follow", type=int, default=0, help="also prompt following over this many prompts")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps (lanskap mini score's 20)")
    ap.add_argument("--levers", default=",".join(LEVERS), help="from: " + ", ".join(LEVERS))
    args = ap.parse_args()
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest
    from lanskap.mini.follow import held_out_prompts, measure

    engine = Engine("lanskap-mini", fallback="none", speed_level="quality")
    prompts = [p for p, _ in held_out_prompts(args.prompts)]
    names = ["full", *(n for n in args.levers.split(",") if n != "full")]
    ref: dict[int, np.ndarray] = {}
    base_time = base_follow = 0.0
    head = f"{'lever':<30}{'s/image':>9}{'vs full':>9}{'PSNR dB':>9}{'worst':>7}"
    print(head + ("  follow %" if args.follow else ""))
    for name in names:
        fields = {"cache_interval": 0, "token_merging": 0.0, **LEVERS[name]}

        def generate(prompt: str, seed: int, fields: dict[str, object] = fields):  # type: ignore[no-untyped-def]
            req = GenerationRequest(prompt, seed=seed, steps=args.steps, watermark=False, **fields)  # type: ignore[arg-type]
            return engine.generate(req).images[0]

        scores, start = [], time.perf_counter()
        for i, prompt in enumerate(prompts):
            image = np.asarray(generate(prompt, 1 + i), np.float64)
            if name == "full":
                ref[i] = image
                continue
            mse = float(((image - ref[i]) ** 2).mean())
            scores.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
        seconds = (time.perf_counter() - start) / len(prompts)
        base_time = seconds if name == "full" else base_time
        mean, worst = (np.mean(scores), np.min(scores)) if scores else (float("inf"), float("inf"))
        line = f"{name:<30}{seconds:>9.2f}{seconds / base_time:>8.2f}x{mean:>9.1f}{worst:>7.1f}"
        if args.follow:
            rate = 100 * measure(generate, args.follow)[0].rate
            base_follow = rate if name == "full" else base_follow
            ok = mean >= GATE_PSNR_DB and rate >= base_follow - FOLLOW_POINTS
            line += f"{rate:>10.1f}  {'passes' if ok or name == 'full' else 'fails'}"
        print(line, flush=True)
    print(f"\nlanskap-mini, {args.steps} steps; a lever passes at PSNR >= {GATE_PSNR_DB:g} dB (mean) "
          f"and prompt following within {FOLLOW_POINTS:g} points of full compute")  # fmt: skip


if __name__ == "__main__":
    main()
