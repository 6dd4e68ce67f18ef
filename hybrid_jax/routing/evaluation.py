"""Headline figures from per-seed out-of-sample arrays: cost-quality curves with 95 % bootstrap
intervals for every routing strategy, and the learned router's gap to random routing at equal
compute.

Pure NumPy / SciPy / scikit-learn (no JAX), so the report can be rebuilt from saved arrays.
Every strategy is a boolean `to_a` [n] over the same seeds plus whether it pays the probe:

- a strategy without probe (always A, always B, oracle, random) costs `A` or `B` per seed;
- a routed strategy (learned router, entropy rule, best single feature) costs
  `probe + (A if to_a else B_finish)` per seed.

Labels: y = 1 means cheap_ok (B's image is good enough), 0 means A_needed. "Positive" is
cheap_ok and the positive prediction is "sent to B", so precision = share of cheap_ok among
the seeds sent to B (NaN when none are) and recall = share of cheap_ok seeds sent to B.

Random routing is reported by its exact expected values (mean quality
s*mean(qA) + (1-s)*mean(qB), precision = class prior, recall = 1 - s, ...); only its Frechet
distance, which is not linear in the mask, is a Monte-Carlo mean over random masks.

All outputs are plain dicts / lists of Python floats, ints, str and None (`json.dump`-able;
NaN is written as `NaN`). Results are deterministic given `seed`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from hybrid_jax import stats as stats_lib
from hybrid_jax.stats import BootstrapConfig, bootstrap_ci

MIN_SUPPORT = 10  # a figure resting on fewer seeds sent to B / cheap_ok seeds gets a warning
COST_FIELDS = ("passes", "flops", "seconds")
# Savings that must agree in sign. Passes are not among them: they count passes of networks of very
# different size (a probe step of the small decoder, a pass of A's U-Net), so only FLOPs measure work.
SIGN_CHECKED = ("flops", "seconds")
VERDICT_BEATS = "beats random"
VERDICT_TIE = "no better than random (CI includes 0)"
VERDICT_WORSE = "worse than random"


# ----------------------------------------------------------------------------- costs


ROUTER_PROBE = "B"  # the router's probe: B's AR prefix, which B's options resume


@dataclasses.dataclass(frozen=True)
class Options:
    """Cost per image of each option (passes, FLOPs, seconds), from scratch and with the probe paid first: the one
    options-keyed cost structure of the binary study and the allocation, and the one composed-cost formula
    (`per_image`: a mix of options costs the mix's weighted sum of their rows).

    `cost_probed[k]` is the probe plus option k's remaining work: an option that continues the probe's state
    (`probe[k]`: "B" resumes B's AR prefix, the router's probe; a family probe's name continues that probe, "A"
    A's own; "" starts over) pays only the rest."""

    names: tuple[str, ...]
    cost: np.ndarray  # [K, 3] passes, flops, seconds per image from scratch
    cost_probed: np.ndarray  # [K, 3] the same when the probe ran first (probe + the option's remaining work)
    probe: tuple[str, ...] = ()  # per option ROUTER_PROBE, a family probe's name or ""; () = all ""

    @classmethod
    def binary(cls, units: "Options | Mapping", names: Sequence[str] = ("A", "B")) -> "Options":
        """The brief's pair (reference, then candidate) from the routed stage's units of work {"A", "B",
        "B_finish", "probe": {"passes", "flops", "seconds"}}: the reference starts over after the probe, the
        candidate resumes the probe's prefix."""
        if isinstance(units, Options):
            return units
        row = lambda u: np.array([float(units[u][f]) for f in COST_FIELDS])
        probe = row("probe")
        return cls(tuple(names), np.stack([row("A"), row("B")]), np.stack([row("A") + probe, row("B_finish") + probe]),
                   probe=("", ROUTER_PROBE))

    def columns(self, probe: str) -> np.ndarray:
        """Indices of the options that continue from `probe`."""
        return np.flatnonzero(np.array(self.probe or ("",) * len(self.names)) == probe)

    @property
    def cheapest_first(self) -> np.ndarray:
        return np.argsort(self.cost[:, 1], kind="stable")  # by FLOPs

    def per_image(self, mix: Sequence[float], probed: bool) -> dict[str, float]:
        """Mean cost per image of sending the share mix[k] of seeds to option k (the probe paid when `probed`)."""
        v = np.asarray(mix, float) @ (self.cost_probed if probed else self.cost)
        return {f: float(v[i]) for i, f in enumerate(COST_FIELDS)}

    def savings(self, per_image: Mapping[str, float]) -> dict[str, float]:
        """1 - cost / cost(the first option from scratch, the costliest), per cost field."""
        return {f: float(1.0 - per_image[f] / self.cost[0, i]) for i, f in enumerate(COST_FIELDS)}


def binary_mix(share_to_a: float) -> tuple[float, float]:
    """The binary study's option mix: `share_to_a` to the reference, the rest to the candidate."""
    return share_to_a, 1.0 - share_to_a


# ----------------------------------------------------------------------------- estimates


def _estimate(name: str, data: tuple, statistic: Callable, rng, boot) -> dict:
    """{name: point estimate, name_ci: [lo, hi]} (CI NaN where the estimate is undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(statistic(*data, axis=-1))
    ci = bootstrap_ci(data, statistic, rng, boot) if np.isfinite(value) else [float("nan")] * 2
    return {name: value, f"{name}_ci": ci}


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _precision(y, to_b, axis=-1):
    """Share of cheap_ok among seeds sent to B (NaN if none)."""
    return np.sum(y * to_b, axis=axis) / np.sum(to_b, axis=axis)


def _recall(y, to_b, axis=-1):
    """Share of cheap_ok seeds sent to B (NaN if none are cheap_ok)."""
    return np.sum(y * to_b, axis=axis) / np.sum(y, axis=axis)


def _accuracy(y, to_b, axis=-1):
    return np.mean(y == to_b, axis=axis)


# ----------------------------------------------------------------------------- per-seed data


@dataclasses.dataclass(frozen=True)
class SeedData:
    """Per-seed arrays every strategy is evaluated on (feats_* optional: FD is None without)."""

    y: np.ndarray
    quality_a: np.ndarray
    quality_b: np.ndarray
    feats_a: np.ndarray | None = None
    feats_b: np.ndarray | None = None
    feats_real: np.ndarray | None = None

    @property
    def has_feats(self) -> bool:
        return self.feats_a is not None and self.feats_b is not None and self.feats_real is not None

    @functools.cached_property
    def _real(self) -> tuple[np.ndarray, np.ndarray]:
        return stats_lib.gaussian(self.feats_real)

    def routed_fd(self, to_a: np.ndarray) -> float | None:
        """FD of the routed image set (A's image where to_a, else B's) to the real images."""
        if not self.has_feats:
            return None
        n = len(to_a)
        routed = np.where(np.asarray(to_a, bool)[:, None], self.feats_a.reshape(n, -1), self.feats_b.reshape(n, -1))
        return stats_lib.fd_from_moments(*stats_lib.gaussian(routed), *self._real)


# ----------------------------------------------------------------------------- strategy points


def _header(strategy: str, param, share: float, pays_probe: bool, n_to_b: int, seeds: SeedData,
            costs: Options) -> dict:
    """Identity, share and cost/savings fields of a point."""
    per = costs.per_image(binary_mix(share), pays_probe)
    sav = costs.savings(per)
    n, n_pos = len(seeds.y), int(np.sum(seeds.y))
    out = {"strategy": strategy, "param": None if param is None else float(param), "share_to_a": float(share),
           "n": n, "n_to_a": n - int(n_to_b), "n_to_b": int(n_to_b), "n_cheap_ok": n_pos,
           "pays_probe": bool(pays_probe)}
    out.update({f"{f}_per_image": per[f] for f in COST_FIELDS})
    out.update({f"{f}_savings": sav[f] for f in COST_FIELDS})
    out.update({f"{f}_savings_ci": [sav[f], sav[f]] for f in COST_FIELDS})  # a fixed share; see _savings_ci
    return out


def _warning(n_to_b: int, n_pos: int) -> str | None:
    """Warn where precision or recall rests on fewer than MIN_SUPPORT seeds."""
    msgs = []
    if n_to_b < MIN_SUPPORT:
        msgs.append(f"precision rests on {n_to_b} seeds sent to B (< {MIN_SUPPORT})")
    if n_pos < MIN_SUPPORT:
        msgs.append(f"recall rests on {n_pos} cheap_ok seeds (< {MIN_SUPPORT})")
    return "; ".join(msgs) or None


def evaluate_point(strategy: str, param, to_a: np.ndarray, pays_probe: bool, seeds: SeedData,
                   costs: Options, rng: np.random.Generator, boot: BootstrapConfig = BootstrapConfig()) -> dict:
    """Cost, savings, mean quality, FD, precision/recall/accuracy (95 % CIs) of one routing mask."""
    to_a = np.asarray(to_a, bool)
    y, to_b = seeds.y.astype(float), (~to_a).astype(float)
    point = _header(strategy, param, float(to_a.mean()), pays_probe, int(to_b.sum()), seeds, costs)
    quality = np.where(to_a, seeds.quality_a, seeds.quality_b)
    point.update(_estimate("quality", (quality,), _mean, rng, boot))
    point.update(_savings_ci(to_a, pays_probe, costs, rng, boot))
    for name, fn in (("precision", _precision), ("recall", _recall), ("accuracy", _accuracy)):
        point.update(_estimate(name, (y, to_b), fn, rng, boot))
    point["fd"] = seeds.routed_fd(to_a)
    point["fd_sd"] = None if point["fd"] is None else 0.0
    point["warning"] = _warning(point["n_to_b"], point["n_cheap_ok"])
    return point


def _savings_ci(to_a: np.ndarray, pays_probe: bool, costs: Options, rng, boot) -> dict:
    """95 % CIs of the savings: bootstrap the share to A over seeds, then map it through the (linear) costs."""
    constant = bool(to_a.all() or not to_a.any())
    share_ci = [float(to_a.mean())] * 2 if constant else bootstrap_ci((to_a.astype(float),), _mean, rng, boot)
    sav = [costs.savings(costs.per_image(binary_mix(s), pays_probe)) for s in share_ci]
    return {f"{f}_savings_ci": sorted([sav[0][f], sav[1][f]]) for f in COST_FIELDS}


def _random_stats(s: float) -> dict[str, Callable]:
    """Exact expected statistics of random routing at share s, as functions of (y, qa, qb)."""
    nan_if = lambda cond, v: np.where(cond, np.nan, v)
    return {
        "quality": lambda y, qa, qb, axis=-1: s * np.mean(qa, axis) + (1 - s) * np.mean(qb, axis),
        "precision": lambda y, qa, qb, axis=-1: nan_if(s >= 1.0, np.mean(y, axis)),
        "recall": lambda y, qa, qb, axis=-1: nan_if(np.sum(y, axis) == 0, np.full(np.shape(np.sum(y, axis)), 1 - s)),
        "accuracy": lambda y, qa, qb, axis=-1: (1 - s) * np.mean(y, axis) + s * (1 - np.mean(y, axis)),
    }


def random_point(share: float, seeds: SeedData, costs: Options, rng: np.random.Generator,
                 boot: BootstrapConfig = BootstrapConfig(), n_mc: int = 32) -> dict:
    """Random routing of round(share*n) seeds to A: exact expected figures with bootstrap CIs
    over seeds; FD as mean and spread (`fd_sd`) over `n_mc` random masks."""
    n = len(seeds.y)
    k = int(round(share * n))
    s = k / n
    point = _header("random", s, s, False, n - k, seeds, costs)
    data = (seeds.y.astype(float), seeds.quality_a, seeds.quality_b)
    for name, fn in _random_stats(s).items():
        point.update(_estimate(name, data, fn, rng, boot))
    fds = []
    for _ in range(n_mc if seeds.has_feats else 0):
        mask = np.zeros(n, bool)
        mask[rng.permutation(n)[:k]] = True
        fds.append(seeds.routed_fd(mask))
    point["fd"] = float(np.mean(fds)) if fds else None
    point["fd_sd"] = float(np.std(fds, ddof=1)) if len(fds) > 1 else None
    point["warning"] = _warning(n - k, point["n_cheap_ok"])
    return point


# ----------------------------------------------------------------------------- share-based rules


def top_share_mask(score_to_a: np.ndarray, share: float) -> np.ndarray:
    """Send the round(share*n) highest-scoring seeds to A (ties by index; NaN scores go first)."""
    score = np.nan_to_num(np.asarray(score_to_a, float), nan=np.inf)
    k = int(round(share * len(score)))
    mask = np.zeros(len(score), bool)
    mask[np.argsort(-score, kind="stable")[:k]] = True
    return mask


def best_feature_choices(X: np.ndarray, y: np.ndarray, folds: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Per held-out fold, the feature and sign with the highest ROC AUC against y on the OTHER
    folds only (cross-fitted, so the choice never sees the seeds it is applied to).

    sign = +1 means higher values predict cheap_ok; train_auc is the oriented AUC (>= 0.5)."""
    out = []
    for f in np.unique(folds):
        train = folds != f
        if len(np.unique(y[train])) < 2:
            raise ValueError(f"fold {f}: the training folds hold one class only; cannot choose a feature")
        best = (-1.0, 0, 1)
        for j in range(X.shape[1]):
            col = X[train, j]
            if not np.all(np.isfinite(col)):
                continue
            auc = float(roc_auc_score(y[train], col))
            if max(auc, 1 - auc) > best[0]:
                best = (max(auc, 1 - auc), j, 1 if auc >= 0.5 else -1)
        out.append({"fold": int(f), "feature": names[best[1]], "feature_index": best[1],
                    "sign": best[2], "train_auc": best[0]})
    return out


def best_feature_mask(X: np.ndarray, folds: np.ndarray, choices: list[dict], share: float) -> np.ndarray:
    """Within each held-out fold, send the top `share` by its chosen (oriented) feature to A."""
    to_a = np.zeros(len(folds), bool)
    for c in choices:
        idx = np.flatnonzero(folds == c["fold"])
        to_a[idx] = top_share_mask(-c["sign"] * X[idx, c["feature_index"]], share)
    return to_a


# ----------------------------------------------------------------------------- headline


def _verdict(ci: Sequence[float]) -> str:
    if not np.all(np.isfinite(ci)):
        return "undetermined (CI undefined)"
    return VERDICT_BEATS if ci[0] > 0 else VERDICT_WORSE if ci[1] < 0 else VERDICT_TIE


def _quality_gap(to_a, qa, qb, axis=-1):
    """Router's mean quality minus random's expected one at the (resample's) router share."""
    s = np.mean(to_a, axis=axis)
    routed = np.mean(to_a * qa + (1 - to_a) * qb, axis=axis)
    return routed - (s * np.mean(qa, axis=axis) + (1 - s) * np.mean(qb, axis=axis))


def _precision_gap(y, to_b, axis=-1):
    """Router's precision minus random's expected precision (the class prior)."""
    return _precision(y, to_b, axis) - np.mean(y, axis=axis)


def router_vs_random(y: np.ndarray, p_cheap: np.ndarray, quality_a: np.ndarray, quality_b: np.ndarray,
                     threshold: float, *, seed: int = 0, boot: BootstrapConfig = BootstrapConfig()) -> dict:
    """The headline: learned router (to_a = p_cheap < threshold) minus random routing at the
    router's share to A, in mean quality and in precision - class prior, each with a paired
    bootstrap CI over seeds (random's expected value recomputed on every resample)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, float)
    to_a = (np.asarray(p_cheap) < threshold).astype(float)
    qa, qb = np.asarray(quality_a, float), np.asarray(quality_b, float)
    q = _estimate("quality_gap", (to_a, qa, qb), _quality_gap, rng, boot)
    p = _estimate("precision_gap", (y, 1 - to_a), _precision_gap, rng, boot)
    s = float(to_a.mean())
    out = {"threshold": float(threshold), "share_to_a": s, "n": len(y), "n_to_b": int(len(y) - to_a.sum()),
           "quality_router": float(np.mean(np.where(to_a > 0, qa, qb))),
           "quality_random": float(s * qa.mean() + (1 - s) * qb.mean()),
           "precision_router": float(_precision(y, 1 - to_a)) if to_a.sum() < len(y) else float("nan"),
           "class_prior": float(y.mean()), **q, **p}
    out["verdict"] = _verdict(q["quality_gap_ci"])
    out["precision_verdict"] = _verdict(p["precision_gap_ci"])
    out["warning"] = _warning(out["n_to_b"], int(y.sum()))
    return out


# ----------------------------------------------------------------------------- consistency


_NAN_OK = ("precision", "recall", "fd")  # prefixes whose NaN is legitimate (undefined, not broken)
_UNIT_RANGE = ("share_to_a", "quality", "precision", "recall", "accuracy")


def _numbers(point: Mapping) -> list[tuple[str, float]]:
    """(key, value) for every numeric entry, CI lists flattened."""
    out = []
    for k, v in point.items():
        vals = v if isinstance(v, (list, tuple)) else [v]
        out += [(k, float(x)) for x in vals if isinstance(x, (int, float, np.number)) and not isinstance(x, bool)]
    return out


def _point_problems(point: Mapping, base: Mapping | None, tol: float) -> list[str]:
    param = point.get("param")
    tag = point.get("strategy") + ("" if param is None else f"@{param:.3g}")
    probs = []
    for k, v in _numbers(point):
        if np.isnan(v):
            probs += [] if k.startswith(_NAN_OK) else [f"{tag}: {k} is NaN"]
        elif np.isinf(v):
            probs.append(f"{tag}: {k} is infinite")
        elif k.endswith("_savings") and not -1.0 <= v <= 1.0:
            probs.append(f"{tag}: {k} = {v} outside [-1, 1]")
        elif k.startswith(_UNIT_RANGE) and not -1e-12 <= v <= 1.0 + 1e-12:
            probs.append(f"{tag}: {k} = {v} outside [0, 1]")
    sav = [point.get(f"{f}_savings") for f in SIGN_CHECKED]
    if all(isinstance(s, (int, float)) and np.isfinite(s) for s in sav) and max(sav) > tol and min(sav) < -tol:
        probs.append(f"{tag}: flops/seconds savings disagree in sign ({sav[0]:.3g} vs {sav[1]:.3g})")
    for f in COST_FIELDS if base is not None else ():
        expected = 1.0 - point.get(f"{f}_per_image", np.nan) / base[f"{f}_per_image"]
        if not np.isclose(expected, point.get(f"{f}_savings", np.nan), rtol=1e-6, atol=1e-9):
            probs.append(f"{tag}: {f}_savings does not equal 1 - cost / cost(always A)")
    return probs


def check_consistency(points: Sequence[Mapping], tol: float = 0.02) -> list[str]:
    """Internal-consistency problems of a list of points (empty = consistent): non-finite or
    out-of-range values, savings not matching 1 - cost/cost(always A), and FLOPs and seconds
    savings of one strategy disagreeing in sign by more than `tol`."""
    base = next((p for p in points if p.get("option") == 0), None)  # always the first (costliest) option
    return [msg for p in points for msg in _point_problems(p, base, tol)]


# ----------------------------------------------------------------------------- top level


def _as_seeds(y, quality_a, quality_b, feats_a, feats_b, feats_real) -> SeedData:
    """Validated SeedData (y in {0, 1}, qualities finite, shapes agree)."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("y must be a 1-D array of 0/1 labels (1 = cheap_ok)")
    qa, qb = np.asarray(quality_a, float), np.asarray(quality_b, float)
    if qa.shape != y.shape or qb.shape != y.shape or not (np.isfinite(qa).all() and np.isfinite(qb).all()):
        raise ValueError("quality_a / quality_b must be finite arrays shaped like y")
    arr = lambda a: None if a is None else np.asarray(a, float)
    return SeedData(y.astype(int), qa, qb, arr(feats_a), arr(feats_b), arr(feats_real))


def _router_points(seeds, costs, p_cheap, thresholds, rng, boot) -> list[dict]:
    return [evaluate_point("router", t, p_cheap < t, True, seeds, costs, rng, boot) for t in thresholds]


def _share_points(seeds, costs, X, names, folds, entropy_feature, shares, rng, boot, n_mc):
    """Random, zero-training entropy rule and cross-fitted best single feature over shares."""
    if entropy_feature not in names:
        raise ValueError(f"zero-training feature {entropy_feature!r} not among names {tuple(names)}")
    entropy = X[:, list(names).index(entropy_feature)]
    choices = best_feature_choices(X, seeds.y, folds, names)
    points = [random_point(s, seeds, costs, rng, boot, n_mc) for s in shares]
    points += [evaluate_point("entropy", s, top_share_mask(entropy, s), True, seeds, costs, rng, boot)
               for s in shares]
    points += [evaluate_point("best feature", s, best_feature_mask(X, folds, choices, s), True, seeds, costs,
                              rng, boot) for s in shares]
    return points, choices


def cost_quality_curves(y, p_cheap, folds, X, names: Sequence[str], quality_a, quality_b, costs, *,
                        feats_a=None, feats_b=None, feats_real=None, threshold: float = 0.5,
                        thresholds: Sequence[float] | None = None, shares: Sequence[float] | None = None,
                        zero_training_feature: str = "attn_entropy", seed: int = 0,
                        boot: BootstrapConfig = BootstrapConfig(), n_mc: int = 32,
                        options: Sequence[str] = ("A", "B")) -> dict:
    """Every strategy's cost-quality point on the same seeds, the router's operating point, the
    router-vs-random headline and the consistency problems (see module docstring). `options`: the names of
    the two options (the one the router sends seeds to, then the cheap one); each fixed point "always <name>"
    carries its option's index."""
    seeds = _as_seeds(y, quality_a, quality_b, feats_a, feats_b, feats_real)
    costs, rng, n = Options.binary(costs, options), np.random.default_rng(seed), len(seeds.y)
    p_cheap, folds, X = np.asarray(p_cheap, float), np.asarray(folds), np.asarray(X, float).reshape(n, -1)
    if p_cheap.shape != (n,) or folds.shape != (n,) or X.shape[1] != len(names):
        raise ValueError("p_cheap, folds must be [n] and X [n, len(names)]")
    grid = lambda g: sorted(set(float(v) for v in (np.linspace(0, 1, 21) if g is None else g)))
    op_share = float(np.mean(p_cheap < threshold))
    points = [dict(evaluate_point(f"always {name}", None, np.full(n, i == 0), False, seeds, costs, rng, boot),
                   option=i) for i, name in enumerate(options)]
    points.append(evaluate_point("oracle", None, seeds.y == 0, False, seeds, costs, rng, boot))
    points += _router_points(seeds, costs, p_cheap, grid(list(grid(thresholds)) + [threshold]), rng, boot)
    share_pts, choices = _share_points(seeds, costs, X, names, folds, zero_training_feature,
                                       grid(list(grid(shares)) + [op_share]), rng, boot, n_mc)
    points += share_pts
    pick = lambda s, v: next(p for p in points if p["strategy"] == s and np.isclose(p["param"], v))
    return {"n": n, "class_prior": float(seeds.y.mean()), "router_auc": _auc(seeds.y, p_cheap),
            "points": points, "operating": pick("router", threshold),
            "operating_random": pick("random", round(op_share * n) / n),
            "router_vs_random": router_vs_random(seeds.y, p_cheap, seeds.quality_a, seeds.quality_b, threshold,
                                                 seed=seed, boot=boot),
            "best_feature_choices": choices, "problems": check_consistency(points)}


def _auc(y: np.ndarray, p_cheap: np.ndarray) -> float:
    """ROC AUC of p_cheap for cheap_ok (NaN with one class only)."""
    return float(roc_auc_score(y, p_cheap)) if len(np.unique(y)) == 2 else float("nan")


def curves_by_class(class_names, labels, y, p_cheap, quality_a, quality_b, costs, *,
                    thresholds: Sequence[float] | None = None, seed: int = 0,
                    boot: BootstrapConfig = BootstrapConfig(),
                    options: Sequence[str] = ("A", "B")) -> dict[str, list[dict]]:
    """Each class's cost-quality curve: the cross-fitted router over thresholds, random routing at each of
    its shares to A (the baseline at equal cost), the fixed options and the oracle, on that class's seeds
    (`labels` [n] class indices into `class_names`; the rest as `cost_quality_curves`)."""
    rng, costs = np.random.default_rng(seed), Options.binary(costs, options)
    grid = sorted(set(float(v) for v in (np.linspace(0, 1, 21) if thresholds is None else thresholds)))
    out = {}
    for c, name in enumerate(class_names):
        m = np.asarray(labels) == c
        if not m.any():
            continue
        seeds = _as_seeds(np.asarray(y)[m], np.asarray(quality_a)[m], np.asarray(quality_b)[m], None, None, None)
        p, n = np.asarray(p_cheap, float)[m], int(m.sum())
        points = [evaluate_point(f"always {o}", None, np.full(n, i == 0), False, seeds, costs, rng, boot)
                  for i, o in enumerate(options)]
        points.append(evaluate_point("oracle", None, seeds.y == 0, False, seeds, costs, rng, boot))
        router = _router_points(seeds, costs, p, grid, rng, boot)
        shares = sorted({pt["share_to_a"] for pt in router})
        out[name] = points + router + [random_point(sh, seeds, costs, rng, boot, n_mc=0) for sh in shares]
    return out


def per_class(class_names, labels, to_a, oracle_to_a, score_a, score_b, *, seed: int = 0,
              boot: BootstrapConfig = BootstrapConfig()) -> list[dict]:
    """The main quality and routing numbers of each class's seeds, then of all seeds ("all").

    `labels` [n]: each seed's class index into `class_names`; `to_a` [n]: out-of-sample routing;
    `oracle_to_a` [n]: the labels' A_needed; `score_a`, `score_b` [n]: quality of A's and B's image.
    Precision: share of the seeds routed to B that the labels call cheap_ok (nan when none is), beside its
    baseline the class prior (share cheap_ok); routed quality beside random routing at the same share to A
    (its exact expectation), and their gap. 95 % bootstrap CIs over the class's seeds."""
    rng = np.random.default_rng(seed)
    labels, to_a, oracle = np.asarray(labels), np.asarray(to_a, bool), np.asarray(oracle_to_a, bool)
    score_a, score_b = np.asarray(score_a, float), np.asarray(score_b, float)
    routed = np.where(to_a, score_a, score_b)
    groups = [(name, labels == c) for c, name in enumerate(class_names)] + [("all", np.ones(len(labels), bool))]
    precision = lambda cheap, to_b, axis=-1: np.sum(cheap * to_b, axis=axis) / np.sum(to_b, axis=axis)
    rows = []
    for name, m in (g for g in groups if g[1].any()):
        share = to_a[m].mean()
        random = share * score_a[m] + (1 - share) * score_b[m]  # per seed: its expectation under random routing
        rows.append({"class": name, "seeds": int(m.sum()), "a_needed": float(oracle[m].mean()),
                     "quality_a": float(np.mean(score_a[m])), "quality_b": float(np.mean(score_b[m])),
                     "share_to_a": float(share), "quality_random": float(np.mean(random)),
                     **_estimate("quality_routed", (routed[m],), _mean, rng, boot),
                     **_estimate("gap_vs_random", (routed[m] - random,), _mean, rng, boot),
                     "prior": float(1 - oracle[m].mean()),
                     "accuracy": float(np.mean(to_a[m] == oracle[m])),
                     **_estimate("precision", ((~oracle[m]).astype(float), (~to_a[m]).astype(float)), precision,
                                 rng, boot)})
    return rows
