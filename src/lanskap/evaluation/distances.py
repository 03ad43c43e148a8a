"""The metric formulas, on feature arrays: CMMD, Fréchet distance, KID, CLIP score and palette.

Pure numpy/scipy in float64, so the maths can be tested against independent
computations without any model. The estimators follow the reference code:
google-research ``cmmd`` (distance.py), pytorch-fid (``calculate_frechet_distance``),
torch-fidelity (KID) and Hessel et al.'s CLIPScore with torchmetrics' weight of 100.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

#: CMMD's fixed bandwidth and scale (google-research cmmd, distance.py).
CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def _as_2d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {a.shape}")
    return a


def cmmd_distance(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """CMMD between embedding sets ``x`` (n, d) and ``y`` (m, d); n and m may differ.

    The reference's estimator: a Gaussian RBF kernel k(a, b) = exp(-|a-b|² / 2σ²)
    with σ = 10, the biased (V-statistic) MMD² = mean k(x,x') + mean k(y,y') - 2 mean k(x,y)
    with the diagonal terms included, times 1000. Computed in float64 (the reference uses
    float32; the estimator is the same, the rounding smaller).
    """
    x, y = _as_2d("x", x), _as_2d("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y have different dimensions: {x.shape[1]} and {y.shape[1]}")
    gamma = 1.0 / (2.0 * sigma**2)

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return float(np.exp(-gamma * np.maximum(sq, 0.0)).mean())

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, rows are samples) as FID uses them; needs 2 rows or more."""
    f = _as_2d("features", features)
    if f.shape[0] < 2:
        raise ValueError("a covariance needs at least 2 samples")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    |mu1-mu2|² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^½), as pytorch-fid computes it: scipy's sqrtm,
    an eps·I offset when the product is singular, and a tolerance on the imaginary part
    that rounding leaves behind.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two Gaussians have different dimensions")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected for small sets; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in the matrix square root")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(generated))


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD² with KID's kernel k(a, b) = (a·b / d + coef0)^degree; x and y the same size."""
    x, y = _as_2d("x", x), _as_2d("y", y)
    m = x.shape[0]
    if m < 2 or y.shape[0] != m:
        raise ValueError("KID needs two subsets of the same size, at least 2")
    gamma = 1.0 / x.shape[1]
    kxx = (x @ x.T * gamma + coef0) ** degree
    kyy = (y @ y.T * gamma + coef0) ** degree
    kxy = (x @ y.T * gamma + coef0) ** degree
    off_xx = kxx.sum() - np.trace(kxx)
    off_yy = kyy.sum() - np.trace(kyy)
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


@dataclass(frozen=True)
class KID:
    mean: float
    std: float
    subset_size: int
    subsets: int


def kid(real: np.ndarray, generated: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> KID:
    """Kernel Inception Distance as torch-fidelity computes it: the mean and standard deviation
    of the unbiased polynomial MMD² over random subsets drawn without replacement.

    Unlike FID it is unbiased, so it stays meaningful for sets far smaller than the feature
    dimension; the subset size shrinks to the smaller set.
    """
    real, generated = _as_2d("real", real), _as_2d("generated", generated)
    size = min(subset_size, real.shape[0], generated.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 images in each set")
    rng = np.random.RandomState(seed)
    values = np.array(
        [
            polynomial_mmd2_unbiased(
                real[rng.choice(real.shape[0], size, replace=False)],
                generated[rng.choice(generated.shape[0], size, replace=False)],
            )
            for _ in range(subsets)
        ]
    )
    return KID(float(values.mean()), float(values.std()), size, subsets)


def clip_score_values(image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
    """Per-pair CLIP score: 100 × cosine(image, text), clamped at 0 (Hessel et al., w = 100)."""
    a, b = _as_2d("image_embeds", image_embeds), _as_2d("text_embeds", text_embeds)
    if a.shape != b.shape:
        raise ValueError(f"image and text embeddings differ in shape: {a.shape} and {b.shape}")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.maximum(100.0 * cos, 0.0)


def mean_ci95(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, standard deviation and the half-width of a normal 95% interval of the mean."""
    v = np.asarray(values, np.float64)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return float(v.mean()), std, 1.96 * std / math.sqrt(v.size) if v.size > 1 else 0.0


#: Bins per RGB channel of the palette histogram (8³ = 512 colours).
PALETTE_BINS = 8


def palette_histogram(pixels: np.ndarray) -> np.ndarray:
    """Counts of an image's pixels (H×W×3 uint8) in ``PALETTE_BINS``³ RGB bins."""
    q = (pixels.reshape(-1, 3).astype(np.int64) * PALETTE_BINS) // 256
    index = (q[:, 0] * PALETTE_BINS + q[:, 1]) * PALETTE_BINS + q[:, 2]
    return np.bincount(index, minlength=PALETTE_BINS**3).astype(np.float64)


def palette_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance (0 = same colours, 1 = none shared) between two sets' pooled histograms.

    A style is largely its palette, and this needs no model weights, so a style LoRA's shift
    is measurable on a machine that can't download CLIP or Inception.
    """
    p, q = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())
