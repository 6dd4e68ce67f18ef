"""Per-seed compute allocation among N options, evaluated out of sample, with its baselines.

Each seed has one image per option (Model A at each step budget, Model B at each corrector
depth) and a quality score per image. An option is acceptable for a seed when its image is
about as good as the seed's best option's image (quality gap <= tau, the labeler's calibrated
"about the same" margin); the oracle takes the cheapest acceptable option. The learned policy
fits one gradient-boosting classifier per option, P(option acceptable | probe features),
cross-fitted over the router's folds, and takes the cheapest option whose probability reaches
a threshold (swept: a cost-quality curve). Beside it: every fixed option, the brief's binary
router, random allocation with the learned policy's option mix (equal mean compute), the oracle.
Policies that read the probe pay for it; B's options then resume from the probe's prefix. Per family
probe that options continue (A's own first steps; MADFormer's block 0), two more: that probe choosing
its family's budget, and the cascade through it (B's probe -> a B option, else that probe -> its
family's budget), each paying the probes it ran.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import chex
import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from hybrid_jax import stats
from hybrid_jax.routing import evaluation

COST_FIELDS = evaluation.COST_FIELDS


Options = evaluation.Options  # per-option costs, shared with the binary study
ROUTER_PROBE = evaluation.ROUTER_PROBE


def acceptable(quality: np.ndarray, tau: float | np.ndarray, human: np.ndarray | None = None) -> np.ndarray:
    """[n, K] bool: option k's image is within tau (a number, or each seed's [n]) of the seed's best option's image;
    where `human` [n, K] (1 acceptable, 0 not, NaN not labeled) has a person's verdict, that verdict instead."""
    ok = quality >= quality.max(axis=1, keepdims=True) - np.reshape(tau, (-1, 1))
    if human is None:
        return ok
    chex.assert_equal_shape((quality, human))
    return np.where(np.isnan(human), ok, human > 0.5)


def human_agreement(auto_ok: np.ndarray, human: np.ndarray, names: Sequence[str], rng: np.random.Generator,
                    boot: stats.BootstrapConfig = stats.BootstrapConfig()) -> dict:
    """People's verdicts (`human` [n, K], NaN where not labeled) against the automated acceptability `auto_ok`
    [n, K] on the labeled pairs, overall and per option (`stats.rater_agreement`; yes = acceptable)."""
    labeled = ~np.isnan(human)
    row = lambda mask: stats.rater_agreement(human > 0.5, auto_ok, mask, rng, boot)
    return {**row(labeled), "by_option": {name: row(labeled & (np.arange(len(names)) == k)[None])
                                          for k, name in enumerate(names) if labeled[:, k].any()}}


def cheapest(ok: np.ndarray, order: np.ndarray) -> np.ndarray:
    """[n] index of the first option in `order` that is True in `ok` [n, K] (the last in order if none)."""
    ranked = ok[:, order]
    return order[np.where(ranked.any(1), ranked.argmax(1), len(order) - 1)]


def predicted(p: np.ndarray, cols: np.ndarray, t: float, order: np.ndarray, fallback) -> np.ndarray:
    """[n] the cheapest option among `cols` whose P(acceptable) (p [n, len(cols)]) reaches t; `fallback` where
    none does."""
    ok = np.zeros((len(p), len(order)), bool)
    ok[:, cols] = p >= t
    sub = order[np.isin(order, cols)]
    ranked = ok[:, sub]
    return np.where(ranked.any(1), sub[ranked.argmax(1)], fallback)


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # the swept P(acceptable) thresholds
DEFAULT_GB = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1}


def fit_acceptable(X: np.ndarray, y: np.ndarray, gb: Mapping, seed: int) -> GradientBoostingClassifier | float:
    """A GB fit of P(y | X), or y's rate (a float) where y has one class (nothing to learn)."""
    if y.all() or not y.any():
        return float(y.mean())
    return GradientBoostingClassifier(**gb, random_state=seed).fit(X, y)


def crossfit_acceptable(X: np.ndarray, ok: np.ndarray, folds: np.ndarray, n_estimators: int, max_depth: int,
                        learning_rate: float, seed: int) -> np.ndarray:
    """[n, K] out-of-fold P(option acceptable | probe features): per fold and option, a fit on the other folds."""
    gb = {"n_estimators": n_estimators, "max_depth": max_depth, "learning_rate": learning_rate}
    p = np.empty(ok.shape)
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        for k in range(ok.shape[1]):
            model = fit_acceptable(X[train], ok[train, k], gb, seed)
            p[test, k] = model if isinstance(model, float) else model.predict_proba(X[test])[:, 1]
    return p


@dataclasses.dataclass(frozen=True)
class Classes:
    """Each seed's class (`labels` [n], indices into `names`), for per-class rows of every policy."""

    labels: np.ndarray
    names: tuple[str, ...]

    def groups(self) -> list[tuple[str, np.ndarray]]:
        """(class name, seed mask) of each class that has seeds."""
        return [(name, self.labels == c) for c, name in enumerate(self.names) if np.any(self.labels == c)]


_mean = lambda x, axis=-1: np.mean(x, axis=axis)


def _mix(choice: np.ndarray, k: int) -> np.ndarray:
    """[k] the share of seeds `choice` sends to each option."""
    return np.bincount(choice, minlength=k) / max(len(choice), 1)


def _per_class(quality_of, cost_of, classes: Classes, opts: Options) -> dict:
    """Per class: seeds, mean quality [95 % CI] (`quality_of(mask)` -> (value, ci)) and FLOPs per image and savings
    (`cost_of(mask)` -> `Options.per_image` of the class's seeds)."""
    out = {}
    for name, m in classes.groups():
        cost = cost_of(m)
        out[name] = {"seeds": int(m.sum()), **dict(zip(("quality", "quality_ci"), quality_of(m))),
                     "flops_per_image": cost["flops"], "flops_savings": opts.savings(cost)["flops"]}
    return out


def _point(name: str, param, choice: np.ndarray, probed: bool, quality: np.ndarray, opts: Options,
           feats: np.ndarray | None, feats_real: np.ndarray | None, rng, boot, classes: Classes | None = None) -> dict:
    """Mean cost (and savings vs the most expensive A option), mean quality with a 95 % CI, FD, option mix;
    with `classes`, the same per class ("per_class")."""
    n, k = len(choice), len(opts.names)
    q = quality[np.arange(n), choice]
    out = {"policy": name, "param": param, "probed": probed,
           "mix": {opts.names[j]: float(np.mean(choice == j)) for j in range(k)}}
    per = opts.per_image(_mix(choice, k), probed)
    sav = opts.savings(per)
    for f in COST_FIELDS:
        out[f"{f}_per_image"] = per[f]
        out[f"{f}_savings"] = sav[f]
    out["quality"] = float(q.mean())
    out["quality_ci"] = stats.bootstrap_ci((q,), _mean, rng, boot)
    out["fd"] = None if feats is None else stats.frechet_distance(feats[np.arange(n), choice], feats_real)
    if classes is not None:
        mean_ci = lambda m: (float(q[m].mean()), stats.bootstrap_ci((q[m],), _mean, rng, boot))
        out["per_class"] = _per_class(mean_ci, lambda m: opts.per_image(_mix(choice[m], k), probed), classes, opts)
    return out


def _expected_quality(quality: np.ndarray, choice: np.ndarray, rng, boot) -> tuple[float, list[float]]:
    """Quality of random allocation with `choice`'s option mix: its exact expectation and a bootstrap CI over seeds."""
    share = np.bincount(choice, minlength=quality.shape[1]) / len(choice)
    ci = stats.bootstrap_ci((quality.T,), lambda q, axis=-1: np.mean(q, axis=axis).T @ share, rng, boot)
    return float(quality.mean(0) @ share), ci


def _random_point(choice: np.ndarray, quality: np.ndarray, opts: Options, feats, feats_real, rng, boot,
                  n_mc: int, name: str = "random (same mix)", classes: Classes | None = None) -> dict:
    """Random allocation with the same option mix as `choice` (so the same mean compute), paying no probe:
    exact expected quality, bootstrap CI over seeds, FD as the mean over `n_mc` random permutations. Per class,
    the mix is that class's own (so each class's compute is the policy's there)."""
    p = _point(name, None, rng.permutation(choice), False, quality, opts, feats, feats_real, rng, boot)
    p["quality"], p["quality_ci"] = _expected_quality(quality, choice, rng, boot)
    if classes is not None:
        p["per_class"] = _per_class(lambda m: _expected_quality(quality[m], choice[m], rng, boot),
                                    lambda m: opts.per_image(_mix(choice[m], len(opts.names)), False), classes, opts)
    if feats is not None:
        fds = [stats.frechet_distance(feats[np.arange(len(choice)), rng.permutation(choice)], feats_real)
               for _ in range(n_mc)]
        p["fd"], p["fd_sd"] = float(np.mean(fds)), float(np.std(fds, ddof=1))
    return p


def cascade_name(i: int, probe: str) -> str:
    """The cascade through the i-th family probe of a study: "cascade" for the first (the reference family's),
    "cascade via <probe>" for the others."""
    return "cascade" if i == 0 else f"cascade via {probe}"


def family_probes(opts: Options) -> list[str]:
    """The family probes some option continues (every probe but the router's), in the options' order."""
    return [p for p in dict.fromkeys(opts.probe) if p not in ("", ROUTER_PROBE)]


def evaluate(quality: np.ndarray, opts: Options, X: np.ndarray, folds: np.ndarray, tau: float | np.ndarray, *,
             binary: tuple[int, int], p_cheap: np.ndarray, router_threshold: float,
             thresholds: Sequence[float] = THRESHOLDS, feats: np.ndarray | None = None,
             feats_real: np.ndarray | None = None, gb: dict | None = None, seed: int = 0,
             boot: stats.BootstrapConfig = stats.BootstrapConfig(), n_mc: int = 16,
             probes: Mapping[str, np.ndarray] | None = None, classes: Classes | None = None,
             human: np.ndarray | None = None) -> dict:
    """Every policy's cost-quality point on the same seeds (see the module docstring). `X` [n, F]: the router's
    probe features (B's prefix), which decide every option that continues no family probe. With `probes` ({a
    family probe's name: its features [n, F_p]}) and options that continue it (`opts.probe`): that probe alone
    choosing its family's budget ("<probe> probe allocation"), and the cascade through it (B's probe -> a B
    option, else that probe -> its family's budget; both probes paid where they ran). With `classes`, every point
    also has per-class rows. With `human` [n, K] (1/0, NaN where nobody labeled), people's verdicts replace the
    automated acceptability where they exist, and the result says how far they agree."""
    rng = np.random.default_rng(seed)
    n, k = quality.shape
    ok = acceptable(quality, tau, human)
    order = opts.cheapest_first
    family = family_probes(opts)
    own = [p for p in family if p in (probes or {})]
    base = np.flatnonzero(~np.isin(np.arange(k), [c for p in family for c in opts.columns(p)]))
    point = lambda name, param, choice, probed: _point(name, param, choice, probed, quality, opts, feats,
                                                       feats_real, rng, boot, classes)
    random = lambda name, choices: [dict(_random_point(c, quality, opts, feats, feats_real, rng, boot, n_mc, name,
                                                       classes), param=t) for t, c in choices.items()]
    points = [point(f"fixed: {opts.names[j]}", None, np.full(n, j), False) for j in range(k)]
    base_order = order[np.isin(order, base)]
    oracle = cheapest(ok, base_order)
    points.append(point("oracle", None, oracle, False))
    a, b = binary
    points.append(point("binary router", router_threshold, np.where(p_cheap < router_threshold, a, b), True))
    fit = lambda X_, cols: crossfit_acceptable(X_, ok[:, cols], folds, seed=seed, **(gb or DEFAULT_GB))
    p_ok = np.full((n, k), np.nan)
    p_ok[:, base] = fit(X, base)
    learned = {t: predicted(p_ok[:, base], base, t, order, base_order[-1]) for t in thresholds}
    points += [point("learned allocation", t, c, True) for t, c in learned.items()]
    points += random("random (same mix)", learned)
    b_cols = opts.columns(ROUTER_PROBE)
    for i, probe in enumerate(own):
        cols = opts.columns(probe)
        p_ok[:, cols] = fit(probes[probe], cols)
        costliest = order[np.isin(order, cols)][-1]
        by_probe = {t: predicted(p_ok[:, cols], cols, t, order, costliest) for t in thresholds}
        cascade = {t: predicted(p_ok[:, b_cols], b_cols, t, order, by_probe[t]) for t in thresholds}
        name = cascade_name(i, probe)
        points += [point(f"{probe} probe allocation", t, c, False) for t, c in by_probe.items()]
        points += [point(name, t, c, True) for t, c in cascade.items()]
        points += random(f"random ({name}'s mix)", cascade)
    if own:
        points.append(point("oracle (all options)", None, cheapest(ok, order), False))
    exact = [{"threshold": float(t), "exact": float(np.mean(c == oracle))} for t, c in learned.items()]
    taus = np.unique(np.asarray(tau, float))
    return {"n": n, "options": list(opts.names), "tau": float(taus[0]) if len(taus) == 1 else "per class",
            "acceptable_share": ok.mean(0).tolist(),
            **({"human": human_agreement(acceptable(quality, tau), human, opts.names, rng, boot)}
               if human is not None and not np.isnan(human).all() else {}),
            "oracle_mix": np.bincount(oracle, minlength=k).tolist(), "learned_exact": exact, "points": points}
