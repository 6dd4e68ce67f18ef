"""Headline evaluation: cost-quality points, bootstrap CIs, router vs random, cross-fitted baselines."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest

from hybrid_jax import stats
from hybrid_jax.routing import evaluation as ev

COSTS = {"A": {"passes": 800, "flops": 8e12, "seconds": 4.0},
         "B": {"passes": 46, "flops": 4e11, "seconds": 0.3},
         "B_finish": {"passes": 40, "flops": 3.5e11, "seconds": 0.26},
         "probe": {"passes": 7, "flops": 6e10, "seconds": 0.05}}
NAMES = ("attn_entropy", "noise", "good")
BOOT = ev.BootstrapConfig(n_resamples=500)


def make_inputs(n: int = 400, seed: int = 0, informative: bool = True, prior: float = 0.6, d: int = 4) -> dict:
    """Synthetic per-seed arrays: B's quality is low where y = 0 (A_needed)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior).astype(int)
    qa = rng.uniform(0.7, 0.9, n)
    qb = np.where(y == 1, rng.uniform(0.6, 0.9, n), rng.uniform(0.0, 0.3, n))
    p = np.clip(0.1 + 0.8 * y + rng.normal(0, 0.05, n), 0, 1) if informative else rng.random(n)
    X = np.stack([(1 - y) + rng.normal(0, 0.7, n), rng.normal(size=n), y + rng.normal(0, 0.3, n)], 1)
    return dict(y=y, p_cheap=p, folds=np.arange(n) % 5, X=X, names=NAMES, quality_a=qa, quality_b=qb,
                costs=COSTS, feats_a=rng.normal(size=(n, d)), feats_b=rng.normal(0.5, 1, (n, d)),
                feats_real=rng.normal(size=(300, d)))


@pytest.fixture(scope="module")
def informative() -> dict:
    return ev.cost_quality_curves(**make_inputs(informative=True), boot=BOOT, n_mc=8)


@pytest.fixture(scope="module")
def noise() -> dict:
    return ev.cost_quality_curves(**make_inputs(informative=False, seed=1), boot=BOOT, n_mc=8)


def by_strategy(result: dict, strategy: str) -> list[dict]:
    return [p for p in result["points"] if p["strategy"] == strategy]


def test_pure_noise_router_is_no_better_than_random(noise):
    h = noise["router_vs_random"]
    lo, hi = h["quality_gap_ci"]
    assert lo <= 0.0 <= hi and h["verdict"] == ev.VERDICT_TIE
    assert h["precision_gap_ci"][0] <= 0.0 <= h["precision_gap_ci"][1]
    assert noise["problems"] == []


def test_noise_gap_ci_covers_zero_at_about_the_nominal_rate():
    """Not one lucky data set: over 20 noise data sets the 95 % CI contains 0 nearly always."""
    covered = 0
    for s in range(20):
        i = make_inputs(n=400, seed=100 + s, informative=False)
        h = ev.router_vs_random(i["y"], i["p_cheap"], i["quality_a"], i["quality_b"], 0.5, seed=s,
                                boot=ev.BootstrapConfig(n_resamples=400))
        covered += h["verdict"] == ev.VERDICT_TIE
    assert covered >= 16


def test_informative_router_beats_random(informative):
    h = informative["router_vs_random"]
    assert h["verdict"] == ev.VERDICT_BEATS and h["precision_verdict"] == ev.VERDICT_BEATS
    assert h["quality_gap_ci"][0] > 0 and h["precision_router"] > 0.9
    assert informative["operating"]["precision"] > 0.9
    assert informative["operating"]["strategy"] == "router" and informative["operating"]["param"] == 0.5
    rand = informative["operating_random"]
    assert rand["strategy"] == "random" and rand["share_to_a"] == informative["operating"]["share_to_a"]
    s = rand["share_to_a"]  # random's figures are exact expected values
    inp = make_inputs(informative=True)
    assert rand["quality"] == pytest.approx(s * inp["quality_a"].mean() + (1 - s) * inp["quality_b"].mean())
    assert rand["precision"] == pytest.approx(inp["y"].mean()) and rand["recall"] == pytest.approx(1 - s)
    assert rand["fd_sd"] > 0  # Monte-Carlo spread over random masks is reported
    assert informative["problems"] == []


def test_savings_and_costs_are_linear(informative):
    a, b, bf, pr = (COSTS[k] for k in ("A", "B", "B_finish", "probe"))
    (always_a,), (always_b,) = by_strategy(informative, "always A"), by_strategy(informative, "always B")
    for f in ev.COST_FIELDS:
        assert always_a[f"{f}_savings"] == 0.0
        assert always_b[f"{f}_savings"] == pytest.approx(1 - b[f] / a[f], rel=1e-12)
    for p in informative["points"]:
        s = p["share_to_a"]
        expected = s * a["seconds"] + (1 - s) * bf["seconds"] + pr["seconds"] if p["pays_probe"] \
            else s * a["seconds"] + (1 - s) * b["seconds"]
        assert p["seconds_per_image"] == pytest.approx(expected, rel=1e-12)
        assert p["pays_probe"] == (p["strategy"] in ("router", "entropy", "best feature"))


def test_oracle_has_perfect_precision_and_recall(informative):
    (oracle,) = by_strategy(informative, "oracle")
    assert oracle["precision"] == 1.0 and oracle["recall"] == 1.0 and oracle["accuracy"] == 1.0
    assert oracle["precision_ci"] == [1.0, 1.0] and not oracle["pays_probe"]


def test_entropy_rule_sends_top_share_by_entropy_to_a():
    inp = make_inputs(n=50)
    mask = ev.top_share_mask(inp["X"][:, 0], 0.2)
    assert mask.sum() == 10 and inp["X"][mask, 0].min() > inp["X"][~mask, 0].max()


def test_best_feature_is_chosen_without_the_held_out_fold():
    rng = np.random.default_rng(3)
    n = 300
    y, folds = (rng.random(n) < 0.5).astype(int), np.arange(n) % 3
    leaky = np.where(folds == 0, y, rng.normal(size=n))  # perfect inside fold 0 only
    steady = -(y + rng.normal(0, 0.8, n))  # informative everywhere, negative sign
    X, names = np.stack([leaky, steady, rng.normal(size=n)], 1), ("leaky", "steady", "noise")
    choices = {c["fold"]: c for c in ev.best_feature_choices(X, y, folds, names)}
    assert choices[0]["feature"] == "steady" and choices[0]["sign"] == -1
    for f in range(3):  # anything inside the held-out fold leaves its own choice unchanged
        X2 = X.copy()
        X2[folds == f] = rng.normal(size=((folds == f).sum(), 3))
        X2[folds == f, 2] = y[folds == f]  # "noise" made perfect inside the held-out fold
        again = {c["fold"]: c for c in ev.best_feature_choices(X2, y, folds, names)}
        assert again[f] == choices[f]
    mask = ev.best_feature_mask(X, folds, list(choices.values()), 0.3)
    assert all(mask[folds == f].sum() == round(0.3 * (folds == f).sum()) for f in range(3))


def test_frechet_distance_of_identical_sets_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    assert abs(stats.frechet_distance(a, a)) < 1e-6
    assert stats.frechet_distance(a, a + 2.0) == pytest.approx(6 * 4.0, rel=1e-6)


def test_bootstrap_cis_contain_the_point_estimates(informative, noise):
    for result in (informative, noise):
        for p in result["points"]:
            for k in ("quality", "precision", "recall", "accuracy"):
                if np.isfinite(p[k]):
                    lo, hi = p[f"{k}_ci"]
                    assert lo - 1e-12 <= p[k] <= hi + 1e-12, (p["strategy"], p["param"], k)
        h = result["router_vs_random"]
        assert h["quality_gap_ci"][0] <= h["quality_gap"] <= h["quality_gap_ci"][1]


def test_warnings_when_fewer_than_ten_positives():
    inp = make_inputs(n=60, prior=0.1, seed=2)
    assert inp["y"].sum() < 10
    r = ev.cost_quality_curves(**inp, boot=ev.BootstrapConfig(n_resamples=100), n_mc=2, shares=[0.5])
    assert all("cheap_ok" in p["warning"] for p in r["points"])
    assert r["router_vs_random"]["warning"]
    (always_a,) = by_strategy(r, "always A")
    assert "sent to B" in always_a["warning"] and np.isnan(always_a["precision"])
    ok = ev.cost_quality_curves(**make_inputs(n=200), boot=ev.BootstrapConfig(n_resamples=100), n_mc=2)
    (oracle,) = by_strategy(ok, "oracle")
    assert oracle["warning"] is None


def test_output_is_json_and_deterministic():
    kw = dict(boot=ev.BootstrapConfig(n_resamples=100), n_mc=3, shares=[0.0, 0.5, 1.0], thresholds=[0.5])
    r1 = ev.cost_quality_curves(**make_inputs(n=80), seed=7, **kw)
    r2 = ev.cost_quality_curves(**make_inputs(n=80), seed=7, **kw)
    assert json.dumps(r1) == json.dumps(r2)
    assert {"points", "operating", "operating_random", "router_vs_random", "problems"} <= set(r1)


def test_check_consistency_flags_broken_points(informative):
    points = copy.deepcopy(informative["points"])
    assert ev.check_consistency(points) == []
    router = next(p for p in points if p["strategy"] == "router" and 0.2 < p["share_to_a"] < 0.8)
    router["quality"] = 1e6
    router["seconds_per_image"] = 1e6
    assert any("quality" in m for m in ev.check_consistency(points))
    assert any("seconds_savings" in m for m in ev.check_consistency(points))
    points = copy.deepcopy(informative["points"])
    router = next(p for p in points if p["strategy"] == "router" and 0.2 < p["share_to_a"] < 0.8)
    router["seconds_savings"] = -0.3  # passes and FLOPs say it saves, seconds say it costs more
    assert any("disagree in sign" in m for m in ev.check_consistency(points))
    router["seconds_savings"] = 1e6
    assert any("outside [-1, 1]" in m for m in ev.check_consistency(points))


def test_savings_intervals_follow_the_share_to_a(informative):
    """Savings CIs come from the bootstrap of the share to A: they contain the point, and fixed strategies
    (always A / B) have none to speak of."""
    for p in informative["points"]:
        for f in ev.COST_FIELDS:
            lo, hi = p[f"{f}_savings_ci"]
            assert lo - 1e-12 <= p[f"{f}_savings"] <= hi + 1e-12, (p["strategy"], f)
    for s in ("always A", "always B"):
        p = by_strategy(informative, s)[0]
        assert p["passes_savings_ci"][0] == p["passes_savings_ci"][1] == pytest.approx(p["passes_savings"])
    op = informative["operating"]
    assert op["passes_savings_ci"][1] - op["passes_savings_ci"][0] > 0.01


def test_fixed_strategies_are_named_by_the_options_with_the_same_numbers(informative):
    """The binary study is the two-option case: naming the options changes the names, not a number."""
    named = ev.cost_quality_curves(**make_inputs(informative=True), boot=BOOT, n_mc=8,
                                   options=("A/200 steps", "B/corrector 30"))
    rename = {"always A/200 steps": "always A", "always B/corrector 30": "always B"}
    renamed = [dict(p, strategy=rename.get(p["strategy"], p["strategy"])) for p in named["points"]]
    assert json.dumps(renamed) == json.dumps(informative["points"])  # (NaN-safe equality)
    assert [p["option"] for p in named["points"][:2]] == [0, 1] and named["problems"] == []


def test_per_class_rows_stand_beside_random_routing_and_the_class_prior():
    rng = np.random.default_rng(0)
    n = 12
    labels, to_a, need = rng.integers(0, 2, n), rng.random(n) < 0.5, rng.random(n) < 0.4
    qa, qb = rng.random(n), rng.random(n)
    for row, m in zip(ev.per_class(["dog", "cat"], labels, to_a, need, qa, qb),
                      [labels == 0, labels == 1, np.ones(n, bool)]):
        k = int(to_a[m].sum())  # random routing of k of the class's seeds to A, over every such mask
        masks = [np.isin(np.arange(m.sum()), c) for c in itertools.combinations(range(m.sum()), k)]
        expected = np.mean([np.mean(np.where(r, qa[m], qb[m])) for r in masks])
        assert row["quality_random"] == pytest.approx(expected)
        assert row["prior"] == pytest.approx(1 - need[m].mean())


def test_rater_agreement_resamples_seeds_and_sits_beside_chance():
    """Accuracy and kappa as sklearn's on the masked items; the interval is over seeds (a seed's items move
    together), so it is wider than the one over items when a seed's verdicts agree or disagree together."""
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    n, k = 120, 4
    auto = rng.random((n, k)) < 0.6
    seed_agrees = rng.random(n) < 0.7  # each seed's items all agree, or all disagree
    human = np.where(seed_agrees[:, None], auto, ~auto)
    mask = rng.random((n, k)) < 0.8
    out = stats.rater_agreement(human, auto, mask, np.random.default_rng(1))
    h, a = human[mask], auto[mask]
    assert out["n"] == mask.sum()
    assert out["accuracy"] == pytest.approx(np.mean(h == a))
    assert out["cohen_kappa"] == pytest.approx(cohen_kappa_score(h, a))
    assert out["chance_accuracy"] == pytest.approx(h.mean() * a.mean() + (1 - h.mean()) * (1 - a.mean()))
    lo, hi = out["accuracy_ci"]
    items = stats.rater_agreement(human.reshape(-1, 1), auto.reshape(-1, 1), mask.reshape(-1, 1),
                               np.random.default_rng(1))
    assert lo < out["accuracy"] < hi and hi - lo > 1.5 * np.diff(items["accuracy_ci"])[0]
    assert stats.rater_agreement(human, auto, np.zeros_like(mask), np.random.default_rng(1)) == {"n": 0}
    with pytest.raises(ValueError, match="differ in shape"):
        stats.rater_agreement(human, auto[:, :2], mask, np.random.default_rng(1))


def test_rater_agreement_on_one_seed_has_no_interval():
    out = stats.rater_agreement(np.array([[True, False]]), np.array([[True, True]]), np.ones((1, 2), bool),
                             np.random.default_rng(0))
    assert out["n"] == 2 and out["accuracy"] == 0.5 and np.isnan(out["accuracy_ci"]).all()
