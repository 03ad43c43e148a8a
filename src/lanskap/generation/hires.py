"""Hires fix: A1111's second pass, planned once per job and run after each batch's first pass.

The first pass is sampled to latents at the requested size. A latent upscaler resizes those
latents directly (A1111 never decodes them); an image upscaler gets the decoded pictures. The
result (cropped to ``hr_resize`` when both sides were given) is then repainted as img2img at
``denoise`` for ``steps`` (the first pass's when 0), with fresh noise from each image's own seed,
as A1111 does. It runs inside the engine's batch loop rather than as a post-step on finished
pictures because it needs the first pass's latents, and its steps count in the job's progress
and obey its cancel and skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from lanskap.errors import LanskapError
from lanskap.generation.infotext import format_number
from lanskap.generation.schedulers import Sampler, get_sampler
from lanskap.images import center_crop

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanskap.generation.params import GenerationRequest, HiresFix
    from lanskap.prompts.encode import ScheduledPrompts
    from lanskap.upscale.upscalers import Runner, Upscaler


@dataclass
class HiresPlan:
    """What one job's second passes share: sizes, upscaler, sampler, steps and the prompt embeddings."""

    fix: HiresFix
    upscaler: Upscaler
    size: tuple[int, int]  # the upscale-to size
    crop: tuple[int, int]  # the final size (smaller than ``size`` only for a both-sides resize)
    steps: int  # the second pass's num_inference_steps
    effective: int  # steps actually denoised (steps x denoise)
    sampler: Sampler
    embeds: ScheduledPrompts


def plan(
    fix: HiresFix,
    req: GenerationRequest,
    first_sampler: Sampler,
    upscaler: Upscaler,
    encode: Callable[[str, str, int], ScheduledPrompts],
) -> HiresPlan:
    """Fix the second pass: ``encode(prompt, negative, schedule_steps)`` gives its prompt schedule."""
    assert req.width is not None and req.height is not None
    fix.check_size(req.width, req.height)
    w, h, tw, th = fix.target(req.width, req.height)
    steps = fix.steps or req.steps
    sampler = get_sampler(fix.sampler) if fix.sampler else first_sampler
    prompt = fix.prompt or req.prompt
    negative = fix.negative_prompt or req.negative_prompt
    embeds = encode(prompt, negative, steps * (2 if sampler.second_order else 1))
    effective = min(int(steps * fix.denoise), steps)
    return HiresPlan(fix, upscaler, (w, h), (tw, th), steps, effective, sampler, embeds)


def decode(pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
    """Latents → pictures with the pipeline's VAE (what the pipeline itself does after its last step)."""
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    if upcast:  # SDXL's VAE overflows in fp16 (its config says so); the pipelines decode it in fp32 too
        vae.to(torch.float32)
    try:
        with torch.inference_mode():
            pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    finally:
        if upcast:
            vae.to(torch.float16)
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def _crop_latents(latents: torch.Tensor, plan_: HiresPlan) -> torch.Tensor:
    """A1111's truncate: the middle of the latents when both resize sides were given."""
    (w, h), (tw, th) = plan_.size, plan_.crop
    dx, dy = (w - tw) // 8, (h - th) // 8
    if dx <= 0 and dy <= 0:
        return latents
    return latents[:, :, dy // 2 : latents.shape[2] - (dy + 1) // 2, dx // 2 : latents.shape[3] - (dx + 1) // 2]


def upscale(plan_: HiresPlan, pipe: Any, latents: torch.Tensor, runner: Runner, prompt: str,
            seeds: list[int]) -> torch.Tensor | list[Image.Image]:  # fmt: skip
    """The second pass's starting point: upscaled latents (latent modes) or upscaled pictures."""
    from lanskap.upscale.upscalers import latent_resize

    w, h = plan_.size
    if plan_.upscaler.kind == "latent":
        return _crop_latents(latent_resize(latents.float(), plan_.upscaler.name, h, w).to(latents.dtype), plan_)
    pictures = decode(pipe, latents)
    out = []
    for picture, seed in zip(pictures, seeds, strict=True):
        big = runner.upscale(picture, plan_.upscaler, (w, h), prompt=prompt, seed=seed)
        out.append(center_crop(big, plan_.crop) if plan_.crop != (w, h) else big)
    return out


def infotext(fix: HiresFix, req: GenerationRequest, first_sampler: Sampler) -> dict[str, str | int | None]:
    """A1111's keys for a hires fix (``Denoising strength`` is its strength)."""
    params: dict[str, str | int | None] = {"Denoising strength": format_number(fix.denoise)}
    if fix.resize_x or fix.resize_y:
        params["Hires resize"] = f"{fix.resize_x}x{fix.resize_y}"
    else:
        params["Hires upscale"] = format_number(fix.scale)
    params["Hires steps"] = fix.steps or None
    params["Hires upscaler"] = fix.upscaler
    if fix.sampler:
        sampler = get_sampler(fix.sampler)
        if sampler.label != first_sampler.label:
            params["Hires sampler"] = sampler.name
            params["Hires schedule type"] = sampler.infotext_schedule
    if fix.prompt and fix.prompt != req.prompt:
        params["Hires prompt"] = fix.prompt
    if fix.negative_prompt and fix.negative_prompt != req.negative_prompt:
        params["Hires negative prompt"] = fix.negative_prompt
    return params


def check_model(inpainting: bool) -> None:
    if inpainting:
        raise LanskapError("hires fix needs a regular model; this one is an inpainting model")
