"""Typer options shared by every generating command, declared once so their names and help agree."""

from __future__ import annotations

from pathlib import Path

import typer

NEGATIVE = typer.Option(None, "--negative-prompt", "-n", help="What to avoid.")
SEED = typer.Option(None, "--seed", "-s", help="Seed; random (and recorded) when not given.")
STEPS = typer.Option(None, "--steps", help="Denoising steps, 1-150 [25].")
GUIDANCE = typer.Option(None, "--guidance", "--cfg", help="Classifier-free guidance scale [7.5].")
WIDTH = typer.Option(None, "--width", "-W", help="Multiple of 8, 64-2048.")
HEIGHT = typer.Option(None, "--height", "-H", help="Multiple of 8, 64-2048.")
NUM_IMAGES = typer.Option(None, "--num-images", "-N", help="How many images [1].")
BATCH_SIZE = typer.Option(None, "--batch-size", "-b", help="Images per forward pass [1].")
SCHEDULER = typer.Option(None, "--scheduler", "--sampler", help="e.g. 'DPM++ 2M Karras', 'Euler a'.")
LORA = typer.Option(None, "--lora", help="PATH_OR_NAME[:SCALE]; repeatable. <lora:NAME:W> in the prompt works too.")
MODEL = typer.Option(None, "--model", "-m", help="Hub id, diffusers folder or .safetensors file.")
MODEL_CONFIG = typer.Option(None, "--model-config", help="Configs for a single-file checkpoint.")
PREDICTION = typer.Option(None, "--prediction-type", help="v_prediction or epsilon.")
DEVICE = typer.Option(None, "--device", help="auto, cuda, mps or cpu.")
DTYPE = typer.Option(None, "--dtype", help="auto, fp32, fp16 or bf16.")
OUT = typer.Option(None, "--out", "-o", help="Output folder.")
FORMAT = typer.Option("png", "--format", "-f", help="png, jpg or webp.")
LORA_DIR = typer.Option(None, "--lora-dir", help="Extra folder to look up LoRA names in.")
ALLOW_PICKLE = typer.Option(None, "--allow-pickle", help="Allow pickled .ckpt/.bin/.pt weights.")
FALLBACK = typer.Option(None, "--fallback", help="none, or tiny: use a tiny random model if needed.")
NO_WATERMARK = typer.Option(False, "--no-watermark", help="Do not embed the invisible SD watermark.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
JSON = typer.Option(False, "--json", help="Print a JSON summary on stdout.")

STRENGTH = typer.Option(None, "--strength", "--denoising-strength", help="0.0 keeps the image, 1.0 ignores it.")
MASK_BLUR = typer.Option(None, "--mask-blur", help="Feather the mask edge by this many pixels [4].")
FILL = typer.Option(None, "--fill", "--masked-content", help="Masked area starts from: fill, original, noise.")

__all__ = [name for name in dir() if name.isupper()] + ["Path"]
