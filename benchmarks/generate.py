"""Generation speed: lanskap's engine against the stock diffusers pipeline, side by side.

Both run in one invocation on the full SD 2.1 architecture, or SDXL 1.0's with --family sdxl
(the real weights with --model, otherwise random weights of the same shapes: speed doesn't depend
on the weight values), with the same prompt, size and number of steps. The stock pipeline is
StableDiffusionPipeline, or StableDiffusionXLPipeline (its own invisible watermark off, as
lanskap's is here).

    python benchmarks/generate.py                                          # CUDA: 512 and 768 px, 25 steps
    python benchmarks/generate.py --device cpu --sizes 512 --steps 3 --warmup-steps 1
    python benchmarks/generate.py --family sdxl --sizes 1024 --steps 25 --dtype fp16   # SDXL on a GPU

Variants, each in its own process so that its peak memory is its own:
  stock            StableDiffusionPipeline.from_pretrained(model).to(device) with its defaults
                   (fp32, its default attention), called with a prompt: where a user starts
  lanskap          lanskap's Engine with its defaults for the device (dtype, levers)
  lanskap-fp32     lanskap with fp32 and every lever off: the reference image for the quality check
  lanskap-compile  lanskap with torch.compile on the UNet (timed after a warm-up that compiles)
  lanskap-channels-last, lanskap-bf16, lanskap-fused-lora (with --lora): one lever each

It prints the median time per denoising step, the UNet's achieved TFLOP/s (FLOPs counted with
torch's FlopCounterMode on the meta device) and, with --peak-tflops, how many times the compute
bound each step takes; seconds per image (text encoding, all steps and the VAE decode), images per
minute, peak memory, the ratio to stock, and for every lanskap
variant the PSNR and largest pixel difference against lanskap-fp32 (same seed, same sampler):
a lever counts as keeping the image when PSNR >= 30 dB (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PROMPT = "a fantasy landscape, a castle on a cliff above a misty valley, two moons, concept art"
SAME_IMAGE_PSNR_DB = 30.0
GATE_PSNR_DB = 25.0  # the quality gate's floor for step-changing levers (benchmarks/gate.py)
FULL = {"speed_level": "quality"}  # full compute: no step-changing lever
VARIANTS: dict[str, dict[str, object] | None] = {
    "stock": None,
    "lanskap": {},
    "lanskap-fp32": {"dtype": "fp32", "channels_last": "off", "fuse_lora": "off", "low_memory": "off", **FULL},
    "lanskap-quality": FULL,
    "lanskap-fast": {"speed_level": "fast"},
    "lanskap-compile": {"compile": True},
    "lanskap-channels-last": {"channels_last": "on"},
    "lanskap-bf16": {"dtype": "bf16"},  # on CPUs without native bf16 this one is very slow
    "lanskap-fused-lora": {"fuse_lora": "on"},
    # One step-changing lever each (generation/levers.py), and the combinations.
    "lanskap-cache2": {**FULL, "cache_interval": 2},
    "lanskap-cache3": {**FULL, "cache_interval": 3},
    "lanskap-cache5": {**FULL, "cache_interval": 5},
    "lanskap-tome0.3": {**FULL, "token_merging": 0.3},
    "lanskap-tome0.5": {**FULL, "token_merging": 0.5},
    "lanskap-cache3-tome0.5": {**FULL, "cache_interval": 3, "token_merging": 0.5},
    "lanskap-balanced-tome0.3": {"speed_level": "balanced", "token_merging": 0.3},
}
#: Keys of a variant that are request fields, not settings.
REQUEST_KEYS = ("cache_interval", "token_merging", "token_merging_downsample")
DEFAULT_VARIANTS = "stock,lanskap,lanskap-fp32"


def peak_memory_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (process peak RSS)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepClock:
    """Timestamps at every step end, to time the denoising steps apart from encoding and decoding."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.stamps: list[float] = []

    def start(self) -> None:
        sync(self.device)
        self.stamps = [time.perf_counter()]

    def tick(self) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())

    def step_times(self) -> list[float]:
        # The first interval also holds the prompt encoding and set-up; the rest are pure steps.
        d = np.diff(self.stamps)
        return list(d[1:] if len(d) > 1 else d)


def run_stock(args: argparse.Namespace, size: int, steps: int, clock: StepClock, lora: str | None) -> Image.Image:
    """The stock pipeline, loaded once per process (cached on the function)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe = getattr(run_stock, "pipe", None)
    if pipe is None:
        # dtype fp32: what the hub's SD 2.1 weights load as by default (the random stand-in is stored
        # in fp16 to save disk, which would otherwise make the stock pipeline fp16 on its own);
        # --dtype fp16 for both sides on a GPU, as SDXL is usually run there.
        dtype = torch.float16 if args.dtype == "fp16" else torch.float32
        if args.family == "sdxl":
            pipe = StableDiffusionXLPipeline.from_pretrained(args.model, dtype=dtype, add_watermarker=False)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                args.model, dtype=dtype, safety_checker=None, requires_safety_checker=False
            )
        pipe = pipe.to(args.device)
        pipe.set_progress_bar_config(disable=True)
        if lora:
            pipe.load_lora_weights(str(Path(lora).parent), weight_name=Path(lora).name)
        run_stock.pipe = pipe  # type: ignore[attr-defined]

    def on_step(p, i, t, kw):  # type: ignore[no-untyped-def]
        clock.tick()
        return kw

    clock.start()
    out = pipe(
        PROMPT,
        height=size,
        width=size,
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        callback_on_step_end=on_step,
    )
    return out.images[0]


def run_lanskap(
    args: argparse.Namespace, size: int, steps: int, clock: StepClock, lora: str | None, overrides: dict
) -> Image.Image:
    from lanskap.config import load_settings
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest, LoraSpec

    lever_fields = {k: v for k, v in overrides.items() if k in REQUEST_KEYS}
    engine = getattr(run_lanskap, "engine", None)
    if engine is None:
        setting_values = {k: v for k, v in overrides.items() if k not in REQUEST_KEYS}
        if args.dtype and "dtype" not in setting_values:
            setting_values["dtype"] = args.dtype
        settings = load_settings(model=args.model, device=args.device, **setting_values)
        engine = Engine(settings=settings)
        engine.load()
        run_lanskap.engine = engine  # type: ignore[attr-defined]
    loras = (LoraSpec(lora, 1.0),) if lora else ()
    request = GenerationRequest(
        PROMPT, steps=steps, width=size, height=size, seed=args.seed, loras=loras, watermark=False, **lever_fields
    )
    clock.start()
    result = engine.generate(request, progress=lambda p: clock.tick())
    if steps == args.steps:  # the timed run: its load-time and step-changing levers, in words
        from lanskap.generation.levers import summary

        loaded = engine.model
        print(f"levers: {loaded.placement.dtype_name}, {loaded.speed.summary()}; {summary(result.request)}",
              file=sys.stderr)  # fmt: skip
    return result.images[0]


def child(args: argparse.Namespace) -> None:
    """One variant: warm up, then time every size; print one JSON line."""
    overrides = VARIANTS[args.variant]
    clock = StepClock(args.device)
    out: dict[str, object] = {"variant": args.variant, "sizes": {}}

    def run(size: int, steps: int) -> Image.Image:
        if overrides is None:
            return run_stock(args, size, steps, clock, args.lora)
        return run_lanskap(args, size, steps, clock, args.lora, overrides)

    for size in args.sizes:
        if args.warmup_steps:
            run(size, args.warmup_steps)  # loads the model, compiles kernels, fills caches
        sync(args.device)
        t = time.perf_counter()
        image = run(size, args.steps)
        sync(args.device)
        seconds = time.perf_counter() - t
        path = Path(args.images) / f"{args.variant}-{size}.png"
        image.save(path)
        out["sizes"][size] = {"step": float(np.median(clock.step_times())), "image": seconds, "png": str(path)}  # type: ignore[index]
    out["peak_gib"] = peak_memory_gib(args.device)
    if args.follow and overrides is not None:
        out["follow"] = follow_score(args, overrides)
    print(json.dumps(out))


def follow_score(args: argparse.Namespace, overrides: dict) -> float:
    """The variant's lanskap-mini prompt following (``lanskap mini score``'s measure), 0-100."""
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest
    from lanskap.mini.follow import measure

    lever_fields = {k: v for k, v in overrides.items() if k in REQUEST_KEYS}
    level = str(overrides.get("speed_level", "balanced"))
    engine = Engine("lanskap-mini", device=args.device, fallback="none", speed_level=level)

    def generate(prompt: str, seed: int) -> Image.Image:
        req = GenerationRequest(prompt, seed=seed, steps=20, watermark=False, **lever_fields)  # mini score's own
        return engine.generate(req).images[0]

    report, _ = measure(generate, args.follow)
    return 100 * report.rate


def unet_flops(model: str, size: int) -> float:
    """FLOPs of one denoising step (one UNet call on the CFG batch of 2), counted on the meta device."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    config = UNet2DConditionModel.load_config(model, subfolder="unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        x = torch.empty(2, unet.config.in_channels, size // 8, size // 8)
        cond = torch.empty(2, 77, unet.config.cross_attention_dim)
        extra = {}
        if unet.config.addition_embed_type == "text_time":  # SDXL: the pooled text and six size numbers
            pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            extra = {"added_cond_kwargs": {"text_embeds": torch.empty(2, pooled), "time_ids": torch.empty(2, 6)}}
        with FlopCounterMode(display=False) as counter:
            unet(x, torch.tensor([500]), encoder_hidden_states=cond, **extra)
    return float(counter.get_total_flops())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="diffusers folder (default: SD 2.1's architecture with random weights)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--family", choices=("sd21", "sdxl"), default="sd21", help="the random stand-in's architecture")
    ap.add_argument("--dtype", choices=("fp16", "fp32"), help="both sides' precision [each one's default]")
    ap.add_argument("--sizes", default="512,768", help="square sizes in px, comma-separated")
    ap.add_argument("--steps", type=int, default=25, help="timed denoising steps per image")
    ap.add_argument("--warmup-steps", type=int, default=2, help="an untimed image with this many steps first")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lora", help="a LoRA .safetensors to apply in every variant")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"from {', '.join(VARIANTS)}")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense peak (e.g. 989 for an H200 in fp16)")
    ap.add_argument("--follow", type=int, default=0, help="also score each variant's prompt following on "
                    "lanskap-mini with this many held-out prompts (40: lanskap mini score's own)")  # fmt: skip
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--images", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.sizes = [int(s) for s in str(args.sizes).split(",")] if isinstance(args.sizes, str) else args.sizes
    if args.variant:
        child(args)
        return
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or "stock" not in names:
        sys.exit(f"unknown variant(s) {unknown}" if unknown else "the stock variant is needed for the ratio")
    if not args.model:
        from lanskap.models.reference import build_random_sd21, build_random_sdxl

        build, label = (build_random_sdxl, "SDXL") if args.family == "sdxl" else (build_random_sd21, "SD 2.1")
        default = Path(tempfile.gettempdir()) / f"lanskap-{args.family}-random"
        cache = Path(os.environ.get("LANSKAP_BENCH_CACHE", default))
        print(f"building {label}-shaped random model in {cache} (first run only) …", flush=True)
        args.model = str(build(cache))
    images = Path(tempfile.mkdtemp(prefix="lanskap-bench-"))
    results: dict[str, dict] = {}
    for name in names:
        print(f"running {name} …", flush=True)
        cmd = [sys.executable, __file__, "--variant", name, "--model", args.model, "--device", args.device,
               "--sizes", ",".join(map(str, args.sizes)), "--steps", str(args.steps),
               "--warmup-steps", str(args.warmup_steps), "--seed", str(args.seed), "--images", str(images),
               "--follow", str(args.follow), "--family", args.family]  # fmt: skip
        if args.dtype:
            cmd += ["--dtype", args.dtype]
        if args.lora:
            cmd += ["--lora", args.lora]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "LANSKAP_HOME": str(images / "home")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if proc.returncode or line is None:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        levers = [ln for ln in proc.stderr.splitlines() if ln.startswith("levers:")]
        results[name] = {**json.loads(line), "levers": levers[0][8:] if levers else "diffusers defaults"}
        if args.json:  # after every variant, so an interrupted run keeps what it measured
            args.json.write_text(json.dumps({"partial": True, "results": results}, indent=2))
    if "stock" not in results:
        sys.exit("the stock variant failed; no ratio to report")
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{where}; torch {torch.__version__}; {args.steps} steps; prompt batch 1 with CFG")
    flops = {str(size): unet_flops(args.model, size) for size in args.sizes}
    print(", ".join(f"{size} px: {f / 1e12:.2f} TFLOP per step" for size, f in flops.items()))
    head = f"{'variant':<22}{'px':>5}{'s/step':>9}{'TFLOP/s':>9}{'s/image':>9}{'img/min':>9}{'peak GiB':>10}"
    bound = f"{'x bound':>9}" if args.peak_tflops else ""
    follow = f"{'follow %':>9}" if args.follow else ""
    print(head + f"{'vs stock':>10}{bound}{'PSNR dB':>9}{'max diff':>9}{follow}  levers")
    for name, r in results.items():
        for size, t in r["sizes"].items():
            t["tflops"] = flops[size] / t["step"] / 1e12
            if args.peak_tflops:  # how far the step is from the compute bound (1.0 = at peak)
                t["x_bound"] = t["step"] / (flops[size] / (args.peak_tflops * 1e12))
            stock = results["stock"]["sizes"][size]
            quality = ""
            ref = results.get("lanskap-fp32", {}).get("sizes", {}).get(size)
            if name.startswith("lanskap") and ref:
                a, b = np.asarray(Image.open(t["png"])), np.asarray(Image.open(ref["png"]))
                t["psnr"], t["max_diff"] = psnr(a, b), int(np.abs(a.astype(int) - b.astype(int)).max())
                quality = f"{t['psnr']:>9.1f}{t['max_diff']:>9}"
            xb = f"{t['x_bound']:>8.2f}x" if args.peak_tflops else ""
            if not quality:
                quality = " " * 18
            score = (f"{r['follow']:>9.1f}" if "follow" in r else " " * 9) if args.follow else ""
            print(
                f"{name:<22}{size:>5}{t['step']:>9.3f}{t['tflops']:>9.3f}{t['image']:>9.2f}{60 / t['image']:>9.2f}"
                f"{r['peak_gib']:>10.2f}{t['image'] / stock['image']:>9.2f}x{xb}{quality}{score}  {r['levers']}"
            )
    print(f"\nratio = time per image / stock's; a load-time lever keeps the image at PSNR >= {SAME_IMAGE_PSNR_DB:g}")
    print(f"a step-changing lever passes the gate at PSNR >= {GATE_PSNR_DB:g} dB on lanskap-mini and follow % within 2")
    print(f"images: {images}")
    if args.json:
        record = {"device": where, "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()}}
        args.json.write_text(json.dumps({**record, "results": results}, indent=2))


if __name__ == "__main__":
    main()
