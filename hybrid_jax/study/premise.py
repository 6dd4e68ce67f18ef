"""The premise the routing study rests on: is Model A clearly better than Model B, and not by copying?

Routing means something only where the expensive generator is clearly better than the cheap one. This
module measures that per generator option, before any routing figure: Frechet distance and KID to
held-out real images in feature spaces fitted independently of each other (the labeler's, a PCA of the training
pixels and, on CIFAR-10 data, a classifier of another architecture trained apart from the labeler), each with a
bootstrap 95 % interval over generated images; the median quality score;
and memorisation figures (each image's distance to its nearest training image, beside the same for
held-out real images). `verdict` applies the stated rule to them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from hybrid_jax.stats import frechet_distance, kid

JUDGE_SPACE = "independent classifier"  # the space of the judge trained apart from the labeler (config.JudgeConfig)
COPY_QUANTILE = 0.01  # an image "copies" when it is closer to a training image than 99 % of held-out real ones
A_NEEDED_RANGE = (0.2, 0.8)  # the calibrated label rule's A_needed share for the study to have a question


def distance_estimates(feats: np.ndarray, real: np.ndarray, rng: np.random.Generator,
                       n_resamples: int = 200) -> dict:
    """FD and KID of generated features [n, D] to real ones [m, D], each with a 95 % bias-corrected percentile
    interval over resampled generated images (the real set fixed: it is the yardstick every option shares).

    A resample repeats images, which shrinks its covariance and so raises both distances (with 100 images in 32
    dimensions the whole percentile interval can lie above the estimate); the resamples' mean shift from the
    estimate is removed from both ends, so the interval is the spread around the estimate, not around the bias."""
    out = {"fd": frechet_distance(feats, real), "kid": kid(feats, real)}
    draws = [rng.integers(0, len(feats), len(feats)) for _ in range(n_resamples)]
    for name, fn in (("fd", frechet_distance), ("kid", kid)):
        values = np.array([fn(feats[i], real) for i in draws])
        values = values - (values.mean() - out[name])
        out[f"{name}_ci"] = [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]
    return out


def nearest(x: np.ndarray, train: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(Euclidean distance [n] of each row of x to its nearest row of train, that row's index [n])."""
    x, train = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (x, train))
    t2 = np.sum(train ** 2, 1)
    dist, idx = np.empty(len(x)), np.empty(len(x), np.int64)
    for s in range(0, len(x), chunk):
        part = x[s:s + chunk]
        d2 = np.maximum(np.sum(part ** 2, 1)[:, None] + t2[None] - 2.0 * part @ train.T, 0.0)
        idx[s:s + chunk] = np.argmin(d2, 1)
        dist[s:s + chunk] = np.sqrt(d2[np.arange(len(part)), idx[s:s + chunk]])
    return dist, idx


def copy_share(dist: np.ndarray, real_dist: np.ndarray, rng: np.random.Generator, n_resamples: int = 1000) -> dict:
    """Share of images closer to their nearest training image than the COPY_QUANTILE quantile of held-out real
    images' nearest distances, with a 95 % bootstrap interval over the images; held-out real images give
    COPY_QUANTILE by construction, so a share whose interval lies above it copies beyond real's rate."""
    cut = float(np.quantile(real_dist, COPY_QUANTILE))
    close = dist < cut
    boot = [close[rng.integers(0, len(close), len(close))].mean() for _ in range(n_resamples)]
    return {"threshold": cut, "share": float(close.mean()),
            "share_ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "real_rate": COPY_QUANTILE, "copies": bool(np.quantile(boot, 0.025) > COPY_QUANTILE)}


@dataclasses.dataclass(frozen=True)
class Space:
    """A feature space the premise is measured in: generated, training and held-out real features."""

    name: str
    train: np.ndarray  # [N, D]
    real: np.ndarray  # [m, D]


def pca_space(train_pixels: np.ndarray, real_pixels: np.ndarray, dims: int = 32) -> tuple[Space, Callable[[np.ndarray], np.ndarray]]:
    """The second space, independent of the labeler: the training images' top principal components (pixels,
    fitted on the training images only). Returns the space and the projection of new images."""
    flat = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)
    mean = flat(train_pixels).mean(0)
    _, _, vt = np.linalg.svd(flat(train_pixels) - mean, full_matrices=False)
    basis = vt[: min(dims, len(vt))].T
    project = lambda x: (flat(x) - mean) @ basis
    return Space("pixel PCA", project(train_pixels), project(real_pixels)), project


def quality_figures(quality: np.ndarray, feats: Mapping[str, np.ndarray], spaces: Sequence[Space],
                    rng: np.random.Generator, n_resamples: int = 200) -> dict:
    """Images' median quality with its 95 % interval and FD / KID to held-out real images with intervals in each
    space (`feats`: space name -> the images' features): one option, or one point of its learning curve."""
    out = {"n": int(len(quality)), "median_quality": float(np.median(quality))}
    boot = [np.median(quality[rng.integers(0, len(quality), len(quality))]) for _ in range(n_resamples)]
    out["median_quality_ci"] = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    out["spaces"] = {s.name: distance_estimates(feats[s.name], s.real, rng, n_resamples) for s in spaces}
    return out


def option_figures(images: np.ndarray, quality: np.ndarray, feats: Mapping[str, np.ndarray],
                   spaces: Sequence[Space], train_pixels: np.ndarray, real_pixels: np.ndarray,
                   rng: np.random.Generator, n_resamples: int = 200) -> dict:
    """One option's premise figures: `quality_figures`, and memorisation (pixel and first-space
    nearest-training distances beside held-out real's, copy share)."""
    out = quality_figures(quality, feats, spaces, rng, n_resamples)
    mem = {}
    for name, gen, train, real in (("pixels", images, train_pixels, real_pixels),
                                   (spaces[0].name, feats[spaces[0].name], spaces[0].train, spaces[0].real)):
        dist, idx = nearest(gen, train)
        real_dist, _ = nearest(real, train)
        mem[name] = {"median_distance": float(np.median(dist)), "median_distance_real": float(np.median(real_dist)),
                     **copy_share(dist, real_dist, rng), "closest": [[int(i), int(idx[i])] for i in np.argsort(dist)[:8]]}
    out["memorisation"] = mem
    return out


def verdict(reference: dict, candidate: dict, a_needed_share: float) -> dict:
    """`holds` iff the reference option (A) is clearly better than the candidate (B): A's FD below B's with
    non-overlapping 95 % intervals in every space, A's median quality above B's, the calibrated A_needed share
    within A_NEEDED_RANGE, and neither option copying beyond held-out real's rate; else `fails`, with the
    criteria that failed."""
    failed = []
    for space, fa in reference["spaces"].items():
        fb = candidate["spaces"][space]
        if not fa["fd_ci"][1] < fb["fd_ci"][0]:
            ci = lambda f: f"[{f['fd_ci'][0]:.3g}, {f['fd_ci'][1]:.3g}]"
            failed.append(f"FD in {space}: A {fa['fd']:.3g} {ci(fa)} is not clearly below B {fb['fd']:.3g} {ci(fb)}")
    if not reference["median_quality"] > candidate["median_quality"]:
        failed.append(f"median quality: A {reference['median_quality']:.3f} is not above B "
                      f"{candidate['median_quality']:.3f}")
    lo, hi = A_NEEDED_RANGE
    if not lo <= a_needed_share <= hi:
        failed.append(f"A_needed share under the calibrated rule {a_needed_share:.0%} is outside [{lo:.0%}, {hi:.0%}]")
    for who, fig in (("A", reference), ("B", candidate)):
        for space, m in fig["memorisation"].items():
            if m["copies"]:
                failed.append(f"{who} copies training images in {space}: {m['share']:.1%} closer than held-out "
                              f"real's 1st percentile (interval {m['share_ci']}, real {m['real_rate']:.0%})")
    return {"verdict": "fails" if failed else "holds", "failed": failed}
