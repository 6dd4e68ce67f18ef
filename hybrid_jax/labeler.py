"""Automated quality labels (the brief's future work) from Model A's own U-Net features.

Feature space: the U-Net of Model A reads a clean image (slightly noised to step
`feature_timestep`, noise-free, no context, whole image as target); the sown level outputs are
pooled (mean and std over space) and concatenated. Quality: the k-NN realism score of
Kynkaanniemi et al. (2019) against the training images, max_i r_i / ||f - f_i|| with r_i the
distance of training feature f_i to its k-th neighbour (> 1 means inside the real manifold).
Rule: cheap_ok iff score(B) >= score(A) - margin * std(score of held-out real images).
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
from hybrid_jax import diffusion, model_a
from hybrid_jax.config import LabelerConfig, ModelAConfig


def make_embedder(cfg: ModelAConfig, timestep: int) -> Callable:
    """jitted embed(params, images [n,32,32,3]) -> [n, D] pooled U-Net features."""
    unet = model_a.make_unet(cfg)
    sched = diffusion.linear_schedule(cfg.steps_per_block)
    t_index = min(timestep, cfg.steps_per_block - 1)

    def embed(params, images):
        n = images.shape[0]
        t = jnp.full((n,), t_index, jnp.int32)
        x_t = diffusion.q_sample(sched, images, t, jnp.zeros_like(images))
        cond = jnp.concatenate([jnp.zeros_like(images), jnp.zeros_like(images[..., :1]),
                                jnp.ones_like(images[..., :1])], axis=-1)
        _, inter = unet.apply({"params": params}, x_t, t, cond, mutable=["intermediates"])
        feats = inter["intermediates"]["features"]
        pooled = [jnp.concatenate([f.mean(axis=(1, 2)), f.std(axis=(1, 2))], -1) for f in feats]
        return jnp.concatenate(pooled, -1).astype(jnp.float32)

    return jax.jit(embed)


def embed_all(embed: Callable, params, images: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([np.asarray(embed(params, images[i:i + batch])) for i in range(0, len(images), batch)])


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
    """The documented rule: cheap_ok iff B is no worse than A by more than margin * std(real)."""
    tol = cfg.margin * float(np.std(real_scores))
    return ["cheap_ok" if b >= a - tol else "A_needed" for a, b in zip(score_a, score_b)]


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
