"""How much of the router's label a probe of B's prefix can know at all.

The router reads B's first k AR steps. What follows (the remaining AR steps' noise, the corrector's
noise) and A's own image of the seed are unknown to it. Finishing every seed's prefix again with fresh
continuation keys separates the two: the share of the variance of B's final quality that the prefix
fixes (the intraclass correlation over draws), and two ceilings on the router's ROC AUC, neither fitted
to anything (so out of sample by construction):

- *prefix oracle*: the mean quality of the fresh continuations, an estimate of what the prefix implies
  about B's image (finitely many draws: it sits below the ceiling it estimates, and a learner that pools
  what similar prefixes did can come out above it);
- *image oracle*: the quality of the seed's own B image, what a judge of B's finished image that
  cannot see A would reach.

A router whose AUC is near the prefix oracle's has little left to learn from the prefix; a large gap
says better probe features or a better target could help; a low prefix oracle says the label is decided
after the probe. `learned_scores` measures one such target: the router's learner (its trees, depth and
rate, every candidate feature, the router's cross-fit folds) trained on the label, on B's own quality,
and on the mean quality of all finishes of the prefix (a target from which the noise after the probe is
averaged out).
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

from hybrid_jax import stats
from hybrid_jax.config import RouterConfig

CONTINUATION_STREAM = 1_000  # fold_in offset of the fresh continuation keys: far from the samplers' own folds (0, 1)


def continuation_keys(keys: jax.Array, draw: int) -> jax.Array:
    """[b] per-example keys of continuation `draw` (>= 1; draw 0 is the seed's own keys)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, CONTINUATION_STREAM + draw))(keys)


def continue_prefix(finish: Callable, params, prefix, draws: int) -> list[jax.Array]:
    """`draws` images of each example of B's `prefix` (a `model_b.Prefix`), finished with fresh continuation keys:
    the prefix's patches and state are kept, the remaining AR steps and the corrector draw new noise."""
    return [finish(params, prefix.replace(keys=continuation_keys(prefix.keys, r))) for r in range(1, draws + 1)]


def icc(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """One-way random-effects intraclass correlation ICC(1) of `scores` [draws, ..., n seeds] (draws on axis 0, seeds
    on `axis`): (MSB - MSW) / (MSB + (draws - 1) MSW), the share of the variance that lies between seeds.
    Vectorised over the other axes so that `stats.bootstrap_ci` resamples seeds."""
    s = np.asarray(scores, np.float64)
    k, n = s.shape[0], s.shape[axis]
    if k < 2:
        raise ValueError(f"the intraclass correlation needs at least 2 draws per seed, got {k}")
    means = s.mean(0)
    grand = means.mean(axis, keepdims=True)
    msb = k * np.square(means - grand).sum(axis) / (n - 1)
    msw = np.square(s - means).sum(0).sum(axis) / (n * (k - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (msb - msw) / (msb + (k - 1) * msw)


LEARNED_TARGETS = ("label", "quality of B's own image", "mean quality of every finish of the prefix")


def learned_scores(X: np.ndarray, scores: np.ndarray, y: np.ndarray, folds: np.ndarray,
                   cfg: RouterConfig) -> dict[str, np.ndarray]:
    """Out-of-fold predictions [n] of the router's learner for each of `LEARNED_TARGETS`: a gradient-boosting
    classifier of `y` (P(cheap_ok)) and regressors of `scores[0]` and of `scores.mean(0)`, each fitted on the other
    folds only, with `cfg`'s trees, depth, rate and seed, on every column of `X` (no ablation)."""
    kw = dict(n_estimators=cfg.n_estimators, max_depth=cfg.max_depth, learning_rate=cfg.learning_rate,
              random_state=cfg.seed)
    classify = lambda t, x: GradientBoostingClassifier(**kw).fit(x[0], t).predict_proba(x[1])[:, 1]
    regress = lambda t, x: GradientBoostingRegressor(**kw).fit(x[0], t).predict(x[1])
    targets = zip(LEARNED_TARGETS, (y, scores[0], scores.mean(0)), (classify, regress, regress))
    out = {name: np.zeros(len(y)) for name in LEARNED_TARGETS}
    for name, target, fit_predict in targets:
        for f in np.unique(folds):
            test = folds == f
            out[name][test] = fit_predict(target[~test], (X[~test], X[test]))
    return out


def summarize(scores: np.ndarray, y: np.ndarray, p_cheap: np.ndarray, *,
              learned: dict[str, np.ndarray] | None = None, seed: int = 0,
              boot: stats.BootstrapConfig = stats.BootstrapConfig()) -> dict:
    """The ceilings beside the router: `scores` [1 + draws, n] B's quality of each seed's own image (row 0) and of
    its fresh continuations, `y` [n] 1 = cheap_ok, `p_cheap` [n] the router's out-of-sample P(cheap_ok),
    `learned` other out-of-sample scores of cheap_ok by name (`learned_scores`, the label's first: each one's AUC
    also as a paired difference to it). Each figure with a 95 % bootstrap interval over seeds (a seed's draws
    resampled together); 0.5 is a rule with no skill."""
    scores, y, p_cheap = np.asarray(scores, np.float64), np.asarray(y), np.asarray(p_cheap, np.float64)
    if scores.ndim != 2 or scores.shape[0] < 2 or scores.shape[1] != len(y) or len(p_cheap) != len(y):
        raise ValueError(f"scores must be [1 + draws, n] with draws >= 1 and n = len(y) = len(p_cheap); got scores "
                         f"{scores.shape}, y {np.shape(y)}, p_cheap {np.shape(p_cheap)}")
    rng = np.random.default_rng(seed)
    prefix = scores[1:].mean(0)

    def auc(score):
        return {"auc": float(stats.auc(y, score)), "ci": stats.bootstrap_ci((y, score), stats.auc, rng, boot)}

    def gain(score, base):  # the paired AUC difference to the learner on the label, with its interval
        diff = lambda y_, a, b, axis=-1: stats.auc(y_, a, axis) - stats.auc(y_, b, axis)
        return {"minus_label": float(diff(y, score, base)),
                "minus_label_ci": stats.bootstrap_ci((y, score, base), diff, rng, boot)}

    learned = dict(learned or {})
    first = next(iter(learned.values()), None)
    return {"n": len(y), "draws": scores.shape[0] - 1,
            "router": auc(p_cheap), "prefix_oracle": auc(prefix), "image_oracle": auc(scores[0]),
            "learned": {name: {**auc(p), **gain(p, first)} for name, p in learned.items()},
            "icc": {"value": float(icc(scores)),
                    "ci": stats.bootstrap_ci((scores,), lambda s, axis: icc(s, axis), rng, boot)},
            "quality_sd": {"total": float(scores.std()), "within_prefix": float(np.sqrt(scores.var(0).mean()))}}
