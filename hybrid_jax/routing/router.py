"""The router (Model R): gradient boosting on z-scored probe features, and its JAX export.

Training and evaluation follow the brief: sklearn's GradientBoostingClassifier on
StandardScaler-z-scored features, route a seed to the cheap Model B iff P(cheap_ok) >=
threshold, report k-fold CV and the best of several random stratified splits (by test
precision), sweep the threshold, and drop features by leave-one-out ablation on precision.

The fitted trees are exported to padded arrays (`hybrid_jax.trees.TreeEnsemble`) so routing runs inside a
jitted JAX graph with the same probabilities as sklearn's `predict_proba`. Exactness: sklearn
casts the z-scored input to float32 and tests `z32 <= threshold64`. Because z-scoring and
that cast are monotone in the raw feature value, each split is equivalent to `x32 <= t32`
for one float32 `t32` in raw feature units, found exactly by bisection over the float32
values. The export folds the scaler into these thresholds, so for float32 inputs the JAX
traversal visits exactly sklearn's leaves (no f32 z-scoring round-off near a split); the
scaler's mean/scale stay in the ensemble for reference. Saved routers are an .npz of arrays
plus a JSON of metadata: no pickle.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sklearn
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.preprocessing import StandardScaler

from hybrid_jax import io, trees
from hybrid_jax.trees import (ENSEMBLE_ARRAYS, TreeEnsemble, constant_ensemble, ensemble_arrays,  # noqa: F401
                               ensemble_from_arrays)
from hybrid_jax.config import RouterConfig

FORMAT_VERSION = 1
TREES_FILE = "router_trees.npz"
META_FILE = "router.json"
SUMMARY_KEYS = ("accuracy", "precision", "recall")


class RouterError(ValueError):
    """Bad router input (shapes, labels, threshold) or a missing/corrupt saved router."""


# ----------------------------------------------------------------------------- checks

def _check_threshold(threshold) -> float:
    t = float(threshold)
    if not (np.isfinite(t) and 0.0 <= t <= 1.0):
        raise RouterError(f"routing threshold must be a probability in [0, 1], got {threshold!r}")
    return t


def _check_X(X, n_features: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise RouterError(f"features must be a 2-D array (seeds x features), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise RouterError(f"expected {n_features} features per seed, got {X.shape[1]}; pass the "
                          "router's feature columns (Router.feature_names) in its order")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise RouterError(f"features contain NaN/inf (first at row {bad[0]}, column {bad[1]}); "
                          "fix feature extraction for that seed")
    return X


def _check_targets(y, n: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or (n is not None and len(y) != n):
        raise RouterError(f"targets must be 1-D with one entry per seed ({n}), got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise RouterError("targets must be 0 (A_needed) or 1 (cheap_ok); use labels.to_targets")
    return y.astype(np.int64)


def _check_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = _check_X(X)
    y = _check_targets(y, len(X))
    if len(np.unique(y)) < 2:
        only = "cheap_ok" if y[0] == 1 else "A_needed"
        raise RouterError(f"the router needs both cheap_ok (1) and A_needed (0) examples; every seed is {only}. "
                          "The labels leave nothing to learn: the best strategy by these labels is to always use "
                          f"{'B' if only == 'cheap_ok' else 'A'}. To study the router anyway, label people's way "
                          "(--labels) or force a balance with the rank rule (--set labeler.a_needed_share=0.672), "
                          "which the report then flags")
    return X, y


def _check_names(feature_names: Sequence[str] | None, n: int) -> tuple[str, ...]:
    names = tuple(f"f{i}" for i in range(n)) if feature_names is None else tuple(map(str, feature_names))
    if len(names) != n:
        raise RouterError(f"expected {n} feature names (one per column), got {len(names)}")
    if len(set(names)) != n:
        raise RouterError(f"feature names must be unique, got {names}")
    return names


def _check_min_class(y: np.ndarray, k: int, what: str, knob: str = "router.cv_folds") -> None:
    smallest = int(np.bincount(y, minlength=2).min())
    if smallest < k:
        raise RouterError(f"{what} needs at least {k} seeds of each class, the rarer class has "
                          f"{smallest}; label more seeds or lower {knob}")


# ----------------------------------------------------------------------------- sklearn router

@dataclass(frozen=True, eq=False)
class Router:
    """A fitted router: z-scoring, the sklearn model (1 = cheap_ok) and the routing threshold."""

    feature_names: tuple[str, ...]
    mean: np.ndarray  # StandardScaler.mean_, float64 [F]
    scale: np.ndarray  # StandardScaler.scale_, float64 [F] (1 for constant features)
    model: GradientBoostingClassifier
    threshold: float


def _zscore(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """StandardScaler.transform's arithmetic (in float64, same IEEE operations): (X - mean) / scale."""
    return (np.asarray(X, np.float64) - mean) / scale


def fit(X, y, cfg: RouterConfig, feature_names: Sequence[str] | None = None) -> Router:
    """Fit StandardScaler statistics + GradientBoostingClassifier; deterministic in cfg.seed."""
    X, y = _check_xy(X, y)
    names = _check_names(feature_names, X.shape[1])
    scaler = StandardScaler().fit(X)
    mean, scale = scaler.mean_, scaler.scale_
    model = GradientBoostingClassifier(n_estimators=cfg.n_estimators, max_depth=cfg.max_depth,
                                       learning_rate=cfg.learning_rate, random_state=cfg.seed)
    model.fit(_zscore(X, mean, scale), y)
    return Router(names, mean, scale, model, _check_threshold(cfg.threshold))


def predict_proba(router: Router, X) -> np.ndarray:
    """P(cheap_ok) per row of X, from sklearn."""
    X = _check_X(X, len(router.feature_names))
    return router.model.predict_proba(_zscore(X, router.mean, router.scale))[:, 1]


def metrics(y_true, p, threshold: float) -> dict:
    """Routing quality at `threshold` (B iff p >= threshold), cheap_ok is the positive class.

    precision = cheap_ok among seeds sent to B, recall = share of cheap_ok seeds sent to B.
    Like sklearn with zero_division=0, precision is 0.0 when nothing goes to B (then
    `precision_defined` is False) and recall is 0.0 when there is no cheap_ok seed.
    """
    t = _check_threshold(threshold)
    p = np.asarray(p, np.float64).reshape(-1)
    y = _check_targets(y_true, len(p))
    if len(y) == 0:
        raise RouterError("metrics need at least one seed")
    to_b = (p >= t).astype(np.int64)
    tp, n_to_b, n_pos = int(np.sum(to_b & y)), int(to_b.sum()), int(y.sum())
    return {"n": len(y), "accuracy": float(np.mean(to_b == y)),
            "precision": tp / n_to_b if n_to_b else 0.0, "recall": tp / n_pos if n_pos else 0.0,
            "share_to_A": 1.0 - n_to_b / len(y), "n_to_B": n_to_b, "n_cheap_ok": n_pos,
            "precision_defined": n_to_b > 0}


def threshold_sweep(y_true, p, thresholds: Sequence[float]) -> list[dict]:
    """`metrics` at each threshold, with the threshold in each row."""
    return [{"threshold": float(t), **metrics(y_true, p, t)} for t in thresholds]


def class_prior_baseline(y) -> dict:
    """A random router's precision equals the share of cheap_ok seeds (brief: 32.8 %)."""
    y = _check_targets(y)
    return {"n": len(y), "n_cheap_ok": int(y.sum()), "precision": float(y.mean()) if len(y) else 0.0}


def _fit_eval(X, y, train, test, cfg: RouterConfig, names) -> tuple[Router, dict, dict, np.ndarray]:
    """Fit on `train`; metrics on train and test at cfg.threshold; test probabilities."""
    router = fit(X[train], y[train], cfg, names)
    p_test = predict_proba(router, X[test])
    return (router, metrics(y[train], predict_proba(router, X[train]), cfg.threshold),
            metrics(y[test], p_test, cfg.threshold), p_test)


def _summary(rows: list[dict], stat) -> dict:
    return {k: float(stat([r[k] for r in rows])) for k in SUMMARY_KEYS}


def cv_table(folds: list[dict], threshold: float) -> dict:
    """The CV report from per-fold rows ({"train": metrics, "test": metrics, ...}).

    Mean and (population) std over folds of test accuracy/precision/recall, mean train metrics.
    """
    tests = [f["test"] for f in folds]
    return {"n_folds": len(folds), "threshold": threshold, "folds": folds,
            "test_mean": _summary(tests, np.mean), "test_std": _summary(tests, np.std),
            "train_mean": _summary([f["train"] for f in folds], np.mean)}


def best_index(tests: Sequence[dict]) -> int:
    """The best split: highest test precision, ties broken by higher test recall, then lower index."""
    return min(range(len(tests)), key=lambda i: (-tests[i]["precision"], -tests[i]["recall"], i))


def _kfold(y: np.ndarray, k: int, cfg: RouterConfig, what: str,
           knob: str = "router.cv_folds") -> list[tuple[np.ndarray, np.ndarray]]:
    _check_min_class(y, k, what, knob)
    return list(StratifiedKFold(k, shuffle=True, random_state=cfg.seed).split(np.zeros(len(y)), y))


def cross_validate(X, y, cfg: RouterConfig, feature_names: Sequence[str] | None = None) -> dict:
    """Stratified k-fold CV (cfg.cv_folds, shuffled with cfg.seed) at cfg.threshold.

    Returns per-fold train/test metrics, the mean and (population) std over folds of test
    accuracy/precision/recall, and the mean train metrics.
    """
    X, y = _check_xy(X, y)
    names = _check_names(feature_names, X.shape[1])
    folds = []
    for i, (train, test) in enumerate(_kfold(y, cfg.cv_folds, cfg, "cross-validation")):
        _, m_train, m_test, _ = _fit_eval(X, y, train, test, cfg, names)
        folds.append({"fold": i, "n_train": len(train), "n_test": len(test), "train": m_train, "test": m_test})
    return cv_table(folds, cfg.threshold)


def best_of_splits(X, y, cfg: RouterConfig, feature_names: Sequence[str] | None = None) -> dict:
    """cfg.n_splits stratified random splits (test share cfg.test_fraction); keep the best.

    Best = highest test precision, ties broken by higher test recall, then lower split index.
    Returns `index`, `train_idx`, `test_idx`, its `train`/`test` metrics, `router` (the
    fitted Router of that split; not JSON) and `splits` (test metrics of every split).
    """
    X, y = _check_xy(X, y)
    names = _check_names(feature_names, X.shape[1])
    splitter = StratifiedShuffleSplit(cfg.n_splits, test_size=cfg.test_fraction, random_state=cfg.seed)
    runs = [_fit_eval(X, y, train, test, cfg, names) + (train, test)
            for train, test in splitter.split(np.zeros(len(y)), y)]
    best = best_index([r[2] for r in runs])
    router, m_train, m_test, _, train, test = runs[best]
    return {"index": best, "train_idx": train, "test_idx": test, "train": m_train, "test": m_test,
            "router": router, "splits": [r[2] for r in runs]}


# The leave-one-out ablation in pieces, so that `ablation` below (serial, on the rows given)
# and the cross-fitted recipe (`hybrid_jax.routing.crossfit`, parallel and cached) share every decision.

def ablation_folds(y, cfg: RouterConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ablation's fixed inner folds over the rows of `y`: stratified, cfg.ablation_folds, shuffled with cfg.seed."""
    return _kfold(_check_targets(y), cfg.ablation_folds, cfg, "ablation", "router.ablation_folds")


def screen_config(cfg: RouterConfig) -> RouterConfig:
    """cfg with the screening fits' tree count (cfg.screen_estimators): same depth, learning rate, seed."""
    return dataclasses.replace(cfg, n_estimators=cfg.screen_estimators)


def ablation_sets(n_features: int) -> list[tuple[int, ...]]:
    """Column sets the ablation screens: all columns first, then all but column i for each i (F > 1)."""
    every = tuple(range(n_features))
    return [every] + ([tuple(j for j in every if j != i) for i in every] if n_features > 1 else [])


def _ablation_delta(names: tuple[str, ...], precisions: Sequence[float]) -> dict[str, float]:
    p_all = precisions[0]
    return ({n: float(precisions[1 + i] - p_all) for i, n in enumerate(names)} if len(names) > 1
            else {names[0]: 0.0})


def ablation_kept(names: Sequence[str], precisions: Sequence[float]) -> list[str]:
    """Kept features, from the pooled precisions of the `ablation_sets` (same order).

    A feature whose removal raises precision (delta > 0) is dropped; at least one feature
    (the one whose removal hurts most) is kept.
    """
    names = tuple(names)
    delta = _ablation_delta(names, precisions)
    return [n for n in names if delta[n] <= 0] or [min(names, key=delta.get)]


def ablation_summary(names: Sequence[str], precisions: Sequence[float], precision_kept: float,
                     cfg: RouterConfig) -> dict:
    """The ablation report: per-feature delta, kept/dropped, pooled precision of all and of the kept features."""
    names = tuple(names)
    kept = ablation_kept(names, precisions)
    return {"n_folds": cfg.ablation_folds, "n_estimators": cfg.screen_estimators, "threshold": cfg.threshold,
            "delta": _ablation_delta(names, precisions), "kept": kept,
            "dropped": [n for n in names if n not in kept], "precision_all": float(precisions[0]),
            "precision_kept": float(precision_kept)}


def pooled_precision(y, parts: Sequence[tuple[np.ndarray, np.ndarray]], threshold: float) -> float:
    """Precision at `threshold` of out-of-fold predictions pooled over folds: (rows, P(cheap_ok)) per fold."""
    rows = np.concatenate([r for r, _ in parts])
    return metrics(np.asarray(y)[rows], np.concatenate([p for _, p in parts]), threshold)["precision"]


def ablation(X, y, feature_names: Sequence[str], cfg: RouterConfig) -> dict:
    """Leave-one-out feature ablation on router precision (the brief: 24 -> 18 features).

    Precision is measured on pooled out-of-fold predictions of one fixed stratified k-fold
    CV (`ablation_folds`: k = cfg.ablation_folds, shuffled with cfg.seed), the same folds for
    every feature set: pooling is steadier than a mean of per-fold precisions, which are
    undefined on folds that send nothing to B. Screening fits use cfg.screen_estimators
    trees (see RouterConfig). Decisions: `ablation_kept`. Runs serially on the rows given;
    `hybrid_jax.routing.crossfit.RouterRecipe` runs the same ablation on each recipe's training rows.
    """
    X, y = _check_xy(X, y)
    names = _check_names(feature_names, X.shape[1])
    folds, screen = ablation_folds(y, cfg), screen_config(cfg)

    def precision(cols: Sequence[int]) -> float:
        cols = list(cols)
        return pooled_precision(y, [(test, predict_proba(fit(X[train][:, cols], y[train], screen), X[test][:, cols]))
                                    for train, test in folds], cfg.threshold)

    precisions = [precision(cols) for cols in ablation_sets(len(names))]
    kept = ablation_kept(names, precisions)
    p_kept = precisions[0] if len(kept) == len(names) else precision([names.index(n) for n in kept])
    return ablation_summary(names, precisions, p_kept, cfg)


# ----------------------------------------------------------------------------- JAX export

_MAX_KEY = np.int64(np.array(np.finfo(np.float32).max, np.float32).view(np.int32))


def _f32_to_key(x: np.ndarray) -> np.ndarray:
    """Order-preserving map from float32 to int64 (0.0 and -0.0 both map to 0)."""
    bits = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _key_to_f32(key: np.ndarray) -> np.ndarray:
    bits = np.where(key < 0, (-key) | 0x80000000, key).astype(np.uint32)
    return bits.view(np.float32)


def _raw_thresholds(feature: np.ndarray, thr64: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per split, the largest float32 x with float32(zscore(x)) <= thr64, by bisection.

    Exact: float64 z-scoring and the float32 cast are monotone, so sklearn's test on a
    float32 input x is `x <= result`. +inf / -inf when every / no finite float32 goes left.
    """
    def goes_left(key):
        z = _zscore(_key_to_f32(key), mean[feature], scale[feature])
        with np.errstate(over="ignore"):  # huge |x| cast to +-inf, still ordered
            return z.astype(np.float32) <= thr64

    lo, hi = np.full(thr64.shape, -_MAX_KEY), np.full(thr64.shape, _MAX_KEY)
    all_left, none_left = goes_left(hi), ~goes_left(lo)
    while np.any(hi - lo > 1):  # invariant where neither: goes_left(lo) and not goes_left(hi)
        mid = (lo + hi) // 2
        ok = goes_left(mid)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    out = _key_to_f32(lo)
    out[all_left], out[none_left] = np.inf, -np.inf
    return out


def _init_log_odds(model: GradientBoostingClassifier) -> float:
    """sklearn's constant initial raw prediction: logit of the clipped class prior."""
    if model.init_ == "zero":
        return 0.0
    prior = model.init_.predict_proba(np.zeros((1, model.n_features_in_)))[0, 1]
    eps = np.finfo(np.float64).eps
    prior = float(np.clip(prior, eps, 1 - eps))
    return float(np.log(prior / (1 - prior)))


def export_trees(router: Router) -> TreeEnsemble:
    """Pad `router.model.estimators_[:, 0]` into arrays for `jax_predict_proba`."""
    return ensemble_from_arrays(export_arrays(router), router.feature_names)


def export_arrays(router: Router) -> dict[str, np.ndarray]:
    """The padded tree arrays of `export_trees` as NumPy (float32/int32, plus `depth`); no JAX needed."""
    trees = [est.tree_ for est in router.model.estimators_[:, 0]]
    n_trees, max_nodes = len(trees), max(t.node_count for t in trees)
    feature = np.zeros((n_trees, max_nodes), np.int32)
    thr64 = np.zeros((n_trees, max_nodes), np.float64)
    left = np.tile(np.arange(max_nodes, dtype=np.int32), (n_trees, 1))
    right, value = left.copy(), np.zeros((n_trees, max_nodes), np.float64)
    internal = np.zeros((n_trees, max_nodes), bool)
    for i, t in enumerate(trees):
        n, is_split = t.node_count, t.children_left != -1
        internal[i, :n] = is_split
        feature[i, :n] = np.where(is_split, t.feature, 0)
        thr64[i, :n] = np.where(is_split, t.threshold, 0.0)
        left[i, :n] = np.where(is_split, t.children_left, np.arange(n))
        right[i, :n] = np.where(is_split, t.children_right, np.arange(n))
        value[i, :n] = t.value.reshape(n, -1)[:, 0]
    threshold = np.zeros((n_trees, max_nodes), np.float32)
    threshold[internal] = _raw_thresholds(feature[internal], thr64[internal], router.mean, router.scale)
    f32 = lambda a: np.asarray(a, np.float32)
    return {"mean": f32(router.mean), "scale": f32(router.scale), "feature": feature, "threshold": threshold,
            "left": left, "right": right, "value": f32(value), "init": f32(_init_log_odds(router.model)),
            "learning_rate": f32(router.model.learning_rate), "threshold_route": f32(router.threshold),
            "depth": np.asarray(max(t.max_depth for t in trees), np.int32)}


def jax_predict_proba(ens: TreeEnsemble, X) -> jax.Array:
    """P(cheap_ok) for X [..., F] (float32), equal to sklearn's predict_proba[:, 1].

    Pure and jit/vmap friendly (`trees.raw_log_odds`, the one traversal).
    """
    X = jnp.asarray(X, jnp.float32)
    n_features = ens.mean.shape[0]
    if X.ndim == 0 or X.shape[-1] != n_features:
        raise RouterError(f"expected {n_features} features in the last axis, got shape {X.shape}")
    return jax.nn.sigmoid(trees.raw_log_odds(ens, X.reshape(-1, n_features))).reshape(X.shape[:-1])


def jax_route(ens: TreeEnsemble, X) -> jax.Array:
    """True = send the seed to Model A (P(cheap_ok) < threshold_route); False = let B finish."""
    return jax_predict_proba(ens, X) < ens.threshold_route


# ----------------------------------------------------------------------------- save / load

def save_router(router: Router | TreeEnsemble, directory: str | os.PathLike, cfg: RouterConfig | None = None,
                candidate_features: Sequence[str] | None = None) -> Path:
    """Write `router_trees.npz` (arrays) and `router.json` (metadata), both atomically.

    The JSON records the config, the router's input features in order (the kept ones),
    the candidate features before ablation, the scaler, the threshold, the sklearn version
    and a SHA-256 of the npz, so a torn pair of files is detected on load.
    """
    ens = router if isinstance(router, TreeEnsemble) else export_trees(router)
    scaler = router if isinstance(router, Router) else ens
    names = list(ens.feature_names)
    candidates = names if candidate_features is None else [str(c) for c in candidate_features]
    meta = {"format": FORMAT_VERSION, "feature_names": names, "candidate_features": candidates,
            "dropped_features": [c for c in candidates if c not in names],
            "scaler": {"mean": np.asarray(scaler.mean, np.float64), "scale": np.asarray(scaler.scale, np.float64)},
            "threshold": float(ens.threshold_route), "depth": ens.depth, "n_trees": int(ens.feature.shape[0]),
            "sklearn_version": sklearn.__version__, "config": None if cfg is None else dataclasses.asdict(cfg)}
    arrays = {k: np.asarray(getattr(ens, k)) for k in trees.ARRAYS}
    return io.write_npz_pair(directory, TREES_FILE, META_FILE, arrays, meta)


def load_router(directory: str | os.PathLike) -> tuple[TreeEnsemble, dict]:
    """Read a router written by `save_router`: (TreeEnsemble, metadata dict). No sklearn needed."""
    meta, arrays = io.read_npz_pair(directory, TREES_FILE, META_FILE, FORMAT_VERSION, "router", RouterError,
                                    "re-run the router stage")
    ens = ensemble_from_arrays({**arrays, "depth": meta["depth"]}, meta["feature_names"])
    if ens.mean.shape != (len(ens.feature_names),) or ens.feature.shape[0] != meta["n_trees"]:
        raise RouterError(f"{directory}: array shapes disagree with {META_FILE}; re-run the router stage")
    return ens, meta
