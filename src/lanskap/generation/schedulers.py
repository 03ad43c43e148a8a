"""A1111 sampler names mapped to diffusers schedulers.

Every scheduler is built ``from_config`` of the model's own scheduler, so it
keeps the model's ``prediction_type`` (v-prediction for SD 2.1 768) and noise
schedule; only the sampling algorithm and sigma spacing change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lanskap.errors import LanskapError


@dataclass(frozen=True)
class Sampler:
    name: str  # A1111's "Sampler" value
    schedule: str  # A1111's "Schedule type" value
    cls: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Ancestral/SDE samplers draw fresh noise each step.
    stochastic: bool = False
    #: Draws one noise stream for the whole batch (torchsde), so images are made one at a time.
    batch_noise: bool = False

    @property
    def label(self) -> str:
        return self.name if self.schedule in ("Automatic", "") else f"{self.name} {self.schedule}"


_K = {"use_karras_sigmas": True}
SAMPLERS: tuple[Sampler, ...] = (
    Sampler(
        "DPM++ 2M", "Karras", "DPMSolverMultistepScheduler", {**_K, "algorithm_type": "dpmsolver++", "solver_order": 2}
    ),
    Sampler(
        "DPM++ 2M", "Automatic", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}
    ),
    Sampler(
        "DPM++ 2M SDE",
        "Karras",
        "DPMSolverMultistepScheduler",
        {**_K, "algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        stochastic=True,
    ),
    Sampler("DPM++ SDE", "Karras", "DPMSolverSDEScheduler", dict(_K), stochastic=True, batch_noise=True),
    Sampler("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {}, stochastic=True),
    Sampler("Euler", "Automatic", "EulerDiscreteScheduler", {}),
    Sampler("Euler", "Karras", "EulerDiscreteScheduler", dict(_K)),
    Sampler("Heun", "Automatic", "HeunDiscreteScheduler", {}),
    Sampler("LMS", "Automatic", "LMSDiscreteScheduler", {}),
    Sampler("LMS", "Karras", "LMSDiscreteScheduler", dict(_K)),
    Sampler("DPM2", "Karras", "KDPM2DiscreteScheduler", dict(_K)),
    Sampler("DPM2 a", "Karras", "KDPM2AncestralDiscreteScheduler", dict(_K), stochastic=True),
    Sampler("DDIM", "Automatic", "DDIMScheduler", {}),
    Sampler("PLMS", "Automatic", "PNDMScheduler", {"skip_prk_steps": True}),
    Sampler("UniPC", "Automatic", "UniPCMultistepScheduler", {}),
    Sampler("DEIS", "Automatic", "DEISMultistepScheduler", {}),
)
DEFAULT_SAMPLER = "DPM++ 2M Karras"


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower().replace("++", "pp").replace("+", "p") if ch.isalnum())


_INDEX: dict[str, Sampler] = {}
for _s in SAMPLERS:
    _INDEX.setdefault(_key(_s.label), _s)
    if _s.schedule == "Automatic":
        _INDEX.setdefault(_key(_s.name + " automatic"), _s)
# Common spellings from other tools.
for _alias, _label in {
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "euler_a": "Euler a",
    "euler_ancestral": "Euler a",
    "k_euler_a": "Euler a",
    "k_euler": "Euler",
    "dpmpp_sde_karras": "DPM++ SDE Karras",
    "lms": "LMS",
    "k_lms": "LMS",
    "heun": "Heun",
    "k_heun": "Heun",
    "unipc": "UniPC",
    "ddim": "DDIM",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde_karras": "DPM++ 2M SDE Karras",
    "plms": "PLMS",
    "pndm": "PLMS",
}.items():
    _INDEX[_key(_alias)] = _INDEX[_key(_label)]


def sampler_names() -> list[str]:
    return [s.label for s in SAMPLERS]


def get_sampler(name: str, schedule: str | None = None) -> Sampler:
    """Find a sampler by A1111 label ("DPM++ 2M Karras") or by name plus schedule type."""
    candidates = [f"{name} {schedule}"] if schedule and schedule.lower() not in ("automatic", "") else []
    candidates.append(name)
    for c in candidates:
        found = _INDEX.get(_key(c))
        if found:
            return found
    raise LanskapError(f"unknown scheduler {name!r}; choose one of: {', '.join(sampler_names())}")


def build_scheduler(sampler: Sampler, base_config: Any, *, noise_seed: int | None = None) -> Any:
    """Instantiate ``sampler`` from the model's scheduler config, keeping its prediction type."""
    import diffusers

    cls = getattr(diffusers, sampler.cls)
    options = dict(sampler.options)
    if sampler.batch_noise and noise_seed is not None:
        options["noise_sampler_seed"] = noise_seed
    scheduler = cls.from_config(base_config, **options)
    base_pred = base_config.get("prediction_type", "epsilon")
    if scheduler.config.get("prediction_type") != base_pred:  # pragma: no cover - guard against library drift
        raise LanskapError(f"scheduler {sampler.label} lost the model's prediction type {base_pred}")
    return scheduler
