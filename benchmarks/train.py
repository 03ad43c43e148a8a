"""Training throughput and memory: lanskap's trainer against the diffusers LoRA example's approach.

Both run in one invocation on the full SD 2.1 architecture (the real weights with
--model, otherwise random weights of the same shapes: speed doesn't depend on the
values), with the thesis's settings: rank 16 on the attention projections, batch 1,
gradient accumulation 4, fp16 mixed precision on CUDA (fp32 on CPU).

    python benchmarks/train.py                                   # CUDA: 768 px
    python benchmarks/train.py --device cpu --resolution 256 --accum 1 --steps 2 --warmup 1
    python benchmarks/train.py --family sdxl --resolution 1024 --variants example,lanskap,lanskap-lean   # SDXL, GPU

With --family sdxl the architecture is SDXL 1.0's and the example is diffusers'
train_text_to_image_lora_sdxl.py: VAE in fp32 and both text encoders every step, the pooled text
and size ids into the UNet, no gradient checkpointing; lanskap-lean is the lean preset.

Variants, each in its own process so peak memory is its own:
  example          the loop of diffusers' train_text_to_image_lora.py: VAE and text encoder
                   every step, no gradient checkpointing (the thesis passed none)
  lanskap          lanskap's trainer, thesis preset, cached latents and text embeddings,
                   gradient checkpointing (the low-memory default)
  lanskap-fast     the same without gradient checkpointing
  lanskap-uncached lanskap without cached latents and text embeddings (VAE and text encoder every step)
  lanskap-adamw    lanskap with plain AdamW (on CUDA the default picks 8-bit AdamW when bitsandbytes is there)
  lanskap-ti       textual inversion (4 vectors): the text encoder runs every step, with gradients to its input
  lanskap-dreambooth       DreamBooth with LoRA and prior preservation (a class picture per instance picture)
  lanskap-dreambooth-full  DreamBooth fine-tuning every UNet weight, with prior preservation
It prints seconds per optimizer step, steps per second, peak memory and the ratio to the example
and to lanskap's LoRA.
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

#: DreamBooth's prompts; two class pictures, made (untimed) before training with two sampling steps.
DREAMBOOTH = {"instance_prompt": "a photo of sks castle", "class_prompt": "a photo of a castle",
              "prior_preservation": True, "num_class_images": 2, "class_inference_steps": 2}  # fmt: skip
#: lanskap variants: the trainer's memory and speed options, one change each from "lanskap".
LANSKAP_VARIANTS: dict[str, dict[str, object]] = {
    "lanskap": {},
    "lanskap-fast": {"gradient_checkpointing": False},
    "lanskap-uncached": {"cache_latents": False, "cache_text_embeddings": False},
    "lanskap-adamw": {"optimizer": "adamw"},  # on CUDA "auto" picks 8-bit AdamW when bitsandbytes is there
    "lanskap-ti": {"method": "textual-inversion", "token": "<bench>", "vectors": 4, "cache_text_embeddings": False},
    "lanskap-dreambooth": {"method": "dreambooth", **DREAMBOOTH},
    "lanskap-dreambooth-full": {"method": "dreambooth", "full": True, **DREAMBOOTH},
    "lanskap-lean": {"preset": "lean"},  # SDXL's memory-lean preset (the values below it still apply)
}
VARIANTS = ("example", *LANSKAP_VARIANTS)
DEFAULT_VARIANTS = "example,lanskap,lanskap-fast,lanskap-uncached"


def make_images(folder: Path, n: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"a fantasy landscape with a castle, view {i}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def peak_memory_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (process peak RSS)


def run_example(args: argparse.Namespace, data: Path) -> list[float]:
    """diffusers' train_text_to_image_lora.py, reduced to its training step, with the thesis's flags."""
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    mp = "fp16" if args.device == "cuda" else "no"
    accelerator = Accelerator(mixed_precision=mp, gradient_accumulation_steps=args.accum, cpu=args.device == "cpu")
    dtype = torch.float16 if mp == "fp16" else torch.float32
    m = args.model
    noise_scheduler = DDPMScheduler.from_pretrained(m, subfolder="scheduler")
    tokenizer = CLIPTokenizer.from_pretrained(m, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(m, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(m, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(m, subfolder="unet")
    for mod in (unet, vae, text_encoder):
        mod.requires_grad_(False)
        mod.to(accelerator.device, dtype=dtype)
    targets = ["to_k", "to_q", "to_v", "to_out.0"]
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=targets))
    if mp == "fp16":
        cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    unet, optimizer = accelerator.prepare(unet, optimizer)

    def loss_of(pixels: torch.Tensor) -> torch.Tensor:
        latents = vae.encode(pixels.to(dtype)).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,), device=latents.device).long()
        noisy = noise_scheduler.add_noise(latents, noise, t)
        ids = tokenizer(
            "a fantasy landscape", max_length=77, padding="max_length", truncation=True, return_tensors="pt"
        ).input_ids.to(accelerator.device)
        hidden = text_encoder(ids, return_dict=False)[0]
        target = noise_scheduler.get_velocity(latents, noise, t)
        pred = unet(noisy, t, hidden, return_dict=False)[0]
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    return timed_steps(args, data, accelerator, unet, optimizer, params, loss_of)


def timed_steps(args: argparse.Namespace, data: Path, accelerator, unet, optimizer, params, loss_of) -> list[float]:  # type: ignore[no-untyped-def]
    """The example scripts' loop (accumulate, clip, step), timed per optimizer step; ``loss_of`` takes
    one augmented picture's pixels (fp32, on the device) and returns its loss."""
    import random

    from lanskap.data.augment import Augment, augment
    from lanskap.training.batches import to_tensor

    files = sorted(data.glob("*.png"))
    aug = Augment(args.resolution, random_crop=True, flip=True)
    rng = random.Random(0)
    times, tick, micro = [], None, 0
    total = (args.warmup + args.steps) * args.accum
    unet.train()
    while micro < total:
        with accelerator.accumulate(unet):
            view, _ = augment(Image.open(files[micro % len(files)]), aug, rng)
            loss = loss_of(to_tensor(view)[None].to(accelerator.device, torch.float32))
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad()
        micro += 1
        if accelerator.sync_gradients:
            if args.device == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if tick is not None:
                times.append(now - tick)
            tick = now
    return times[args.warmup - 1 :] if args.warmup else times


def run_example_sdxl(args: argparse.Namespace, data: Path) -> list[float]:
    """diffusers' train_text_to_image_lora_sdxl.py, reduced to its training step: the VAE (fp32, as
    the script keeps SDXL's) and both text encoders run every step; the UNet gets the pooled text
    and the six size numbers."""
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    mp = "fp16" if args.device == "cuda" else "no"
    accelerator = Accelerator(mixed_precision=mp, gradient_accumulation_steps=args.accum, cpu=args.device == "cpu")
    dtype = torch.float16 if mp == "fp16" else torch.float32
    m = args.model
    noise_scheduler = DDPMScheduler.from_pretrained(m, subfolder="scheduler")
    unet = UNet2DConditionModel.from_pretrained(m, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(m, subfolder="vae")
    pipe = StableDiffusionXLPipeline.from_pretrained(m, unet=unet, vae=vae, add_watermarker=False)
    encoders = (pipe.text_encoder, pipe.text_encoder_2)
    for mod in (unet, *encoders):
        mod.requires_grad_(False)
        mod.to(accelerator.device, dtype=dtype)
    vae.requires_grad_(False)
    vae.to(accelerator.device, dtype=torch.float32)
    targets = ["to_k", "to_q", "to_v", "to_out.0"]
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=targets))
    if mp == "fp16":
        cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    size = args.resolution
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=accelerator.device, dtype=dtype)

    def loss_of(pixels: torch.Tensor) -> torch.Tensor:
        latents = (vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor).to(dtype)
        noise = torch.randn_like(latents)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,), device=latents.device).long()
        noisy = noise_scheduler.add_noise(latents, noise, t)
        with torch.no_grad():
            hidden, _, pooled, _ = pipe.encode_prompt("a fantasy landscape", device=accelerator.device,
                                                      do_classifier_free_guidance=False)  # fmt: skip
        cond = {"text_embeds": pooled, "time_ids": time_ids}
        pred = unet(noisy, t, hidden, added_cond_kwargs=cond, return_dict=False)[0]
        return torch.nn.functional.mse_loss(pred.float(), noise.float())

    return timed_steps(args, data, accelerator, unet, optimizer, params, loss_of)


def run_lanskap(args: argparse.Namespace, data: Path, overrides: dict[str, object]) -> list[float]:
    from lanskap.config import Settings
    from lanskap.training import build_config, train

    out = Path(tempfile.mkdtemp(prefix="lanskap-bench-"))
    overrides = dict(overrides)
    preset = str(overrides.pop("preset", "thesis"))
    cfg = build_config(
        preset,
        None,
        {
            "data": str(data),
            "out": str(out / "run"),
            "model": args.model,
            "resolution": args.resolution,
            "gradient_accumulation_steps": args.accum,
            "max_train_steps": args.warmup + args.steps,
            "checkpointing_steps": 10_000,
            "validation_prompt": [],
            "validation_loss": False,
            "report_to": "none",
            "center_crop": True,
            "cache_latents": True,
            "cache_text_embeddings": True,
            "gradient_checkpointing": True,
            "dataloader_num_workers": 0,
            "mixed_precision": "fp16" if args.device == "cuda" else "no",
            **overrides,
        },
    )
    train(cfg, Settings(home=out / "home", device=args.device))
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return [r["seconds"] for r in rows if "seconds" in r][args.warmup :]


def child(args: argparse.Namespace) -> None:
    data = make_images(Path(tempfile.mkdtemp(prefix="lanskap-bench-data-")), 8, args.resolution)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.variant == "example":
        times = run_example_sdxl(args, data) if args.family == "sdxl" else run_example(args, data)
    else:
        times = run_lanskap(args, data, LANSKAP_VARIANTS[args.variant])
    print(json.dumps({"variant": args.variant, "times": times, "peak_gib": peak_memory_gib(args.device)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a diffusers SD 2.1 folder; default: random weights, SD 2.1 shapes")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--family", choices=("sd21", "sdxl"), default="sd21", help="the random stand-in's architecture")
    ap.add_argument("--resolution", type=int, default=768)
    ap.add_argument("--accum", type=int, default=4, help="gradient accumulation steps (thesis: 4)")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"from {', '.join(VARIANTS)}")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        child(args)
        return
    if not args.model:
        from lanskap.models.reference import build_random_sd21, build_random_sdxl

        build, label = (build_random_sdxl, "SDXL") if args.family == "sdxl" else (build_random_sd21, "SD 2.1")
        default = Path(tempfile.gettempdir()) / f"lanskap-{args.family}-random"
        cache = Path(os.environ.get("LANSKAP_BENCH_CACHE", default))
        print(f"building {label}-shaped random model in {cache} (first run only) …", flush=True)
        args.model = str(build(cache))
    results = {}
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--device", args.device,
               "--resolution", str(args.resolution), "--accum", str(args.accum), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--family", args.family]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if proc.returncode or line is None:
            print(f"{variant}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results[variant] = json.loads(line)
    if "example" not in results:
        sys.exit("the example variant failed; no ratio to report")
    base = float(np.median(results["example"]["times"]))
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {os.cpu_count()} threads"
    print(f"\n{gpu}; torch {torch.__version__}; {args.resolution} px, batch 1, accumulation {args.accum}, rank 16")
    lora = float(np.median(results["lanskap"]["times"])) if "lanskap" in results else None
    print(f"{'variant':<25}{'s/step':>9}{'steps/s':>9}{'peak GiB':>10}{'vs example':>12}{'vs LoRA':>10}")
    for name, r in results.items():
        t = float(np.median(r["times"]))
        vs_lora = f"{t / lora:>9.2f}x" if lora else f"{'-':>10}"
        print(f"{name:<25}{t:>9.3f}{1 / t:>9.3f}{r['peak_gib']:>10.2f}{t / base:>11.2f}x{vs_lora}")
    if args.json:
        record = {"device": gpu, "args": {k: str(v) for k, v in vars(args).items()}, **results}
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
