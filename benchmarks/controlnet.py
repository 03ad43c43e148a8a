"""ControlNet: the cost of one and of two units per step against plain text-to-image, lanskap's
engine beside the stock diffusers pipelines (StableDiffusionPipeline, StableDiffusionControlNetPipeline
with one ControlNet and with a MultiControlNet of two), with peak memory.

Every arm runs in its own process, so its peak memory (CUDA: max allocated; CPU: peak RSS) is its
own. Without --model: SD 2.1's architecture with random weights, and a ControlNet made from its
UNet (``ControlNetModel.from_unet``, output convolutions randomised so that it acts); speed doesn't
depend on the weight values. Both sides use DDIM, the same seed, prompt, guidance and control map
(a canny map of a synthetic picture), so the quality column (PSNR of lanskap's picture against
stock's, same units) says whether lanskap's hook reproduces diffusers' ControlNet.

    python benchmarks/controlnet.py --device cpu --size 512 --steps 2
    python benchmarks/controlnet.py --device cuda --dtype fp16 --size 768 --steps 25

Columns: seconds for the job (the text, every step, the decode; models loaded beforehand), seconds
per step after the first, peak memory, then the step time against plain text-to-image of the same
implementation, and lanskap's step time against stock's for the same units.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from arms import child, run_arm
from PIL import Image, ImageDraw

PROMPT = "a fantasy landscape, a castle on a cliff above a misty valley, concept art"


def _picture(size: int) -> Image.Image:
    """A blockout: horizon, a mountain, a tower, whose edges a canny map picks up."""
    im = Image.new("RGB", (size, size), (90, 120, 170))
    d = ImageDraw.Draw(im)
    d.rectangle((0, size * 2 // 3, size, size), fill=(60, 90, 50))
    d.polygon([(0, size * 2 // 3), (size // 3, size // 4), (size * 2 // 3, size * 2 // 3)], fill=(110, 100, 95))
    d.rectangle(
        (size * 3 // 4 - size // 16, size // 3, size * 3 // 4 + size // 16, size * 2 // 3), fill=(200, 190, 170)
    )
    return im


def build_controlnet(model: str, out: Path) -> Path:
    """A ControlNet of the model's UNet with random (not zero) output convolutions, in fp16."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    net = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(model, subfolder="unet"))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(
                ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")
            ):
                p.normal_(0, 0.02)
    net.to(torch.float16).save_pretrained(str(out), safe_serialization=True)
    return out


def _control_map(size: int) -> Image.Image:
    from lanskap.control.preprocess import run

    return run(_picture(size), "canny", res=size)


def _lanskap(args: argparse.Namespace, units: int) -> dict:
    from lanskap.config import Settings
    from lanskap.control.units import ControlUnit
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest

    settings = Settings(home=Path(args.home), model=args.model, device=args.device, dtype=args.dtype,
                        speed_level="quality")  # fmt: skip
    engine = Engine(settings=settings)
    control = tuple(ControlUnit(_picture(args.size), module="canny", model="sd21-canny", processor_res=args.size)
                    for _ in range(units))  # fmt: skip
    req = GenerationRequest(PROMPT, seed=1, steps=args.steps, width=args.size, height=args.size, scheduler="DDIM",
                            watermark=False, control=control)  # fmt: skip
    engine.load()
    if control:
        engine.controls.net(engine.controls.resolve(control[0].validate()), engine.model.pipe.unet)
    marks: list[float] = []
    t = time.perf_counter()
    image = engine.generate(req, progress=lambda _: marks.append(time.perf_counter())).images[0]
    seconds = time.perf_counter() - t
    path = Path(args.home) / f"lanskap-{units}.png"
    image.save(path)
    return {"seconds": seconds, "step": _per_step(marks), "image": str(path)}


def _per_step(marks: list[float]) -> float:
    """Seconds per step after the first (which also pays for first-call set-up)."""
    return (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else float("nan")


def _stock(args: argparse.Namespace, units: int) -> dict:
    import torch
    from diffusers import (
        ControlNetModel,
        DDIMScheduler,
        MultiControlNetModel,
        StableDiffusionControlNetPipeline,
        StableDiffusionPipeline,
    )

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    extra: dict = {}
    if units == 0:
        pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype)
    else:
        net = ControlNetModel.from_pretrained(args.controlnet, torch_dtype=dtype)
        nets = net if units == 1 else MultiControlNetModel([net] * units)
        pipe = StableDiffusionControlNetPipeline.from_pretrained(args.model, controlnet=nets, torch_dtype=dtype)
        cmap = _control_map(args.size)
        extra = {"image": cmap if units == 1 else [cmap] * units}
    pipe = pipe.to(args.device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    marks: list[float] = []

    def mark(p, i, t, kw):  # type: ignore[no-untyped-def]
        marks.append(time.perf_counter())
        return kw

    t = time.perf_counter()
    gen = torch.Generator("cpu").manual_seed(1)
    image = pipe(PROMPT, width=args.size, height=args.size, num_inference_steps=args.steps, guidance_scale=7.5,
                 generator=gen, callback_on_step_end=mark, **extra).images[0]  # fmt: skip
    seconds = time.perf_counter() - t
    path = Path(args.home) / f"stock-{units}.png"
    image.save(path)
    return {"seconds": seconds, "step": _per_step(marks), "image": str(path)}


ARMS = {f"{side}-{n}": (lambda a, s=side, k=n: (_lanskap if s == "lanskap" else _stock)(a, k))
        for n in (0, 1, 2) for side in ("stock", "lanskap")}  # fmt: skip
LABELS = {0: "txt2img", 1: "1 ControlNet", 2: "2 ControlNets"}


def _psnr(a: str, b: str) -> float:
    x, y = (np.asarray(Image.open(p).convert("RGB"), np.float64) for p in (a, b))
    mse = float(((x - y) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def _report(results: dict[str, dict]) -> None:
    print(f"{'arm':<12}{'units':<15}{'seconds':>9}{'s/step':>8}{'peak GiB':>10}{'step vs txt2img':>17}"
          f"{'lanskap/stock':>15}{'PSNR vs stock':>15}")  # fmt: skip
    for name, r in results.items():
        side, n = name.rsplit("-", 1)
        if "error" in r:
            print(f"{side:<12}{LABELS[int(n)]:<15}  {r['error']}")
            continue
        base = results.get(f"{side}-0", {})
        vs = f"{r['step'] / base['step']:.2f}x" if "step" in base else "-"
        stock = results.get(f"stock-{n}", {})
        ratio = psnr = "-"
        if side == "lanskap" and "seconds" in stock:
            ratio = f"{r['step'] / stock['step']:.2f}x"
            psnr = f"{_psnr(r['image'], stock['image']):.1f} dB"
        print(f"{side:<12}{LABELS[int(n)]:<15}{r['seconds']:>9.1f}{r['step']:>8.2f}{r['peak_gib']:>10.2f}"
              f"{vs:>17}{ratio:>15}{psnr:>15}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="A diffusers SD 2.x folder (default: SD 2.1's architecture, random weights)")
    ap.add_argument("--controlnet", help="A diffusers ControlNet folder for it (default: one made from its UNet)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3, help="at least 2: the first step is not timed")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        child({k: v for k, v in ARMS.items()}, args)
        return
    cache = Path(os.environ.get("LANSKAP_BENCH_CACHE", Path(tempfile.gettempdir()) / "lanskap-sd21-random"))
    if not args.model:
        from lanskap.models.reference import build_random_sd21

        print(f"building SD 2.1-shaped random model in {cache} (first run only) …", flush=True)
        args.model = str(build_random_sd21(cache))
    args.controlnet = args.controlnet or str(build_controlnet(args.model, Path(f"{cache}-controlnet")))
    with tempfile.TemporaryDirectory() as tmp:
        args.home = str(Path(tmp) / "home")
        shutil.copytree(args.controlnet, Path(args.home) / "controlnet" / "sd21-canny")
        print(f"model {args.model} · {args.device}/{args.dtype} · {args.size}px · {args.steps} DDIM steps")
        flags = ["--model", args.model, "--controlnet", args.controlnet, "--device", args.device, "--dtype",
                 args.dtype, "--size", str(args.size), "--steps", str(args.steps), "--home", args.home]  # fmt: skip
        results = {arm: run_arm(__file__, arm, flags) for arm in ARMS}
        _report(results)


if __name__ == "__main__":
    main()
