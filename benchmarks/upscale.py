"""Upscaling: time and peak memory of tiled SD upscale against one untiled img2img pass (stock
diffusers), and of hires fix against a direct generation at the large size (stock diffusers).

Every arm runs in its own process, so its peak memory (CUDA: max allocated; CPU: peak RSS) is its
own. Without --model a tiny random-weight SD model of the real classes is built (lanskap models
make-tiny): the sizes and the tiling are what is measured, not the pictures' quality.

    python benchmarks/upscale.py                      # CPU, tiny model: 2x and 4x SD upscale, hires 768→1536
    python benchmarks/upscale.py --model /models/sd21 --device cuda --steps 20

Arms:
  sdup-2x-tiled      lanskap: Lanczos 2x, then SD upscale in 512 px tiles (overlap 64), 768 → 1536
  sdup-2x-untiled    stock StableDiffusionImg2ImgPipeline: the same Lanczos 2x picture in one pass
  sdup-4x-tiled      lanskap: 1024 → 4096, tiled as above
  sdup-4x-untiled    one 4096 px pass: run only with --untiled-4x (with plain attention, one map of
                     SD's highest-resolution blocks is 256 GiB; memory-efficient attention on a GPU
                     avoids that map, but not the time)
  hires              lanskap: 768 px first pass, Latent upscale to 1536, second pass at denoise 0.5
  direct-1536        stock StableDiffusionPipeline straight at 1536 px

Quality column: for tiled results, the seam ratio (the largest mean column/row jump at a tile's edge
divided by the picture's 95th-percentile jump; about 1 or below means no visible grid).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from arms import child, run_arm
from PIL import Image

PROMPT = "a fantasy landscape, a castle on a cliff above a misty valley, concept art"


def _source(side: int) -> Image.Image:
    rng = np.random.default_rng(0)
    base = rng.random((side // 16, side // 16, 3)) * 255
    return Image.fromarray(base.astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)


def _seam_ratio(image: Image.Image, tile: int, overlap: int) -> float:
    from lanskap.upscale.tiles import grid

    arr = np.asarray(image.convert("L"), np.float32)
    cols, rows = np.abs(np.diff(arr, axis=1)).mean(axis=0), np.abs(np.diff(arr, axis=0)).mean(axis=1)
    boxes = grid(image.width, image.height, tile, tile, overlap)
    xe = {b.x + b.w - 1 for b in boxes} | {b.x - 1 for b in boxes}
    ye = {b.y + b.h - 1 for b in boxes} | {b.y - 1 for b in boxes}
    xe = [x for x in xe if 0 <= x < len(cols)]
    ye = [y for y in ye if 0 <= y < len(rows)]
    worst = max([cols[x] for x in xe] + [rows[y] for y in ye] + [0.0])
    return float(worst) / max(1e-6, float(np.percentile(np.concatenate([cols, rows]), 95)))


def _lanskap_sd_upscale(args: argparse.Namespace, side: int, scale: int) -> dict:
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest
    from lanskap.generation.upscale_params import TiledPass, UpscaleRequest
    from lanskap.jobs.upscale import UpscaleSource, run_upscale

    engine = Engine(settings=Settings(home=Path(args.home), model=args.model, device=args.device, dtype=args.dtype))
    engine.load()
    tiled = TiledPass(GenerationRequest(PROMPT, seed=1, steps=args.steps, width=512, height=512), 0.5, 64)
    t = time.perf_counter()
    request = UpscaleRequest("Lanczos", scale, tiled=tiled, watermark=False)
    out = run_upscale(engine, [UpscaleSource(_source(side))], request, Path(args.home) / "out")
    seconds = time.perf_counter() - t
    image = out.images[0]
    return {"seconds": seconds, "size": list(image.size), "seam": _seam_ratio(image, 512, 64)}


def _stock_img2img(args: argparse.Namespace, side: int, scale: int) -> dict:
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(args.model, torch_dtype=dtype).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    big = _source(side).resize((side * scale, side * scale), Image.Resampling.LANCZOS)
    t = time.perf_counter()
    image = pipe(PROMPT, image=big, strength=0.5, num_inference_steps=args.steps,
                 generator=torch.Generator("cpu").manual_seed(1)).images[0]  # fmt: skip
    return {"seconds": time.perf_counter() - t, "size": list(image.size), "seam": None}


def _hires(args: argparse.Namespace) -> dict:
    from lanskap.config import Settings
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest, HiresFix

    engine = Engine(settings=Settings(home=Path(args.home), model=args.model, device=args.device, dtype=args.dtype))
    engine.load()
    req = GenerationRequest(PROMPT, seed=1, steps=args.steps, width=768, height=768, watermark=False,
                            hires=HiresFix(scale=2, upscaler="Latent", denoise=0.5))  # fmt: skip
    t = time.perf_counter()
    image = engine.generate(req).images[0]
    return {"seconds": time.perf_counter() - t, "size": list(image.size), "seam": None}


def _direct(args: argparse.Namespace) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    t = time.perf_counter()
    image = pipe(PROMPT, width=1536, height=1536, num_inference_steps=args.steps,
                 generator=torch.Generator("cpu").manual_seed(1)).images[0]  # fmt: skip
    return {"seconds": time.perf_counter() - t, "size": list(image.size), "seam": None}


ARMS = {
    "sdup-2x-tiled": lambda a: _lanskap_sd_upscale(a, 768, 2),
    "sdup-2x-untiled": lambda a: _stock_img2img(a, 768, 2),
    "sdup-4x-tiled": lambda a: _lanskap_sd_upscale(a, 1024, 4),
    "sdup-4x-untiled": lambda a: _stock_img2img(a, 1024, 4),
    "hires": _hires,
    "direct-1536": _direct,
}
PAIRS = [("sdup-2x-tiled", "sdup-2x-untiled"), ("sdup-4x-tiled", "sdup-4x-untiled"), ("hires", "direct-1536")]


def _untiled_4x_estimate_gib() -> float:
    """One self-attention map of SD's highest-resolution blocks at 4096 px, fp32, one head."""
    tokens = (4096 // 8) ** 2
    return tokens * tokens * 4 / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="A diffusers SD folder (default: a tiny random model, built here)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--untiled-4x", action="store_true", help="Also try the 4096 px untiled pass")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        child(ARMS, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.home = args.home or str(Path(tmp) / "home")
        if not args.model:
            from lanskap.models.tiny import make_tiny

            args.model = str(make_tiny(Path(tmp) / "tiny-sd", "sd"))
        print(f"model {args.model} · {args.device}/{args.dtype} · {args.steps} steps")
        print(f"{'arm':<17}{'size':>11}{'seconds':>10}{'peak GiB':>10}{'seam':>7}   ratio (lanskap / stock)")
        results: dict[str, dict] = {}
        for first, second in PAIRS:
            for arm in (first, second):
                if arm == "sdup-4x-untiled" and not args.untiled_4x:
                    gib = _untiled_4x_estimate_gib()
                    results[arm] = {"skipped": f"not run (--untiled-4x): one plain attention map is {gib:.0f} GiB"}
                else:
                    flags = ["--model", args.model, "--device", args.device, "--dtype", args.dtype,
                             "--steps", str(args.steps), "--home", args.home]  # fmt: skip
                    results[arm] = run_arm(__file__, arm, flags)
                _print(arm, results[arm], results.get(first) if arm == second else None)


def _print(arm: str, r: dict, partner: dict | None) -> None:
    if "error" in r or "skipped" in r:
        print(f"{arm:<17}  {r.get('error') or r.get('skipped')}")
        return
    size = "x".join(map(str, r["size"]))
    seam = f"{r['seam']:.2f}" if r.get("seam") is not None else "-"
    ratio = ""
    if partner and "seconds" in partner:
        ratio = f"   time {partner['seconds'] / r['seconds']:.2f}x, memory {partner['peak_gib'] / r['peak_gib']:.2f}x"
    print(f"{arm:<17}{size:>11}{r['seconds']:>10.1f}{r['peak_gib']:>10.2f}{seam:>7}{ratio}")


if __name__ == "__main__":
    main()
