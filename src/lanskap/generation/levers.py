"""Speed levers that change the arithmetic of a denoising step: feature caching and token merging.

Unlike the load-time levers of ``models/speed.py`` (dtype, channels-last, compile), these make
a slightly different picture, so they are parameters of the request: they go into the infotext,
and ``generate --from`` restores them. A request that leaves them unset gets the speed level's
choice (``--speed``): ``quality`` turns them off; ``balanced`` (the default) and ``fast`` turn
on those that held lanskap's quality gate (``docs/performance.md``: prompt following within 2
points on lanskap-mini, and the PSNR floor against full compute).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lanskap.errors import LanskapError
from lanskap.generation.infotext import format_number

if TYPE_CHECKING:
    from torch import nn

    from lanskap.generation.deepcache import FeatureCache
    from lanskap.generation.params import GenerationRequest

SPEED_LEVELS = ("quality", "balanced", "fast")
#: The fewest steps at which a speed level turns the feature cache on (an explicit interval always applies).
MIN_CACHE_STEPS = 20
#: The largest cache interval accepted: past it, the deep features are too stale to reuse.
MAX_CACHE_INTERVAL = 10
#: The most tokens that may be merged away: beyond 3 of every 4, a 2×2 cell has no source left.
MAX_TOKEN_MERGING = 0.75
#: A1111's choices for the deepest level merged (its ``token_merging_maximum_down_sampling``).
DOWNSAMPLES = (1, 2, 4, 8)


@dataclass(frozen=True)
class Levers:
    cache_interval: int = 0
    cache_start: float = 0.0
    token_merging: float = 0.0


#: What each speed level turns on. Measured on lanskap-mini and the SD 2.1 architecture
#: (benchmarks/generate.py, docs/performance.md); a lever is on in ``balanced`` only where the
#: quality gate held, and ``fast`` goes as far as the gate allows.
LEVEL_LEVERS: dict[str, Levers] = {
    "quality": Levers(),
    "balanced": Levers(cache_interval=3, cache_start=0.5),
    "fast": Levers(cache_interval=3, cache_start=0.3),
}


def check_level(level: str) -> str:
    if level not in SPEED_LEVELS:
        raise LanskapError(f"speed must be one of {', '.join(SPEED_LEVELS)}, not {level!r}")
    return level


def check(req: GenerationRequest) -> None:
    """Refuse lever values out of range (None: left to the speed level)."""
    cache_interval, cache_start, token_merging = req.cache_interval, req.cache_start, req.token_merging
    downsample = req.token_merging_downsample
    if cache_interval is not None and not 0 <= cache_interval <= MAX_CACHE_INTERVAL:
        raise LanskapError(f"cache interval must be between 0 (off) and {MAX_CACHE_INTERVAL}, got {cache_interval}")
    if cache_start is not None and (cache_start != cache_start or not 0 <= cache_start < 1):
        raise LanskapError(
            f"cache start must be a fraction of the steps, from 0 up to (not including) 1, got {cache_start:g}"
        )
    if token_merging is not None and (token_merging != token_merging or not 0 <= token_merging <= MAX_TOKEN_MERGING):
        raise LanskapError(f"token merging ratio must be between 0 and {MAX_TOKEN_MERGING:g}, got {token_merging:g}")
    if downsample not in DOWNSAMPLES:
        raise LanskapError(
            f"token merging downsample must be one of {', '.join(map(str, DOWNSAMPLES))}, got {downsample}"
        )


def resolve(req: GenerationRequest, level: str) -> GenerationRequest:
    """The request with every lever it left unset (None) taken from the speed ``level``.

    A level caches features only from MIN_CACHE_STEPS steps on: the gate was passed at 20 steps,
    and with fewer each step moves the picture further, so reused features are staler (at 10
    steps lanskap-mini's skies began to drift) while only a step or two would be saved.
    """
    chosen = LEVEL_LEVERS[check_level(level)]
    if req.steps < MIN_CACHE_STEPS:
        chosen = replace(chosen, cache_interval=0, cache_start=0.0)
    fields: dict[str, Any] = {}
    if req.cache_interval is None:
        fields["cache_interval"] = chosen.cache_interval
    if req.cache_start is None:
        fields["cache_start"] = chosen.cache_start
    if req.token_merging is None:
        fields["token_merging"] = chosen.token_merging
    return replace(req, **fields) if fields else req


@contextlib.contextmanager
def applied(unet: nn.Module, req: GenerationRequest) -> Iterator[FeatureCache | None]:
    """The request's levers on ``unet`` for one pipeline call; yields the feature cache (None when
    off), which the engine's step callback advances and tells the number of steps."""
    with contextlib.ExitStack() as stack:
        if req.token_merging:
            from lanskap.generation.tome import token_merging

            stack.enter_context(token_merging(unet, req.token_merging, req.token_merging_downsample))
        cache = None
        if (req.cache_interval or 0) >= 2:
            from lanskap.generation.deepcache import FeatureCache

            feature_cache = FeatureCache(unet, int(req.cache_interval or 0), start=req.cache_start or 0.0)
            cache = stack.enter_context(feature_cache.attached())
        yield cache


def infotext(req: GenerationRequest) -> dict[str, str]:
    """A1111's ``Token merging ratio`` key, and lanskap's own for the rest (written only when on)."""
    out: dict[str, str] = {}
    if req.token_merging:
        out["Token merging ratio"] = format_number(req.token_merging)
        if req.token_merging_downsample != 1:
            out["Token merging downsample"] = str(req.token_merging_downsample)
    if (req.cache_interval or 0) >= 2:
        out["Cache interval"] = str(req.cache_interval)
        if req.cache_start:
            out["Cache start"] = format_number(req.cache_start)
    return out


def from_infotext(params: dict[str, str]) -> dict[str, Any]:
    """Request fields from an infotext: every lever explicit, so a replay makes the same picture."""
    try:
        return {
            "cache_interval": int(params.get("Cache interval", 0)),
            "cache_start": float(params.get("Cache start", 0)),
            "token_merging": float(params.get("Token merging ratio", 0)),
            "token_merging_downsample": int(params.get("Token merging downsample", 1)),
        }
    except ValueError:
        raise LanskapError("the infotext's cache or token merging values are not numbers") from None


def summary(req: GenerationRequest) -> str:
    """The levers in words (benchmarks/generate.py's rows)."""
    parts = []
    if (req.cache_interval or 0) >= 2:
        after = f" after {format_number(100 * req.cache_start)}% of them" if req.cache_start else ""
        parts.append(f"feature cache every {req.cache_interval} steps{after}")
    if req.token_merging:
        parts.append(f"token merging {format_number(req.token_merging)}")
    return ", ".join(parts) or "full compute"
