"""A fitted tree ensemble as arrays and its one JAX traversal, shared by the router (`hybrid_jax.routing.router`, which
routes in-graph) and the labeler's degradation discriminator (`hybrid_jax.quality.trees`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class TreeEnsemble:
    """A fitted ensemble as arrays; a pytree, so it passes through jax.jit / vmap.

    Trees are padded to `max_nodes`; leaves and padding loop to themselves, so `depth`
    traversal steps from the root always end on a leaf. `threshold` is in RAW feature units
    (the router's z-scoring folded in, `hybrid_jax.routing.router`); `mean`/`scale` are the scaler's statistics.
    """

    mean: jax.Array  # f32 [F]
    scale: jax.Array  # f32 [F]
    feature: jax.Array  # i32 [n_trees, max_nodes]
    threshold: jax.Array  # f32 [n_trees, max_nodes]; go left iff x <= threshold
    left: jax.Array  # i32 [n_trees, max_nodes], node index within the tree
    right: jax.Array  # i32 [n_trees, max_nodes]
    value: jax.Array  # f32 [n_trees, max_nodes], leaf values (raw log-odds units)
    init: jax.Array  # f32 scalar, prior log-odds of cheap_ok
    learning_rate: jax.Array  # f32 scalar
    threshold_route: jax.Array  # f32 scalar; B iff P(cheap_ok) >= threshold_route
    feature_names: tuple[str, ...] = struct.field(pytree_node=False, default=())
    depth: int = struct.field(pytree_node=False, default=0)


def raw_log_odds(ens: TreeEnsemble, rows: jax.Array) -> jax.Array:
    """Raw log-odds [n] of rows [n, F] (float32): all trees and rows advance together for `ens.depth` steps
    (gathers into the flattened node arrays); raw = init + learning_rate x the sum of the leaf values reached."""
    n_trees, max_nodes = ens.feature.shape
    offset = jnp.arange(n_trees, dtype=jnp.int32) * max_nodes
    feature, threshold = ens.feature.reshape(-1), ens.threshold.reshape(-1)
    left, right = ens.left.reshape(-1), ens.right.reshape(-1)

    def step(_, node):  # node: [n, n_trees] local node index
        at = node + offset
        x = jnp.take_along_axis(rows, feature[at], axis=1)
        return jnp.where(x <= threshold[at], left[at], right[at])

    node = jax.lax.fori_loop(0, ens.depth, step, jnp.zeros((rows.shape[0], n_trees), jnp.int32))
    return ens.init + ens.learning_rate * jnp.sum(ens.value.reshape(-1)[node + offset], axis=1)


ARRAYS = ("mean", "scale", "feature", "threshold", "left", "right", "value", "init", "learning_rate",
           "threshold_route")
ENSEMBLE_ARRAYS = (*ARRAYS, "depth")  # what `ensemble_from_arrays` reads


def ensemble_from_arrays(arrays: Mapping[str, np.ndarray], feature_names: Sequence[str]) -> TreeEnsemble:
    """A TreeEnsemble from NumPy arrays (`hybrid_jax.routing.router.export_arrays`) (e.g. read back from an .npz)."""
    return TreeEnsemble(**{k: jnp.asarray(arrays[k]) for k in ARRAYS}, feature_names=tuple(feature_names),
                        depth=int(arrays["depth"]))


def constant_ensemble(p: float, feature_names: Sequence[str]) -> TreeEnsemble:
    """An ensemble that predicts `p` for every input: one tree of one leaf, init = logit(p) (clipped)."""
    eps = np.finfo(np.float32).eps
    q = float(np.clip(p, eps, 1 - eps))
    n = len(feature_names)
    zero = np.zeros((1, 1), np.int32)
    return ensemble_from_arrays({"mean": np.zeros(n, np.float32), "scale": np.ones(n, np.float32), "feature": zero,
                                 "threshold": np.full((1, 1), np.inf, np.float32), "left": zero, "right": zero,
                                 "value": np.zeros((1, 1), np.float32), "init": np.float32(np.log(q / (1 - q))),
                                 "learning_rate": np.float32(1.0), "threshold_route": np.float32(0.5), "depth": 0},
                                feature_names)


def ensemble_arrays(ens: TreeEnsemble) -> dict[str, np.ndarray]:
    """`ENSEMBLE_ARRAYS` of `ens` as NumPy (the inverse of `ensemble_from_arrays`, names apart)."""
    return {**{k: np.asarray(getattr(ens, k)) for k in ARRAYS}, "depth": np.asarray(ens.depth, np.int32)}
