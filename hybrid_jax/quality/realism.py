"""The previous labeler's score, kept as the validation baseline: bounded k-NN realism on eleven statistics.

Feature space: the eleven sharpness statistics of `imagestats.SHARPNESS`, standardised on the
reference (training) images. Quality: a bounded form of the k-NN realism score of Kynkaanniemi
et al. (2019). Their score R = max_i r_i / d_i (r_i: distance of reference feature f_i to its k-th
neighbour, d_i = ||f - f_i||) is unbounded: an image that nearly duplicates a reference image has
d_i ~ 0 and R in the millions. We use

    score = R / (1 + R) = max_i r_i / (r_i + d_i)   in [0, 1],

computed in the second form, so nothing is divided by d_i: 1 for an exact duplicate, 0.5 on the
boundary of the real manifold (d_i = r_i), towards 0 far outside. R / (1 + R) is strictly increasing
in R, so every ranking, and so every validation AUC, is the same as with R. (A reference point with
k exact duplicates has r_i = 0; a query on it gets 1 there.)

On held-out CIFAR-10 images this score ranks real above degraded copies well for blur, resampling
and patch shuffles, at chance for global photometric changes and poorly for wrong content
(docs/labeler.md); the labels stage reports its AUCs next to the new score's.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax.config import Geometry
from hybrid_jax.quality import imagestats

STATISTICS = imagestats.SHARPNESS


@functools.partial(jax.jit, static_argnames="geometry")
def image_statistics(images: jax.Array, geometry: Geometry = Geometry()) -> jax.Array:
    """[n, S, S, 3] -> [n, 11] statistics in the order of STATISTICS."""
    return imagestats.sharpness_statistics(images, geometry)


def embed_all(images: np.ndarray, batch: int = 1024, geometry: Geometry = Geometry()) -> np.ndarray:
    return np.concatenate([np.asarray(image_statistics(images[i:i + batch], geometry))
                           for i in range(0, len(images), batch)])


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


def baseline_scorer(reference: np.ndarray, k: int, geometry: Geometry = Geometry()):
    """images -> the previous labeler's score, fitted on `reference` images."""
    scorer = fit_scorer(embed_all(reference, geometry=geometry), min(k, len(reference) - 1))
    return lambda images: scorer(embed_all(np.asarray(images, np.float32), geometry=geometry))
