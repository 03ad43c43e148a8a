"""Distilled bases (SD-Turbo, LCM): the few-step settings their makers recommend.

A distilled model makes its picture in 1-4 steps and needs little or no classifier-free
guidance; at lanskap's usual 25 steps and CFG 7.5 it burns. So when a request leaves the steps,
guidance or sampler unset, the engine takes them from here, and the infotext says so
(``Model defaults``). What counts as distilled, from the model's own files:

- **LCM**: its scheduler config is ``LCMScheduler`` (latent consistency models ship it). Four
  steps of the LCM sampler; guidance 1 (none), or 8 when the UNet embeds the guidance scale
  (``time_cond_proj_dim``, as LCM-Dreamshaper does), the value its card uses.
- **SD-Turbo** (adversarial diffusion distillation of SD 2.1): its scheduler spaces timesteps
  ``trailing`` and its name or model card says Turbo. Its card: one step, guidance 0. The
  sampler is Euler a with the SGM Uniform schedule (trailing spacing, what the shipped
  scheduler config sets), as A1111 users run Turbo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The request fields a recommendation may fill.
FIELDS = ("steps", "guidance", "scheduler")
_TURBO_WORDS = ("sd-turbo", "sd_turbo", "sdxl-turbo", "adversarial diffusion distillation", "turbo")


@dataclass(frozen=True)
class Recommended:
    kind: str  # "SD-Turbo" or "LCM", as written in the infotext
    steps: int
    guidance: float
    scheduler: str  # an A1111 sampler label
    why: str  # where the recommendation comes from, for the notice

    def notice(self) -> str:
        return (
            f"{self.kind}, a distilled model ({self.why}): unless given, {self.steps} step(s), guidance "
            f"{self.guidance:g} and {self.scheduler}"
        )


def _card(source: Path | None) -> str:
    """The model card's text (README.md of a diffusers folder), lowercased; empty when there is none."""
    if source is None or not source.is_dir():
        return ""
    try:
        return (source / "README.md").read_text(encoding="utf-8", errors="replace")[:20000].lower()
    except OSError:
        return ""


def recommended(name: str, source: Path | None, scheduler: dict[str, Any], unet: dict[str, Any]) -> Recommended | None:
    """The few-step settings of a distilled model, or None for an ordinary one."""
    if scheduler.get("_class_name") == "LCMScheduler":
        embedded = unet.get("time_cond_proj_dim") is not None
        return Recommended("LCM", 4, 8.0 if embedded else 1.0, "LCM", "its scheduler is LCMScheduler")
    if scheduler.get("timestep_spacing") == "trailing":
        text = f"{name.lower()} {_card(source)}"
        if any(word in text for word in _TURBO_WORDS):
            return Recommended("SD-Turbo", 1, 0.0, "Euler a SGM Uniform", "its name or card says Turbo")
    return None
