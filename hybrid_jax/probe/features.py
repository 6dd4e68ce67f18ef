"""Router features read off Model B's first k AR steps (brief: 24 candidates from 12 steps).

Four groups, as in the brief. With L decoder layers there are 18 + L features (24 for the
paper's 6 layers). Every feature is a pure JAX function of the `Prefix` arrays; formulas
are in docs/features.md. Notation: s_i sampled patch i, m_i its predicted mean, A the
attention of a step's query over the visible positions 0..i (i >= 1 only, since step 0
sees nothing but the start token), x the partial image (the k patches; rows below are
masked out of every image statistic). Nothing assumes a number of AR steps: k is the prefix's
length (>= 2) and the image is laid out by the configured `Geometry`.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import geometry as geometry_lib
from hybrid_jax.config import Geometry


class Prefix(Protocol):
    """What the features read off a family's AR prefix (B's `generators.model_b.Prefix` is one): a structural type,
    so the generators that read these features are not imported back."""

    state: Any  # .patches [b, N, P]: the sampled patches, zeros beyond the prefix
    attn: jax.Array  # [k, layers, b, heads, N]
    means: jax.Array  # [k, b, P]
    tf_means: jax.Array  # [b, k, P]
    labels: jax.Array  # [b]


AR_DYNAMICS = ("mse_consec_mean", "mse_consec_std", "mse_consec_max", "spatial_var", "autocorr",
               "attn_entropy", "attn_entropy_trend", "attn_focus", "hf_energy", "pred_energy")
IMAGE_LEVEL = ("pixel_std", "dynamic_range", "edge_energy", "symmetry_error", "clip_fraction", "colorfulness")
SELF_CONSISTENCY = ("tf_discrepancy_mean", "tf_discrepancy_max")


def class_names_of(class_names: tuple[str, ...]) -> tuple[str, ...]:
    """The class feature columns: one per class where there are several (one class: none)."""
    return tuple(f"class={c}" for c in class_names) if len(class_names) > 1 else ()


def feature_names(num_layers: int, class_names: tuple[str, ...] = ()) -> tuple[str, ...]:
    return (AR_DYNAMICS + IMAGE_LEVEL + SELF_CONSISTENCY + tuple(f"layer{l + 1}_max_attn" for l in range(num_layers))
            + class_names_of(class_names))


def feature_groups(num_layers: int, class_names: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    groups = {"AR dynamics": AR_DYNAMICS, "image level": IMAGE_LEVEL, "self-consistency": SELF_CONSISTENCY,
              "per layer": feature_names(num_layers)[len(AR_DYNAMICS + IMAGE_LEVEL + SELF_CONSISTENCY):]}
    return groups | ({"class": cls} if (cls := class_names_of(class_names)) else {})


def _masked_mean(v, mask, axis=(1, 2, 3)):
    mask = jnp.broadcast_to(mask, v.shape)
    return jnp.sum(v * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def _slope(y: jax.Array) -> jax.Array:
    """Least-squares slope of y [b, n] against 0..n-1."""
    t = jnp.arange(y.shape[-1], dtype=jnp.float32)
    t = t - t.mean()
    return jnp.sum((y - y.mean(-1, keepdims=True)) * t, -1) / jnp.maximum(jnp.sum(t * t), 1e-12)


def step_mse(samples: jax.Array) -> jax.Array:
    """Mean squared change between consecutive patches: [b, k, 192] -> [b, k-1]."""
    return jnp.mean(jnp.square(samples[:, 1:] - samples[:, :-1]), axis=-1)


def attention_entropy(attn: jax.Array) -> jax.Array:
    """Entropy of each step's attention, normalised by log(#visible): [k, L, b, H, N] -> [k-1, L, b, H] in [0, 1].

    1 for uniform attention over the visible positions, 0 for attention on one position.
    """
    n_visible = jnp.arange(2, attn.shape[0] + 1, dtype=jnp.float32).reshape(-1, 1, 1, 1)
    return _entropy(attn[1:]) / jnp.log(n_visible)


def _entropy(weights: jax.Array) -> jax.Array:
    """Entropy (nats) of attention weights over their last axis; zero weights add nothing."""
    return -jnp.sum(jnp.where(weights > 0, weights * jnp.log(jnp.where(weights > 0, weights, 1.0)), 0.0), axis=-1)


def ar_dynamics(samples, means, attn, image, mask) -> list[jax.Array]:
    d = step_mse(samples)
    patch_means = samples.mean(-1)
    ent = attention_entropy(attn)  # [k-1, L, b, H]
    return [d.mean(-1), d.std(-1), d.max(-1), patch_means.var(-1), autocorrelation(image, mask),
            ent.mean(axis=(1, 3)).mean(0), _slope(ent.mean(axis=(1, 3)).T), attn[1:].max(-1).mean(axis=(0, 1, 3)),
            high_frequency_energy(image, mask), jnp.mean(jnp.square(means), axis=(0, 2))]


def autocorrelation(image, mask) -> jax.Array:
    """Pearson correlation of horizontally and vertically adjacent visible pixels."""
    pairs = [(image[:, :, :-1], image[:, :, 1:], mask[:, :-1] * mask[:, 1:]),
             (image[:, :-1], image[:, 1:], mask[:-1] * mask[1:])]
    a = jnp.concatenate([p[0].reshape(p[0].shape[0], -1) for p in pairs], 1)
    b = jnp.concatenate([p[1].reshape(p[1].shape[0], -1) for p in pairs], 1)
    m = jnp.concatenate([jnp.broadcast_to(p[2], p[0].shape[1:]).reshape(-1) for p in pairs])
    n = jnp.maximum(m.sum(), 1.0)
    ma, mb = (a * m).sum(1) / n, (b * m).sum(1) / n
    cov = ((a - ma[:, None]) * (b - mb[:, None]) * m).sum(1) / n
    va = (jnp.square(a - ma[:, None]) * m).sum(1) / n
    vb = (jnp.square(b - mb[:, None]) * m).sum(1) / n
    return cov / jnp.sqrt(jnp.maximum(va * vb, 1e-12))


def high_frequency_energy(image, mask) -> jax.Array:
    """Share of the spectral energy of the (mean-removed, grey) visible image above 1/4 cycle/pixel."""
    grey = image.mean(-1) * mask[..., 0]
    grey = grey - _masked_mean(grey[..., None], mask, axis=(1, 2, 3))[:, None, None]
    power = jnp.square(jnp.abs(jnp.fft.fft2(grey * mask[..., 0])))
    f = np.fft.fftfreq(image.shape[1])
    high = (np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) > 0.25).astype(np.float32)
    return jnp.sum(power * high, axis=(1, 2)) / jnp.maximum(jnp.sum(power, axis=(1, 2)), 1e-12)


def image_level(image, mask) -> list[jax.Array]:
    mean = _masked_mean(image, mask)
    std = jnp.sqrt(_masked_mean(jnp.square(image - mean[:, None, None, None]), mask))
    big = jnp.where(mask > 0, image, -jnp.inf).max(axis=(1, 2, 3))
    small = jnp.where(mask > 0, image, jnp.inf).min(axis=(1, 2, 3))
    dx = jnp.square(image[:, :, 1:] - image[:, :, :-1])
    dy = jnp.square(image[:, 1:] - image[:, :-1])
    edges = (_masked_mean(dx, mask[:, 1:] * mask[:, :-1]) + _masked_mean(dy, mask[1:] * mask[:-1])) / 2
    mirror = mask * mask[:, ::-1]
    symmetry = _masked_mean(jnp.square(image - image[:, :, ::-1]), mirror)
    clipped = _masked_mean((jnp.abs(image) > 0.95).astype(jnp.float32), mask)
    colour = _masked_mean(image.std(-1, keepdims=True), mask)
    return [std, big - small, edges, symmetry, clipped, colour]


def self_consistency(means, tf_means) -> list[jax.Array]:
    """How much each prediction changes when the model re-reads its own means instead of its noisy samples."""
    disc = jnp.mean(jnp.square(tf_means - jnp.swapaxes(means, 0, 1)), axis=-1)[:, 1:]  # [b, k-1]
    return [disc.mean(-1), disc.max(-1)]


def per_layer(attn) -> list[jax.Array]:
    """Per layer: the largest attention weight of any head, averaged over steps 1..k-1."""
    top = attn[1:].max(axis=(-1, -2)).mean(0)  # [L, b]
    return list(top)


def compute(prefix: Prefix, geometry: Geometry, num_classes: int = 1) -> jax.Array:
    """[b, 18 + L (+ C)] feature matrix in the order of `feature_names(L, classes)`, from a prefix of k >= 2 AR
    steps; with C = `num_classes` > 1 classes, the seed's class one-hot last (the prefix carries it)."""
    k = prefix.attn.shape[0]
    if not 2 <= k <= geometry.num_patches:
        raise ValueError(f"features need 2 to {geometry.num_patches} AR steps (the patches of the geometry), got {k}")
    samples = prefix.state.patches[:, :k]
    mask = jnp.asarray(geometry_lib.visible_mask(k, geometry))
    image = geometry_lib.unpatchify(prefix.state.patches, geometry) * mask
    cols = (ar_dynamics(samples, prefix.means, prefix.attn, image, mask) + image_level(image, mask)
            + self_consistency(prefix.means, prefix.tf_means) + per_layer(prefix.attn))
    feats = jnp.stack(cols, axis=-1).astype(jnp.float32)
    if num_classes < 2:
        return feats
    return jnp.concatenate([feats, jax.nn.one_hot(prefix.labels, num_classes, dtype=jnp.float32)], axis=-1)


A_PROBE = tuple("x0_" + n for n in ("autocorr", "hf_energy") + IMAGE_LEVEL) + ("x0_drift", "x0_drift_max")


def query_entropy(weights: Sequence[jax.Array], queries: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The attention entropy of the `queries` [b, q] (bool) in each layer's weights [b, heads, q, k] (exact zeros on
    the keys a query cannot see: a key with weight > 0 counts as seen), each normalised by log(#keys it sees) (1:
    uniform, 0: one key), summed over layers, heads and queries, and how many (layer, head, query) triples that sum
    holds: ([b], [b]). A query that sees one key (its entropy undefined) counts as none. Sum over steps, then
    divide: `entropy_mean`."""
    total, count = 0.0, 0.0
    for w in weights:
        seen = jnp.sum(w > 0, axis=-1)  # [b, h, q]
        ent = _entropy(w)
        use = queries[:, None, :] & (seen > 1)
        total = total + jnp.sum(jnp.where(use, ent / jnp.log(jnp.maximum(seen, 2)), 0.0), axis=(1, 2))
        count = count + jnp.sum(use, axis=(1, 2)).astype(jnp.float32)
    return total, count


def entropy_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """[b] mean normalised attention entropy from `query_entropy`'s sums and counts stacked over layers and steps
    [..., b]; 0 where no query counts."""
    total, count = (v.reshape(-1, v.shape[-1]).sum(0) for v in (total, count))
    return total / jnp.maximum(count, 1.0)


def a_probe(x0: jax.Array, mask: np.ndarray) -> jax.Array:
    """[b, 10] features (`A_PROBE`) of Model A's probe from its predicted clean image after each step
    x0 [p, b, S, S, 3] on the probed block (`mask` [S, S, 1]): the last prediction's image statistics and
    how much the prediction still moves between steps (0 for a one-step probe)."""
    mask = jnp.asarray(mask)
    image = x0[-1] * mask
    drift = jnp.stack([_masked_mean(jnp.square(b - a), mask) for a, b in zip(x0[:-1], x0[1:])] or
                      [jnp.zeros(x0.shape[1])])
    cols = ([autocorrelation(image, mask), high_frequency_energy(image, mask)] + image_level(image, mask)
            + [drift.mean(0), drift.max(0)])
    return jnp.stack(cols, axis=-1).astype(jnp.float32)
