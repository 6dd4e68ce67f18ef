"""Gradient-boosted trees for the degradation discriminator: fitted by scikit-learn, evaluated in JAX.

`fit` trains a `HistGradientBoostingClassifier` (class 1 = clean real image; one thread: on a few
thousand rows OpenMP threads only add spin-waiting, 10-50x slower on a loaded 2-core machine) and exports its
trees into the router's padded-array format (`hybrid_jax.trees.TreeEnsemble`, thresholds in raw
feature units, no scaler); `log_odds` walks them with the one JAX traversal (`hybrid_jax.trees`). Each split of sklearn
tests `x <= t` in float64; the export stores the largest float32 not above t, so for float32
inputs the JAX traversal takes exactly sklearn's branches (tested). Saved as plain arrays
(`to_arrays` / `from_arrays`): no pickle.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from hybrid_jax import trees as tree_lib
from hybrid_jax.quality import imagestats

ARRAYS = ("feature", "threshold", "left", "right", "value", "init", "depth")
_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class TreeConfig:
    iterations: int = 200
    depth: int = 3
    learning_rate: float = 0.1
    seed: int = 0


def fit(X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, cfg: TreeConfig) -> tree_lib.TreeEnsemble:
    """Boosted trees on (X [n, F], y [n] in {0, 1}) as a TreeEnsemble of raw log-odds of y = 1."""
    model = HistGradientBoostingClassifier(max_iter=cfg.iterations, max_depth=cfg.depth,
                                           learning_rate=cfg.learning_rate, early_stopping=False,
                                           random_state=cfg.seed)
    with threadpool_limits(limits=1, user_api="openmp"):  # a few thousand rows: threads only add spin-waiting
        model.fit(np.asarray(X, np.float32).astype(np.float64), np.asarray(y, int), sample_weight=sample_weight)
    return from_arrays(export_arrays(model))


def _f32_at_most(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= t (float64), elementwise; +-inf kept."""
    t32 = t.astype(np.float32)
    over = t32.astype(np.float64) > t
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


def export_arrays(model: HistGradientBoostingClassifier) -> dict[str, np.ndarray]:
    """Padded arrays of a fitted binary HistGradientBoostingClassifier (leaves loop to themselves)."""
    trees = [p[0].nodes for p in model._predictors]  # one predictor per iteration (binary)
    full = 2 ** (model.max_depth + 1) - 1 if model.max_depth else 0  # a full tree: one shape for every fit
    n_trees, max_nodes = len(trees), max(full, *(len(t) for t in trees))
    feature = np.zeros((n_trees, max_nodes), np.int32)
    threshold = np.zeros((n_trees, max_nodes), np.float32)
    left = np.tile(np.arange(max_nodes, dtype=np.int32), (n_trees, 1))
    right, value = left.copy(), np.zeros((n_trees, max_nodes), np.float32)
    depth = 0
    for i, nodes in enumerate(trees):
        n, split = len(nodes), ~nodes["is_leaf"].astype(bool)
        feature[i, :n] = np.where(split, nodes["feature_idx"], 0)
        threshold[i, :n] = np.where(split, _f32_at_most(nodes["num_threshold"].astype(np.float64)), 0.0)
        left[i, :n] = np.where(split, nodes["left"], np.arange(n))
        right[i, :n] = np.where(split, nodes["right"], np.arange(n))
        value[i, :n] = np.where(split, 0.0, nodes["value"])
        depth = max(depth, int(nodes["depth"].max()))
    init = np.asarray(np.ravel(model._baseline_prediction)[0], np.float32)
    return {"feature": feature, "threshold": threshold, "left": left, "right": right, "value": value,
            "init": init, "depth": np.asarray(depth, np.int32)}


def from_arrays(arrays) -> tree_lib.TreeEnsemble:
    """A TreeEnsemble from `export_arrays` (no z-scoring: mean 0, scale 1, learning rate 1)."""
    n_features = int(np.max(arrays["feature"])) + 1
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    return tree_lib.TreeEnsemble(
        mean=jnp.zeros(n_features), scale=jnp.ones(n_features), feature=jnp.asarray(arrays["feature"], jnp.int32),
        threshold=f32(arrays["threshold"]), left=jnp.asarray(arrays["left"], jnp.int32),
        right=jnp.asarray(arrays["right"], jnp.int32), value=f32(arrays["value"]), init=f32(arrays["init"]),
        learning_rate=f32(1.0), threshold_route=f32(0.5), depth=int(arrays["depth"]))


def to_arrays(ens: tree_lib.TreeEnsemble) -> dict[str, np.ndarray]:
    return {"feature": np.asarray(ens.feature), "threshold": np.asarray(ens.threshold), "left": np.asarray(ens.left),
            "right": np.asarray(ens.right), "value": np.asarray(ens.value), "init": np.asarray(ens.init),
            "depth": np.asarray(ens.depth, np.int32)}


_raw = jax.jit(tree_lib.raw_log_odds)


def log_odds(ens: tree_lib.TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """Raw log-odds of class 1 for X [n, F] (float32), as sklearn's decision_function."""
    X = np.asarray(X, np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected features [n, F], got shape {X.shape}")
    out = []
    for i in range(0, len(X), _CHUNK):  # rows padded to power-of-two counts: few compiled shapes
        chunk = X[i:i + _CHUNK]
        padded = np.resize(chunk, (imagestats.bucket(len(chunk), _CHUNK), X.shape[1]))
        out.append(np.asarray(_raw(ens, jnp.asarray(padded)), np.float64)[:len(chunk)])
    return np.concatenate(out) if out else np.zeros(0)
