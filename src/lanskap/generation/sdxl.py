"""What an SDXL base adds to a pipeline call, and what it can't run yet.

SDXL's UNet takes, besides the text's hidden states, the pooled text embedding and six size
numbers: the original size, the crop's top-left corner and the target size. A1111 sets both
sizes to the picture being made and the crop to (0, 0) (its ``sdxl_crop_top``/``left``
settings), for the prompt and the negative prompt alike; diffusers' defaults for the
negatives copy the positives, so passing the three is all it takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from lanskap.errors import LanskapError

if TYPE_CHECKING:
    from lanskap.generation.params import GenerationRequest
    from lanskap.prompts.encode import ScheduledPrompts


def check(req: GenerationRequest, model_name: str, hypernetworks: bool) -> None:
    """Refuse, in one line before any step, what lanskap runs on SD 1.x/2.x only so far."""
    unsupported = [
        (hypernetworks, "hypernetworks"),
        (bool(req.control), "ControlNet units"),
        (req.panorama is not None, "panoramas"),
        (req.regions is not None, "regional prompts"),
    ]
    for present, what in unsupported:
        if present:
            raise LanskapError(f"{what} run on SD 1.x and 2.x models; {model_name} is SDXL")


def notices(req: GenerationRequest) -> list[str]:
    if req.clip_skip > 1:
        return [f"clip skip {req.clip_skip} is not used on SDXL (A1111 ignores it there too)"]
    return []


def call_args(embeds: ScheduledPrompts, n: int, width: int, height: int, step: int = 0) -> dict[str, Any]:
    """The pooled embeddings and A1111's size conditioning for a call making ``n`` pictures."""
    pooled = embeds.pooled_at(step)
    assert pooled is not None, "SDXL prompts carry pooled embeddings"
    cond, uncond = pooled
    return {
        "pooled_prompt_embeds": cond.expand(n, -1),
        "negative_pooled_prompt_embeds": uncond.expand(n, -1),
        "original_size": (height, width),
        "target_size": (height, width),
        "crops_coords_top_left": (0, 0),
    }


def step_pooled(embeds: ScheduledPrompts, step: int, n: int, guided: bool) -> torch.Tensor | None:
    """The pooled text a pipeline uses from ``step`` on ([negative, positive] under guidance, as it
    batches them), for prompt editing; None when the model has none."""
    pooled = embeds.pooled_at(step)
    if pooled is None:
        return None
    cond, uncond = pooled
    return torch.cat([uncond.expand(n, -1), cond.expand(n, -1)]) if guided else cond.expand(n, -1)
