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
Quality: the k-NN realism score of Kynkaanniemi et al. (2019) against the training images,
max_i r_i / ||f - f_i|| with r_i the distance of training feature f_i to its k-th
neighbour (> 1 means inside the real manifold).
Rule: A_needed iff the gap score(A) - score(B) exceeds tau, else cheap_ok. tau is
margin * std(score of held-out real images) (absolute rule), or, when `a_needed_share` > 0,
the seeds with the largest gaps, that share of them, are A_needed (rank rule: for models too weak
for the absolute scale to mean much; the report says which rule made the labels).
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
    """k-NN realism against a reference set of (standardised) real features."""

    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    ref: np.ndarray  # [m, D] standardised reference features
    radii: np.ndarray  # [m] distance of each reference to its k-th neighbour

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return np.asarray(_realism(jnp.asarray((feats - self.mean) / self.scale), jnp.asarray(self.ref),
                                   jnp.asarray(self.radii)))


@jax.jit
def _pairwise(a, b):
    return jnp.sqrt(jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None] - 2 * a @ b.T, 0.0))


@jax.jit
def _realism(q, ref, radii):
    return jnp.max(radii[None] / jnp.maximum(_pairwise(q, ref), 1e-8), axis=1)


def fit_scorer(ref_feats: np.ndarray, k: int) -> RealismScorer:
    if len(ref_feats) <= k:
        raise ValueError(f"the realism score needs more than k={k} reference images, got {len(ref_feats)}")
    mean, scale = ref_feats.mean(0), ref_feats.std(0) + 1e-6
    ref = (ref_feats - mean) / scale
    d = np.asarray(_pairwise(jnp.asarray(ref), jnp.asarray(ref)))
    radii = np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    return RealismScorer(mean, scale, ref, radii)


def label_pairs(score_a: np.ndarray, score_b: np.ndarray, real_scores: np.ndarray, cfg: LabelerConfig) -> list[str]:
    """The documented rule: A_needed iff score_A - score_B > tau (see the module docstring)."""
    gap = np.asarray(score_a) - np.asarray(score_b)
    if cfg.a_needed_share > 0:  # rank rule: the largest gaps, round(share * n) of them
        need = np.zeros(len(gap), bool)
        need[np.argsort(-gap, kind="stable")[: round(cfg.a_needed_share * len(gap))]] = True
    else:
        need = gap > cfg.margin * float(np.std(real_scores))
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
