"""Panoramas: time and peak memory of a 3072x768 panorama against a single 768x768 picture, with the
stock diffusers StableDiffusionPipeline's single picture beside them.

Every arm runs in its own process, so its peak memory (CUDA: max allocated; CPU: peak RSS) is its
own. Without --model, SD 2.1's architecture with random weights (speed doesn't depend on the
weight values); with --mini, lanskap-mini (128 px) at 128x128 against 512x128, where the pictures
have structure and the seam column means something.

    python benchmarks/panorama.py --device cpu --steps 2          # SD 2.1-shaped, random weights
    python benchmarks/panorama.py --mini --steps 20               # lanskap-mini: the quality column
    python benchmarks/panorama.py --model /models/sd21 --device cuda --dtype fp16 --steps 25

Arms:
  stock-single     stock StableDiffusionPipeline at the native size (768, or 128 for --mini)
  lanskap-single   lanskap's engine at the same size
  lanskap-pano     lanskap's engine at four times the width: windows of the native size, half a
                   window apart, 4 at a time (MultiDiffusion, fused every step)
  stock-pano       diffusers' StableDiffusionPanoramaPipeline at the same canvas (fixed 512 px windows,
                   64 px apart): only with --stock-panorama; at 3072x768 it runs 205 windows a step

Columns: seconds per picture (text, every step, the VAE decode), peak memory, model calls (windows),
and the seam ratio (the mean column jump at the window seams over the picture's mean jump: about 1
means no seam); ratios: the panorama over the single picture, lanskap over stock.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from arms import child, run_arm
from PIL import Image

PROMPT = "a fantasy landscape, a castle on a cliff above a misty valley, concept art"


def _seam_ratio(image: Image.Image, window: int, stride: int) -> float:
    from lanskap.generation.panorama import starts

    d = np.abs(np.diff(np.asarray(image.convert("RGB"), np.float32), axis=1)).mean(axis=(0, 2))
    edges = {x + window - 1 for x in starts(image.width, window, stride, False)} - {image.width - 1}
    edges |= {x - 1 for x in starts(image.width, window, stride, False) if x}
    return float(d[sorted(edges)].mean() / d.mean()) if edges else 1.0


def _size(args: argparse.Namespace, pano: bool) -> tuple[int, int]:
    return (4 * args.native if pano else args.native), args.native


def _lanskap(args: argparse.Namespace, pano: bool) -> dict:
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine
    from lanskap.generation.panorama import Panorama
    from lanskap.generation.params import GenerationRequest

    engine = Engine(settings=Settings(home=Path(args.home), model=args.model, device=args.device, dtype=args.dtype))
    engine.load()
    w, h = _size(args, pano)
    calls = {"n": 0}
    hook = engine.load().pipe.unet.conv_in.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    req = GenerationRequest(PROMPT, seed=1, steps=args.steps, width=w, height=h, watermark=False,
                            panorama=Panorama(batch=4) if pano else None)  # fmt: skip
    t = time.perf_counter()
    out = engine.generate(req)
    seconds = time.perf_counter() - t
    hook.remove()
    image = out.images[0]
    seam = _seam_ratio(image, args.native, args.native // 2) if pano else None
    return {"seconds": seconds, "size": list(image.size), "calls": calls["n"], "seam": seam}


def _stock(args: argparse.Namespace, pano: bool) -> dict:
    import torch
    from diffusers import StableDiffusionPanoramaPipeline, StableDiffusionPipeline

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    cls = StableDiffusionPanoramaPipeline if pano else StableDiffusionPipeline
    pipe = cls.from_pretrained(args.model, torch_dtype=dtype).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    calls = {"n": 0}
    pipe.unet.conv_in.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    w, h = _size(args, pano)
    t = time.perf_counter()
    image = pipe(PROMPT, width=w, height=h, num_inference_steps=args.steps,
                 generator=torch.Generator("cpu").manual_seed(1)).images[0]  # fmt: skip
    seam = _seam_ratio(image, 512, 64) if pano else None
    return {"seconds": time.perf_counter() - t, "size": list(image.size), "calls": calls["n"], "seam": seam}


ARMS = {
    "stock-single": lambda a: _stock(a, False),
    "lanskap-single": lambda a: _lanskap(a, False),
    "lanskap-pano": lambda a: _lanskap(a, True),
    "stock-pano": lambda a: _stock(a, True),
}


def _print(arm: str, r: dict, ref: dict | None, what: str) -> None:
    if "error" in r or "skipped" in r:
        print(f"{arm:<16}  {r.get('error') or r.get('skipped')}")
        return
    size = "x".join(map(str, r["size"]))
    seam = f"{r['seam']:.2f}" if r.get("seam") is not None else "-"
    ratio = ""
    if ref and "seconds" in ref:
        ratio = f"   {what}: time {r['seconds'] / ref['seconds']:.2f}x, memory {r['peak_gib'] / ref['peak_gib']:.2f}x"
    print(f"{arm:<16}{size:>10}{r['seconds']:>10.1f}{r['peak_gib']:>10.2f}{r['calls']:>7}{seam:>7}{ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="A diffusers SD folder (default: SD 2.1's architecture, random weights)")
    ap.add_argument("--mini", action="store_true", help="lanskap-mini at 128 px (pictures with structure)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--stock-panorama", action="store_true", help="Also run diffusers' panorama pipeline")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--native", type=int, default=768, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        child(ARMS, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.home = args.home or str(Path(tmp) / "home")
        if args.mini:
            from lanskap.models.builtin import shipped

            args.model, args.native = str(shipped()), 128
        elif not args.model:
            from lanskap.models.reference import build_random_sd21

            cache = Path(os.environ.get("LANSKAP_BENCH_CACHE", Path(tempfile.gettempdir()) / "lanskap-sd21-random"))
            print(f"building SD 2.1-shaped random model in {cache} (first run only) …", flush=True)
            args.model = str(build_random_sd21(cache))
        print(f"model {args.model} · {args.device}/{args.dtype} · {args.steps} steps")
        print(f"{'arm':<16}{'size':>10}{'seconds':>10}{'peak GiB':>10}{'calls':>7}{'seam':>7}")
        results: dict[str, dict] = {}
        for arm in ARMS:
            if arm == "stock-pano" and not args.stock_panorama:
                results[arm] = {"skipped": "not run (--stock-panorama): fixed 512 px windows 64 px apart"}
            else:
                flags = ["--model", args.model, "--device", args.device, "--dtype", args.dtype, "--steps",
                         str(args.steps), "--home", args.home, "--native", str(args.native)]  # fmt: skip
                results[arm] = run_arm(__file__, arm, flags)
            ref, what = {"lanskap-single": ("stock-single", "lanskap/stock"),
                         "lanskap-pano": ("lanskap-single", "panorama/single"),
                         "stock-pano": ("lanskap-pano", "stock/lanskap")}.get(arm, (None, ""))  # fmt: skip
            _print(arm, results[arm], results.get(ref) if ref else None, what)


if __name__ == "__main__":
    main()
