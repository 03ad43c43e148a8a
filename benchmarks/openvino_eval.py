"""OpenVINO on this CPU: does running the UNet through OpenVINO (fp32, or int8-compressed weights) pay?

The issue asks for optimum-intel's OpenVINO pipelines. They can't be installed beside lanskap:
optimum-intel 2.x (the releases for OpenVINO 2026) require torchvision, which has no CPU build
here and breaks transformers, and transformers < 5.6; the newest release that installs without
torchvision (1.15) imports ``openvino.runtime``, which OpenVINO 2026 removed, so its pipelines
are empty stand-ins. So this measures what those pipelines would run: the same UNet converted
with ``openvino.convert_model`` (fp32) and compressed with NNCF's ``compress_weights`` (int8
weights), inside the stock diffusers pipeline, against the stock pipeline in PyTorch fp32. The
UNet is over 90% of an image's time. Quality: the PSNR of each picture against PyTorch's, and
with --follow the lanskap-mini prompt following (``lanskap mini score``'s measure) with its UNet
converted the same way.

Needs ``pip install openvino nncf`` (both install without torchvision); run it in an
environment that has them and lanskap's pinned set:

    python benchmarks/openvino_eval.py --size 512 --steps 3 --follow 40
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

PROMPT = "a fantasy landscape, a castle on a cliff above a misty valley, two moons, concept art"


class OVUNet(torch.nn.Module):
    """An OpenVINO-compiled UNet that the diffusers pipeline calls as it would the PyTorch one."""

    def __init__(self, unet: Any, compiled: Any) -> None:
        super().__init__()
        self.config, self.compiled = unet.config, compiled
        self._dtype, self._device = unet.dtype, unet.device
        self.calls = 0

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any,
                return_dict: bool = True, **kwargs: Any) -> Any:  # fmt: skip
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
        out = self.compiled([sample.float().numpy(), t.numpy(), encoder_hidden_states.float().numpy()])[0]
        self.calls += 1
        result = torch.from_numpy(np.asarray(out)).to(sample.dtype)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=result)
        return (result,)


class _Traceable(torch.nn.Module):
    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=hidden, return_dict=False)[0]


def convert(unet: Any, size: int, int8: bool, cache: Path) -> Any:
    """The UNet as an OpenVINO model compiled for the CPU (converted once per variant and size, cached)."""
    import openvino as ov

    path = cache / f"unet-{'int8' if int8 else 'fp32'}-{size}.xml"
    core = ov.Core()
    if not path.is_file():
        latent = size // unet.config.get("vae_scale", 8)
        example = (torch.randn(2, unet.config.in_channels, latent, latent), torch.tensor([500.0, 500.0]),
                   torch.randn(2, 77, int(unet.config.cross_attention_dim)))  # fmt: skip
        t = time.perf_counter()
        with torch.no_grad():
            model = ov.convert_model(_Traceable(unet).eval(), example_input=example)
        if int8:
            import nncf

            model = nncf.compress_weights(model)  # int8 weights, fp32 activations (NNCF's default)
        ov.save_model(model, str(path), compress_to_fp16=False)
        print(f"  converted in {time.perf_counter() - t:.0f} s → {path}", file=sys.stderr, flush=True)
    return core.compile_model(core.read_model(str(path)), "CPU")


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def image_times(pipe: Any, size: int, steps: int, warmup: int, seed: int) -> tuple[float, Image.Image]:
    def once(n: int) -> Image.Image:
        latents = torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator().manual_seed(seed))
        return pipe(PROMPT, height=size, width=size, num_inference_steps=n, latents=latents).images[0]

    if warmup:
        once(warmup)
    t = time.perf_counter()
    image = once(steps)
    return time.perf_counter() - t, image


def follow(unet_variant: str, count: int, cache: Path) -> float:
    """lanskap-mini's prompt following with its UNet in PyTorch or converted to OpenVINO."""
    from lanskap.generation.engine import Engine
    from lanskap.generation.params import GenerationRequest
    from lanskap.mini.follow import measure

    engine = Engine("lanskap-mini", fallback="none", speed_level="quality")  # no lever: the UNet is swapped
    pipe = engine.load().pipe
    if unet_variant != "torch":
        pipe.unet = OVUNet(pipe.unet, convert(pipe.unet, 128, unet_variant == "ov-int8", cache / "mini"))

    def generate(prompt: str, seed: int) -> Image.Image:
        return engine.generate(GenerationRequest(prompt, seed=seed, steps=20, watermark=False)).images[0]

    report, _ = measure(generate, count)
    return 100 * report.rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="diffusers folder (default: SD 2.1's architecture with random weights)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--follow", type=int, default=0, help="also lanskap-mini's prompt following, this many prompts")
    ap.add_argument("--variants", default="torch,ov-fp32,ov-int8")
    args = ap.parse_args()
    from diffusers import StableDiffusionPipeline

    root = Path(os.environ.get("LANSKAP_BENCH_CACHE", Path(tempfile.gettempdir()) / "lanskap-sd21-random"))
    if not args.model:
        from lanskap.models.reference import build_random_sd21

        args.model = str(build_random_sd21(root))
    cache = Path(tempfile.gettempdir()) / "lanskap-openvino"
    (cache / "mini").mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    torch_unet = pipe.unet
    rows: dict[str, dict[str, float]] = {}
    ref: Image.Image | None = None
    for name in args.variants.split(","):
        if name == "torch":
            pipe.unet = torch_unet
        else:
            pipe.unet = OVUNet(torch_unet, convert(torch_unet, args.size, name == "ov-int8", cache))
        seconds, image = image_times(pipe, args.size, args.steps, args.warmup_steps, args.seed)
        ref = image if name == "torch" else ref
        rows[name] = {"image": seconds, "psnr": psnr(image, ref) if ref is not None else float("nan")}
        if args.follow:
            rows[name]["follow"] = follow(name, args.follow, cache)
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    print(f"\nCPU, {torch.get_num_threads()} threads; torch {torch.__version__}; {args.size} px, {args.steps} steps")
    print(f"{'variant':<10}{'s/image':>9}{'vs torch':>10}{'PSNR dB':>9}" + (f"{'follow %':>10}" if args.follow else ""))
    base = rows.get("torch", {}).get("image", float("nan"))
    for name, r in rows.items():
        score = f"{r['follow']:>10.1f}" if "follow" in r else ""
        print(f"{name:<10}{r['image']:>9.2f}{r['image'] / base:>9.2f}x{r['psnr']:>9.1f}{score}")


if __name__ == "__main__":
    main()
