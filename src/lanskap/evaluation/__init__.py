"""Evaluation: CMMD, FID, KID and CLIP score, base against LoRA, with a visual report.

The formulas (:func:`cmmd_distance`, :func:`frechet_distance`, :func:`kid`) need only
numpy and scipy and import at once; :func:`evaluate` and the model wrappers load
torch on first use, so ``lanskap --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

from lanskap.evaluation.distances import (
    KID,
    clip_score_values,
    cmmd_distance,
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    kid,
)

__all__ = [
    "KID",
    "EvalConfig",
    "EvalEvent",
    "EvalResult",
    "clip_score_values",
    "cmmd_distance",
    "evaluate",
    "fid_from_features",
    "frechet_distance",
    "gaussian_stats",
    "kid",
]


def __getattr__(name: str) -> Any:
    if name in ("EvalConfig", "EvalEvent", "EvalResult", "evaluate"):
        from lanskap.evaluation import run

        return getattr(run, name)
    raise AttributeError(name)
