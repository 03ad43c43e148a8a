"""SDXL's refiner: a second model that takes over the last steps, as A1111's refiner option does.

A1111 swaps the refiner in once the sampler's timestep falls below ``(1 - switch) * 1000`` (its
``apply_refiner``: ``(999 - t) / 1000 >= switch``). diffusers' ``denoising_end`` on the base and
``denoising_start`` on the refiner cut the schedule at the same timestep, so the base pipeline
returns latents and the refiner's image-to-image pipeline denoises them from there with the same
sampler, steps and guidance. The refiner sees the prompt through its own encoder (bigG alone),
with SDXL's aesthetic-score conditioning at A1111's defaults (6 for the prompt, 2.5 for the
negative). A switch of 1 leaves every step to the base, as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lanskap.errors import LanskapError
from lanskap.generation.infotext import format_number

if TYPE_CHECKING:
    from lanskap.generation.params import GenerationRequest
    from lanskap.models.loader import LoadedModel
    from lanskap.prompts.encode import ScheduledPrompts

#: A1111's sdxl_refiner_high_aesthetic_score and sdxl_refiner_low_aesthetic_score defaults.
HIGH_AESTHETIC, LOW_AESTHETIC = 6.0, 2.5


@dataclass
class RefinerPlan:
    model: LoadedModel
    pipe: Any  # the refiner's image-to-image pipeline
    embeds: ScheduledPrompts
    switch: float

    @property
    def label(self) -> str:
        """As A1111's infotext names a checkpoint: ``name [hash]``."""
        return f"{self.model.name} [{self.model.hash}]"

    def steps(self, total: int) -> int:
        """About how many of ``total`` steps the refiner runs, for the progress total."""
        return total - round(total * self.switch)


#: The refiner's pipeline for each mode the base runs (inpainting: its latents, repainted under the mask).
PIPELINES = {"txt2img": "StableDiffusionXLImg2ImgPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline",
             "inpaint": "StableDiffusionXLInpaintPipeline"}  # fmt: skip


def check(base: LoadedModel, req: GenerationRequest) -> None:
    if not base.family.is_sdxl:
        raise LanskapError(f"the refiner takes over from an SDXL base; {base.name} is {base.family.label}")
    if req.mode not in PIPELINES:
        raise LanskapError(f"the refiner doesn't run after {req.mode}")


def pipeline(refiner: LoadedModel, mode: str) -> Any:
    """The refiner's pipeline for the base's mode, sharing the refiner's loaded parts."""
    import diffusers

    cls = getattr(diffusers, PIPELINES[mode])
    pipe = refiner.pipe if type(refiner.pipe) is cls else cls.from_pipe(refiner.pipe)
    pipe.set_progress_bar_config(disable=True)
    pipe.watermark = None  # lanskap marks every picture once
    return pipe


def call_args(plan: RefinerPlan, latents: Any, base_args: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    """The refiner pipeline's arguments: the base's latents, its sampler settings and generators."""
    from lanskap.generation import sdxl

    n = latents.shape[0]
    cond, uncond = plan.embeds.at(0)
    extra = {k: base_args[k] for k in ("mask_image", "strength") if k in base_args}
    if "mask_image" in extra:  # the inpainting pipeline takes its size from these, not from the latents
        extra.update(width=width, height=height)
    return {
        **extra,
        "image": latents,
        "denoising_start": plan.switch,
        "num_inference_steps": base_args["num_inference_steps"],
        "guidance_scale": base_args["guidance_scale"],
        "generator": base_args["generator"],  # the same per-image generators, continuing
        "prompt_embeds": cond.expand(n, -1, -1),
        "negative_prompt_embeds": uncond.expand(n, -1, -1),
        **sdxl.call_args(plan.embeds, n, width, height),  # the pooled text and A1111's size conditioning
        "aesthetic_score": HIGH_AESTHETIC,
        "negative_aesthetic_score": LOW_AESTHETIC,
        "output_type": "pil",
    }


def infotext(plan: RefinerPlan | None) -> dict[str, str]:
    if plan is None:
        return {}
    return {"Refiner": plan.label, "Refiner switch at": format_number(plan.switch)}
