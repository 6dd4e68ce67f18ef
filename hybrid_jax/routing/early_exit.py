"""Early exit (Fast-ARDiff's shallow-feature pre-filter): decide a seed after `k_early` AR steps of B where the
normalised layer-1 attention entropy lies in one of its tails, and hand every other seed to the learned router at
k = router.prefix_steps.

Per held-out fold the rule is fitted on the other folds only: the sign (whether high entropy means B is good
enough) from the entropy's AUC there, then the tails [lo, hi] (quantiles of the training folds' entropy, searched
over `TAILS`) that exit the most training seeds while the exited seeds' decisions are right at least
`min_accuracy` of the time there. No exit qualifies: the rule exits nothing and the policy is the router. A seed
that exits pays the short probe and its generator (B finished from the short prefix, or A); one that does not pays
the router's whole probe (the short probe continued, not rerun) and its generator. Judged beside the router at
k = 12, the zero-training entropy rule and random routing at the same share to A, each with a 95 % interval.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import numpy as np
from sklearn.metrics import roc_auc_score

from hybrid_jax import stats, xla
from hybrid_jax.generators.model_b import Prefix
from hybrid_jax.probe.features import attention_entropy
from hybrid_jax.routing import evaluation

TAILS = (0.0, 0.05, 0.1, 0.2, 0.3)  # tail shares of the training folds' entropy searched for lo and for hi


def layer1_entropy(prefix: Prefix) -> jax.Array:
    """[b] normalised attention entropy of the decoder's first layer, mean over heads and steps 1..k-1."""
    return attention_entropy(prefix.attn)[:, 0].mean(axis=(0, 2))


@dataclasses.dataclass(frozen=True)
class Rule:
    """Exit below `lo` or above `hi`; `sign` +1: high entropy means cheap_ok (the low tail goes to A), -1 the
    reverse."""

    lo: float = -np.inf
    hi: float = np.inf
    sign: int = 1

    def decide(self, entropy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exited [n], to_a [n]): which seeds exit, and where an exited seed goes (undefined where it does not)."""
        e = np.asarray(entropy, float)
        low, high = e < self.lo, e > self.hi
        return low | high, low if self.sign > 0 else high


def fit_rule(entropy: np.ndarray, y: np.ndarray, min_accuracy: float, tails=TAILS) -> Rule:
    """The rule from training seeds alone (`y` 1 = cheap_ok): the sign by AUC, then the widest tails whose exited
    decisions are right at least `min_accuracy` of the time (no exit when none is)."""
    e, y = np.asarray(entropy, float), np.asarray(y, int)
    sign = 1 if len(np.unique(y)) < 2 or roc_auc_score(y, e) >= 0.5 else -1
    best, best_share = Rule(sign=sign), 0.0
    for q_lo in tails:
        for q_hi in tails:
            rule = Rule(float(np.quantile(e, q_lo)) if q_lo else -np.inf,
                        float(np.quantile(e, 1.0 - q_hi)) if q_hi else np.inf, sign)
            exited, to_a = rule.decide(e)
            right = np.mean(to_a[exited] == (y[exited] == 0)) if exited.any() else 0.0
            if right >= min_accuracy and exited.mean() > best_share:
                best, best_share = rule, float(exited.mean())
    return best


def crossfit(entropy: np.ndarray, y: np.ndarray, folds: np.ndarray, router_to_a: np.ndarray, min_accuracy: float,
             tails=TAILS) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Out-of-sample decisions: per held-out fold a rule fitted on the other folds; exited seeds follow it, the rest
    the router's own (out-of-sample) decision. Returns (to_a [n], exited [n], each fold's rule)."""
    e, folds = np.asarray(entropy, float), np.asarray(folds)
    to_a, exited, rules = np.asarray(router_to_a, bool).copy(), np.zeros(len(e), bool), []
    for f in np.unique(folds):
        test = folds == f
        rule = fit_rule(e[~test], np.asarray(y)[~test], min_accuracy, tails)
        ex, ta = rule.decide(e[test])
        idx = np.flatnonzero(test)
        exited[idx[ex]], to_a[idx[ex]] = True, ta[ex]
        rules.append({"fold": int(f), **dataclasses.asdict(rule)})
    return to_a, exited, rules


def per_seed_cost(to_a: np.ndarray, exited: np.ndarray, units: Mapping) -> np.ndarray:
    """[n, 3] passes, FLOPs, seconds of each seed: an exited seed pays the short probe and A or B finished from the
    short prefix; the others the router's probe and A or B finished from its prefix (`units`: the routed stage's
    units of work plus "probe_early" and "B_finish_early")."""
    side = np.where(np.asarray(to_a, bool), 0, 1)  # the binary pair's option index: A, else B
    late = evaluation.Options.binary(units).cost_probed
    early = evaluation.Options.binary({**units, "B_finish": units["B_finish_early"],
                                       "probe": units["probe_early"]}).cost_probed
    return np.where(np.asarray(exited, bool)[:, None], early[side], late[side])


def early_units(units: Mapping, k_early: int, prefix_steps: int, ar_step_flops: float, seconds: Mapping) -> dict:
    """The two units of work the early exit adds: its probe (k_early AR steps; the entropy is read off the
    attention the steps sow) and B finished from the short prefix (B less those steps), with measured seconds
    (`seconds`: "probe_early", "B_finish_early")."""
    b_finish = units["B_finish"]
    extra = prefix_steps - k_early  # AR steps B still runs after the short prefix, beyond the router's
    return {"probe_early": {"passes": k_early, "flops": k_early * ar_step_flops, "seconds": seconds["probe_early"]},
            "B_finish_early": {"passes": b_finish["passes"] + extra, "flops": b_finish["flops"] + extra * ar_step_flops,
                               "seconds": seconds["B_finish_early"]}}


def evaluate(entropy: np.ndarray, y: np.ndarray, folds: np.ndarray, p_cheap: np.ndarray, threshold: float,
             quality_a: np.ndarray, quality_b: np.ndarray, entropy_k12: np.ndarray, units: Mapping, *,
             min_accuracy: float, seed: int = 0, boot: stats.BootstrapConfig = stats.BootstrapConfig()) -> dict:
    """The early-exit policy's out-of-sample point beside the router at k = 12 (its operating threshold), the
    zero-training entropy rule (k = 12 entropy, top share to A) and random routing at the policy's share to A:
    cost per image, mean quality with its 95 % interval, and the paired gaps (policy minus each) with intervals."""
    rng = np.random.default_rng(seed)
    y, qa, qb = np.asarray(y, int), np.asarray(quality_a, float), np.asarray(quality_b, float)
    router_to_a = np.asarray(p_cheap) < threshold
    to_a, exited, rules = crossfit(entropy, y, folds, router_to_a, min_accuracy)
    share = float(to_a.mean())
    quality = lambda m: np.where(m, qa, qb)
    entropy_rule = evaluation.top_share_mask(np.asarray(entropy_k12), share)
    none = np.zeros(len(y), bool)
    rows = {"early exit": (to_a, per_seed_cost(to_a, exited, units)),
            "router (k = 12)": (router_to_a, per_seed_cost(router_to_a, none, units)),
            "entropy rule": (entropy_rule, per_seed_cost(entropy_rule, none, units))}
    always_a = float(units["A"]["flops"])
    out = {"n": len(y), "exit_share": float(exited.mean()), "share_to_a": share,
           "exited_accuracy": float(np.mean(to_a[exited] == (y[exited] == 0))) if exited.any() else float("nan"),
           "entropy_auc": float(stats.auc(y, entropy)),
           "entropy_auc_ci": stats.bootstrap_ci((y, entropy), stats.auc, rng, boot),
           "rules": rules, "min_accuracy": min_accuracy, "points": {}}
    mean = lambda x, axis=-1: np.mean(x, axis=axis)
    point = lambda q, share_to_a, flops: {"share_to_a": float(share_to_a), "quality": float(q.mean()),
                                          "quality_ci": stats.bootstrap_ci((q,), mean, rng, boot),
                                          "flops_per_image": float(flops),
                                          "flops_savings": float(1.0 - flops / always_a)}
    for name, (mask, cost) in rows.items():
        out["points"][name] = point(quality(mask), mask.mean(), cost[:, 1].mean())
        out["points"][name].update({f"{f}_per_image": float(cost[:, i].mean())
                                    for i, f in enumerate(evaluation.COST_FIELDS)})
    random = share * qa + (1.0 - share) * qb  # per seed: its expectation under random routing at the same share
    no_probe = evaluation.Options.binary(units).per_image(evaluation.binary_mix(share), False)["flops"]
    out["points"]["random (same share)"] = point(random, share, no_probe)
    q_exit = quality(to_a)
    for name, other in (("router (k = 12)", quality(router_to_a)), ("random (same share)", random),
                        ("entropy rule", quality(entropy_rule))):
        gap = q_exit - other
        out["points"][name]["gap"] = {"quality": float(gap.mean()), "ci": stats.bootstrap_ci((gap,), mean, rng, boot)}
    return out


def make_probe(sampler_b, k_early: int):
    """jitted (params_b, keys [n][, labels]) -> (the k_early-step Prefix, its layer-1 entropy [n])."""
    def probe(params_b, keys, labels=None):
        prefix = sampler_b.ar_prefix(params_b, keys, k_early, labels)
        return prefix, layer1_entropy(prefix)
    return xla.jit(probe)

