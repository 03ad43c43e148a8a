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
    schedule: str  # A1111's "Schedule type" value, resolved (never "Automatic")
    cls: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Ancestral/SDE samplers draw fresh noise each step.
    stochastic: bool = False
    #: Draws one noise stream for the whole batch (torchsde), so images are made one at a time.
    batch_noise: bool = False
    #: Written alone (without the schedule) when the schedule is the plain one.
    plain_label: bool = False
    #: Calls the model twice a step (A1111's "second_order"): prompt edits count those calls.
    second_order: bool = False

    @property
    def label(self) -> str:
        return self.name if self.plain_label and self.schedule == "Uniform" else f"{self.name} {self.schedule}"

    @property
    def infotext_schedule(self) -> str:
        """What A1111 writes as "Schedule type": "Automatic" when the sampler's own default ran."""
        return "Automatic" if self.plain_label and self.schedule == "Uniform" else self.schedule


@dataclass(frozen=True)
class Algorithm:
    """One A1111 sampler: the diffusers class that reproduces it, and the schedule types it takes."""

    name: str
    cls: str
    options: dict[str, Any]
    schedules: tuple[str, ...]
    default: str = "Uniform"  # what A1111's "Automatic" schedule type means for this sampler
    stochastic: bool = False
    batch_noise: bool = False
    aliases: tuple[str, ...] = ()
    second_order: bool = False


#: A1111 schedule types that diffusers reproduces, as scheduler options. "Uniform" is the model's own
#: discretisation; "SGM Uniform" is trailing timestep spacing (A1111: linspace over t, diffusers: the
#: same spacing rounded to whole timesteps, so a step can differ by one timestep).
SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}
#: A1111's ids for them (the /schedulers "name"), with the rho A1111 reports.
SCHEDULE_IDS = {"Uniform": "uniform", "Karras": "karras", "Exponential": "exponential", "Beta": "beta",
                "SGM Uniform": "sgm_uniform"}  # fmt: skip
#: A1111 names that have no faithful diffusers counterpart: refused by name, never substituted.
UNSUPPORTED_SAMPLERS = ("DPM++ 2S a", "DPM fast", "DPM adaptive", "Restart")
UNSUPPORTED_SCHEDULES = ("Simple", "Polyexponential", "Normal", "DDIM", "Align Your Steps", "KL Optimal")

_SIGMA = tuple(SCHEDULE_OPTIONS)
_SPACING = ("Uniform", "SGM Uniform")
_DPMPP = "DPMSolverMultistepScheduler"
# A1111 1.10's k-diffusion list (sd_samplers_kdiffusion.samplers_k_diffusion) with its default
# schedules, then its compvis samplers (DDIM, PLMS, UniPC) and LCM.
ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm("DPM++ 2M", _DPMPP, {"algorithm_type": "dpmsolver++", "solver_order": 2}, _SIGMA, "Karras",
              aliases=("k_dpmpp_2m", "dpmpp_2m")),
    Algorithm("DPM++ SDE", "DPMSolverSDEScheduler", {}, _SIGMA, "Karras", stochastic=True, batch_noise=True,
              aliases=("k_dpmpp_sde", "dpmpp_sde"), second_order=True),
    Algorithm("DPM++ 2M SDE", _DPMPP, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, _SIGMA,
              "Exponential", stochastic=True, aliases=("k_dpmpp_2m_sde", "dpmpp_2m_sde")),
    Algorithm("DPM++ 2M SDE Heun", _DPMPP,
              {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"}, _SIGMA,
              "Exponential", stochastic=True, aliases=("k_dpmpp_2m_sde_heun",)),
    Algorithm("DPM++ 3M SDE", _DPMPP, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, _SIGMA,
              "Exponential", stochastic=True, aliases=("k_dpmpp_3m_sde", "dpmpp_3m_sde")),
    Algorithm("Euler a", "EulerAncestralDiscreteScheduler", {}, _SPACING, stochastic=True,
              aliases=("k_euler_a", "k_euler_ancestral", "euler_ancestral", "euler_a")),
    Algorithm("Euler", "EulerDiscreteScheduler", {}, _SIGMA, aliases=("k_euler",)),
    Algorithm("LMS", "LMSDiscreteScheduler", {}, _SIGMA, aliases=("k_lms",)),
    Algorithm("Heun", "HeunDiscreteScheduler", {}, _SIGMA, aliases=("k_heun",), second_order=True),
    Algorithm("DPM2", "KDPM2DiscreteScheduler", {}, _SIGMA, "Karras", aliases=("k_dpm_2",), second_order=True),
    Algorithm("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, _SIGMA, "Karras", stochastic=True,
              aliases=("k_dpm_2_a",), second_order=True),
    Algorithm("DDIM", "DDIMScheduler", {}, _SPACING),
    Algorithm("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, _SPACING, aliases=("pndm",)),
    Algorithm("UniPC", "UniPCMultistepScheduler", {}, _SIGMA),
    Algorithm("DEIS", "DEISMultistepScheduler", {}, _SIGMA),
    Algorithm("LCM", "LCMScheduler", {}, _SPACING),
)  # fmt: skip
DEFAULT_SAMPLER = "DPM++ 2M Karras"


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower().replace("++", "pp").replace("+", "p") if ch.isalnum())


_BY_KEY: dict[str, Algorithm] = {}
_FULL: dict[str, tuple[Algorithm, str]] = {}  # "dpmpp_2m_karras", "DPM++ 2M Karras" → (DPM++ 2M, Karras)
for _a in ALGORITHMS:
    for _n in (_a.name, *_a.aliases):
        _BY_KEY.setdefault(_key(_n), _a)
        for _sch in _a.schedules:
            _FULL.setdefault(_key(f"{_n} {_sch}"), (_a, _sch))
_SCHEDULE_BY_KEY = {_key(k): k for k in SCHEDULE_OPTIONS} | {_key(v): k for k, v in SCHEDULE_IDS.items()}


def _make(algo: Algorithm, schedule: str) -> Sampler:
    options = {**algo.options, **SCHEDULE_OPTIONS[schedule]}
    plain = algo.default == "Uniform"
    return Sampler(algo.name, schedule, algo.cls, options, algo.stochastic, algo.batch_noise, plain, algo.second_order)


SAMPLERS: tuple[Sampler, ...] = tuple(_make(a, sch) for a in ALGORITHMS for sch in a.schedules)


def sampler_names() -> list[str]:
    """Every sampler + schedule type, as one label each ("DPM++ 2M Karras", "Euler a")."""
    return [s.label for s in SAMPLERS]


def algorithm_names() -> list[str]:
    return [a.name for a in ALGORITHMS]


def schedule_types(name: str) -> tuple[str, ...]:
    """The schedule types ``name`` takes, its A1111 default first."""
    algo = _BY_KEY[_key(name)]
    return (algo.default, *(s for s in algo.schedules if s != algo.default))


def _split(label: str) -> tuple[Algorithm, str | None]:
    """ "DPM++ 2M SDE Heun Karras" → (DPM++ 2M SDE Heun, "Karras"): the longest sampler name that fits."""
    if _key(label) in _FULL and _key(label) not in _BY_KEY:
        return _FULL[_key(label)]
    words = label.split()
    for cut in range(len(words), 0, -1):
        algo = _BY_KEY.get(_key(" ".join(words[:cut])))
        if algo is not None:
            rest = " ".join(words[cut:])
            return algo, rest or None
    raise LanskapError(_unknown(label))


def _unknown(name: str) -> str:
    why = " (it has no faithful diffusers counterpart)" if _key(name) in {_key(n) for n in UNSUPPORTED_SAMPLERS} else ""
    return f"unknown scheduler {name!r}{why}; choose one of: {', '.join(algorithm_names())}"


def _schedule(algo: Algorithm, schedule: str | None) -> str:
    if schedule is None or _key(schedule) in ("", "automatic"):
        return algo.default
    found = _SCHEDULE_BY_KEY.get(_key(schedule))
    if found is None:
        why = " (it has no faithful diffusers counterpart)" if schedule in UNSUPPORTED_SCHEDULES else ""
        raise LanskapError(
            f"unknown schedule type {schedule!r}{why}; choose one of: Automatic, {', '.join(SCHEDULE_OPTIONS)}"
        )
    if found not in algo.schedules:
        raise LanskapError(f"{algo.name} can't use the {found} schedule; it takes: {', '.join(algo.schedules)}")
    return found


def get_sampler(name: str, schedule: str | None = None) -> Sampler:
    """A sampler by A1111 label ("DPM++ 2M Karras"), or by name plus schedule type (A1111's API fields).

    "Automatic" (or none) is A1111 1.9+'s meaning: the sampler's own default (Karras for DPM++ 2M).
    """
    algo, in_label = _split(name.strip())
    explicit = schedule is not None and _key(schedule) not in ("", "automatic")
    if in_label is not None and explicit and _key(in_label) != _key(str(schedule)):
        raise LanskapError(f"sampler {name!r} already names a schedule; it conflicts with {schedule!r}")
    return _make(algo, _schedule(algo, in_label if in_label is not None else schedule))


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
