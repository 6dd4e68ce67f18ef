"""Automated quality labels (the brief's future work), validated before they are trusted.

Feature space: natural-image statistics of each image (mean absolute gradients at scales
1, 2, 4 pixels in x and y, Laplacian energy, the ratio of gradients across the 8x8 patch
borders to gradients elsewhere, pixel std, and two scale-free sharpness ratios: fine- to
coarse-scale gradients and Laplacian to gradient energy), standardised on the training
images. These see exactly the failures a patch-wise AR model makes (seams, noise,
over-smoothing); the ratios tell a blurred image from a naturally smooth one, which the
absolute gradient levels alone cannot (blur AUC 0.87 without them, 1.00 with them).
Pooled features of a briefly trained Model A U-Net were tried first and ranked real above
degraded images no better than chance (AUC 0.53-0.56 on the quick preset), so they are not used.

Quality: a bounded form of the k-NN realism score of Kynkaanniemi et al. (2019) against the
training images. Their score R = max_i r_i / d_i (r_i: distance of training feature f_i to its
k-th neighbour, d_i = ||f - f_i||) is unbounded: an image that nearly duplicates a reference
image has d_i ~ 0 and R in the millions, which swamps every mean it enters. We use

    score = R / (1 + R) = max_i r_i / (r_i + d_i)   in [0, 1],

computed in the second form, so nothing is divided by d_i: 1 for an exact duplicate, 0.5 on the
boundary of the real manifold (d_i = r_i; R = 1), above 0.5 inside it, towards 0 far outside.
R / (1 + R) is strictly increasing in R, so every ranking, and so every validation AUC, is the
same as with R (tested). (Degenerate case: a reference point with k exact duplicates has r_i = 0;
a query on it gets 1 there, where R gave 0 / max(0, 1e-8) = 0.)

Rule (A_needed iff B's image is clearly worse than A's; "about the same" is cheap_ok):
absolute rule (default): A_needed iff score(A) - score(B) > tau, where tau is calibrated on real
images: the `margin_quantile` q-quantile of |score(r_i) - score(r_j)| over all pairs of distinct
held-out real images. Two real images are of "about the same" quality by construction, so a gap
larger than a share q of real-vs-real gaps is "clearly worse". For A and B of equal quality the
rule marks about (1 - q) / 2 of seeds A_needed (a share 1 - q of gaps exceed tau in absolute value,
half of them in B's favour). Measured on the CIFAR-10 dogs with q = 0.9 and 100 held out, for
375 reference images (in brackets: the quick preset's 275 + 100): tau = 0.125 (0.135); share of
A_needed when B is another real image: 5.0 % (5.0 %) averaged over random pairings, as expected;
B = the image half-mixed with its 3x3 box blur: 12 % (12 %); full 3x3 blur: 85 % (87 %); blurred
twice: 99 % (98 %); noise sigma 0.05: 3 % (5 %), 0.2: 67 % (72 %), 0.3: 97 % (96 %); shuffled
patches: 93 % (94 %).
Rank rule (`a_needed_share` > 0): the seeds with the largest gaps, that share of them, are
A_needed, whatever the absolute gap. Only for models too weak for the absolute scale to mean
much (the tiny test preset); the report says which rule made the labels (`label_rule`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from sklearn.metrics import roc_auc_score

from hybrid_jax import data as data_lib
from hybrid_jax.config import LabelerConfig

STATISTICS = ("grad_x_1", "grad_y_1", "grad_x_2", "grad_y_2", "grad_x_4", "grad_y_4", "laplacian",
              "patch_seams", "pixel_std", "fine_to_coarse", "laplacian_to_gradient")
_EPS = 1e-3  # keeps the log-ratios finite on flat images


@jax.jit
def image_statistics(images: jax.Array) -> jax.Array:
    """[n, 32, 32, 3] -> [n, 11] statistics in the order of STATISTICS."""
    g = images.mean(-1)
    out = []
    for s in (1, 2, 4):
        out += [jnp.abs(g[:, :, s:] - g[:, :, :-s]).mean((1, 2)), jnp.abs(g[:, s:] - g[:, :-s]).mean((1, 2))]
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    out.append(jnp.abs(lap).mean((1, 2)))
    dx, dy = jnp.abs(g[:, :, 1:] - g[:, :, :-1]), jnp.abs(g[:, 1:] - g[:, :-1])
    seams = np.arange(data_lib.PATCH - 1, 31, data_lib.PATCH)  # gradient index across a patch border
    across = dx[:, :, seams].mean((1, 2)) + dy[:, seams].mean((1, 2))
    out.append(jnp.log((across + _EPS) / (dx.mean((1, 2)) + dy.mean((1, 2)) + _EPS)))
    out.append(images.std((1, 2, 3)))
    fine, coarse = out[0] + out[1], out[2] + out[3]  # gradients at 1 and 2 pixels, x + y
    out.append(jnp.log((fine + _EPS) / (coarse + _EPS)))
    out.append(jnp.log((out[6] + _EPS) / (fine + _EPS)))
    return jnp.stack(out, 1)


def embed_all(images: np.ndarray, batch: int = 1024) -> np.ndarray:
    return np.concatenate([np.asarray(image_statistics(images[i:i + batch])) for i in range(0, len(images), batch)])


@dataclasses.dataclass(frozen=True)
class RealismScorer:
    """Bounded k-NN realism, in [0, 1], against a reference set of (standardised) real features."""

    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    ref: np.ndarray  # [m, D] standardised reference features
    radii: np.ndarray  # [m] distance of each reference to its k-th neighbour

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """[n, D] raw features -> [n] scores max_i r_i / (r_i + d_i) in [0, 1]."""
        return np.asarray(_realism(jnp.asarray((feats - self.mean) / self.scale), jnp.asarray(self.ref),
                                   jnp.asarray(self.radii)))


@jax.jit
def _pairwise(a, b):
    return jnp.sqrt(jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None] - 2 * a @ b.T, 0.0))


@jax.jit
def _realism(q, ref, radii):
    """max_i r_i / (r_i + d_i): R / (1 + R) for Kynkaanniemi's R = max_i r_i / d_i, without dividing by d_i."""
    r, d = radii[None], _pairwise(q, ref)
    denom = r + d
    ok = denom > 0  # r_i = d_i = 0 only for a query on a reference point with k exact duplicates
    return jnp.max(jnp.where(ok, r / jnp.where(ok, denom, 1.0), 1.0), axis=1)


def fit_scorer(ref_feats: np.ndarray, k: int) -> RealismScorer:
    if len(ref_feats) <= k:
        raise ValueError(f"the realism score needs more than k={k} reference images, got {len(ref_feats)}")
    mean, scale = ref_feats.mean(0), ref_feats.std(0) + 1e-6
    ref = (ref_feats - mean) / scale
    d = np.asarray(_pairwise(jnp.asarray(ref), jnp.asarray(ref)))
    radii = np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    return RealismScorer(mean, scale, ref, radii)


# --- the A/B rule ---------------------------------------------------------------------------

def real_pair_gaps(real_scores: np.ndarray) -> np.ndarray:
    """|score(r_i) - score(r_j)| over all n (n - 1) / 2 pairs i < j of distinct real images."""
    s = np.asarray(real_scores, np.float64).ravel()
    i, j = np.triu_indices(len(s), 1)
    return np.abs(s[i] - s[j])


def calibrate_tau(real_scores: np.ndarray, quantile: float) -> float:
    """The absolute rule's threshold: the `quantile` quantile of the real-vs-real gaps (`real_pair_gaps`)."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    s = np.asarray(real_scores, np.float64).ravel()
    if len(s) < 2:
        raise ValueError(f"calibrating tau needs at least 2 held-out real images, got {len(s)}")
    if not np.isfinite(s).all():
        raise ValueError("calibrating tau needs finite real-image scores")
    return float(np.quantile(real_pair_gaps(s), quantile))


def label_rule(cfg: LabelerConfig, real_scores: np.ndarray) -> tuple[float | None, str]:
    """(tau, one-line description) of the rule `label_pairs` applies with this config.

    tau is None under the rank rule, whose cut depends on the gaps of the seeds, not on real images.
    """
    if cfg.a_needed_share > 0:
        return None, (f"rank rule (for weak models only): the {cfg.a_needed_share:.1%} of seeds where "
                      f"realism(A) - realism(B) is largest are A_needed, whatever the absolute gap")
    n = int(np.size(real_scores))
    tau = calibrate_tau(real_scores, cfg.margin_quantile)
    return tau, (f"absolute rule: A_needed iff realism(A) - realism(B) > tau = {tau:.4f}, the "
                 f"q = {cfg.margin_quantile:g} quantile of |realism gap| over the {n * (n - 1) // 2} pairs of "
                 f"{n} held-out real images (smaller gaps count as 'about the same': cheap_ok)")


def label_pairs(score_a: np.ndarray, score_b: np.ndarray, real_scores: np.ndarray, cfg: LabelerConfig) -> list[str]:
    """The documented rule: "A_needed" iff score_A - score_B > tau, else "cheap_ok" (see the module docstring)."""
    score_a, score_b = np.asarray(score_a, np.float64).ravel(), np.asarray(score_b, np.float64).ravel()
    if score_a.shape != score_b.shape:
        raise ValueError(f"score_a and score_b differ in length: {len(score_a)} vs {len(score_b)}")
    gap = score_a - score_b
    if cfg.a_needed_share > 0:  # rank rule: the largest gaps, round(share * n) of them
        need = np.zeros(len(gap), bool)
        need[np.argsort(-gap, kind="stable")[: round(cfg.a_needed_share * len(gap))]] = True
    else:
        tau, _ = label_rule(cfg, real_scores)
        need = gap > tau
    return ["A_needed" if n else "cheap_ok" for n in need]


# --- validation: real images must outrank degraded copies --------------------------------

def blur(images: np.ndarray) -> np.ndarray:
    """3x3 box blur (edge padded)."""
    p = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return sum(p[:, i:i + 32, j:j + 32] for i in range(3) for j in range(3)) / 9.0


def add_noise(images: np.ndarray, seed: int = 0, sigma: float = 0.2) -> np.ndarray:
    return np.clip(images + sigma * np.random.default_rng(seed).standard_normal(images.shape), -1, 1).astype(np.float32)


def shuffle_patches(images: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.asarray(data_lib.patchify(images))
    perm = np.stack([rng.permutation(p.shape[1]) for _ in range(len(p))])
    return np.asarray(data_lib.unpatchify(np.take_along_axis(p, perm[..., None], 1)))


DEGRADATIONS = {"blur": blur, "noise": add_noise, "shuffled patches": shuffle_patches}


def validate(score_images: Callable[[np.ndarray], np.ndarray], held_out: np.ndarray) -> dict:
    """AUC of real-above-degraded per degradation (and pooled), on held-out real images."""
    real = score_images(held_out)
    out = {}
    for name, degrade in DEGRADATIONS.items():
        fake = score_images(degrade(held_out).astype(np.float32))
        y = np.r_[np.ones(len(real)), np.zeros(len(fake))]
        out[name] = float(roc_auc_score(y, np.r_[real, fake]))
    out["mean"] = float(np.mean(list(out.values())))
    return out


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [n, D]."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))
