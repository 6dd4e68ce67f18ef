"""Statistics every figure of the study shares, one copy each: bootstrap intervals over seeds, the Frechet distance
and KID between feature sets, and the agreement of two raters."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import numpy as np
import scipy.linalg
import scipy.stats
from sklearn.metrics import cohen_kappa_score


@dataclasses.dataclass(frozen=True)
class BootstrapConfig:
    """How the bootstrap intervals are computed (scipy.stats.bootstrap)."""

    n_resamples: int = 2000
    method: str = "percentile"  # or "BCa" / "basic"
    confidence: float = 0.95
    batch: int | None = 500  # resamples per vectorised call (bounds memory on many seeds)


def bootstrap_ci(data: tuple, statistic: Callable, rng: np.random.Generator,
                 boot: BootstrapConfig = BootstrapConfig()) -> list[float]:
    """Paired bootstrap CI over seeds of a vectorised `statistic(*data, axis)`.

    Resamples where the statistic is undefined (NaN, e.g. nothing sent to B) are dropped from
    the interval rather than poisoning it; all-NaN, or fewer than two seeds to resample, gives [NaN, NaN]."""
    if np.shape(data[0])[-1] < 2:
        return [float("nan"), float("nan")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        with np.errstate(invalid="ignore", divide="ignore"):
            res = scipy.stats.bootstrap(data, statistic, n_resamples=boot.n_resamples, vectorized=True,
                                  batch=boot.batch, paired=True, axis=-1, confidence_level=boot.confidence,
                                  method=boot.method, rng=rng)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isfinite(lo) and np.isfinite(hi):
        return [lo, hi]
    dist = np.asarray(res.bootstrap_distribution, float)
    if not np.isfinite(dist).any():
        return [float("nan"), float("nan")]
    alpha = (1.0 - boot.confidence) / 2.0
    return [float(np.nanquantile(dist, alpha)), float(np.nanquantile(dist, 1.0 - alpha))]


def rater_agreement(human: np.ndarray, automated: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    boot: BootstrapConfig = BootstrapConfig()) -> dict:
    """People's yes/no verdicts against the automated ones (`human`, `automated`, `mask` [n, K] bool: K items
    per seed, `mask` where a person gave a verdict): the count, each side's yes share, the accuracy (share
    of equal verdicts) with a 95 % interval (bootstrap over seeds: a seed's items are resampled together),
    the chance accuracy of independent raters at those shares (the baseline) and Cohen's kappa (sklearn's;
    NaN where undefined)."""
    if not human.shape == automated.shape == mask.shape:
        raise ValueError(f"verdicts and mask differ in shape: {human.shape}, {automated.shape}, {mask.shape}")
    n = int(mask.sum())
    if not n:
        return {"n": 0}
    h, a = human[mask], automated[mask]
    ph, pa = float(h.mean()), float(a.mean())
    agree = np.where(mask, human == automated, False)
    seeds = mask.any(1)
    ci = bootstrap_ci((agree[seeds].sum(1).astype(float), mask[seeds].sum(1).astype(float)),
                      lambda x, m, axis: x.sum(axis) / m.sum(axis), rng, boot)
    kappa = float(cohen_kappa_score(h, a)) if len(np.unique(np.r_[h, a])) > 1 else float("nan")
    return {"n": n, "human_yes": ph, "automated_yes": pa, "accuracy": float(np.mean(h == a)), "accuracy_ci": ci,
            "chance_accuracy": ph * pa + (1 - ph) * (1 - pa), "cohen_kappa": kappa}


def auc(y: np.ndarray, score: np.ndarray, axis: int = -1) -> np.ndarray:
    """ROC AUC of `score` for y == 1 along `axis` (Mann-Whitney, ties counted half, as sklearn's), vectorised so
    that `bootstrap_ci` resamples it; NaN where a resample holds one class only."""
    y, score = np.broadcast_arrays(np.asarray(y, float), np.asarray(score, float))
    ranks = scipy.stats.rankdata(score, axis=axis)
    pos = y.sum(axis=axis)
    neg = y.shape[axis] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(axis=axis) - pos * (pos + 1) / 2) / (pos * neg)


def gaussian(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, float).reshape(len(feats), -1)
    return feats.mean(0), np.atleast_2d(np.cov(feats, rowvar=False))


def fd_from_moments(mu1, s1, mu2, s2) -> float:
    with warnings.catch_warnings():  # fewer images than dimensions (small presets): singular covariances
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * covmean))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [n, D] (lower = closer)."""
    return fd_from_moments(*gaussian(a), *gaussian(b))


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018) between feature sets [n, D], [m, D]: the unbiased
    MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3. 0 in expectation for one distribution."""
    a, b = (np.asarray(x, np.float64).reshape(len(x), -1) for x in (a, b))
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    n, m = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                 - 2.0 * kab.mean())
