"""Per-seed compute allocation: labels from option qualities, cross-fitted policy, baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_jax import stats
from hybrid_jax.routing import allocation, evaluation, policy

NAMES = ("A/200", "A/50", "B/30", "B/0")
COST = np.array([[800, 8e12, 4.0], [200, 2e12, 1.0], [46, 3e11, 0.2], [16, 1e11, 0.05]], float)
PROBE = np.array([13, 5e10, 0.02])
BOOT = stats.BootstrapConfig(n_resamples=200)


def _opts() -> allocation.Options:
    resumes = np.array([[0], [0], [1], [1]]) * np.array([12, 4e10, 0.015])
    return allocation.Options(NAMES, COST, COST + PROBE - resumes)


def _synthetic(n: int = 400, seed: int = 0, informative: bool = True):
    """Each seed's cheapest acceptable option is set by a hidden class that feature 0 reveals."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 4, n)  # index of the cheapest acceptable option, in cost order 3, 2, 1, 0
    cheapest = 3 - cls
    quality = np.full((n, 4), 0.2)
    for k in range(4):
        quality[:, k] = np.where(k <= cheapest, 0.8, 0.2) + rng.normal(0, 0.005, n)  # costlier options are fine
    X = np.column_stack([cls + rng.normal(0, 0.1, n) if informative else rng.normal(size=n), rng.normal(size=n)])
    return quality, X, cheapest


def _run(quality, X, tau=0.05, **kw):
    n = len(X)
    return allocation.evaluate(quality, _opts(), X, np.arange(n) % 5, tau=tau, binary=(0, 2),
                               p_cheap=np.full(n, 0.6), router_threshold=0.55, boot=BOOT,
                               gb={"n_estimators": 30, "max_depth": 2, "learning_rate": 0.2}, **kw)


def test_oracle_takes_the_cheapest_acceptable_option():
    quality, _, cheapest = _synthetic()
    ok = allocation.acceptable(quality, 0.05)
    np.testing.assert_array_equal(allocation.cheapest(ok, _opts().cheapest_first), cheapest)


def test_learned_allocation_recovers_the_cheapest_acceptable_option_out_of_sample():
    quality, X, cheapest = _synthetic()
    out = _run(quality, X)
    learned = [p for p in out["points"] if p["policy"] == "learned allocation"]
    oracle = next(p for p in out["points"] if p["policy"] == "oracle")
    exact = {e["threshold"]: e["exact"] for e in out["learned_exact"]}
    best = max(exact.values())
    assert best > 0.9, exact
    at_best = next(p for p in learned if exact[p["param"]] == best)
    # its compute is within 10 % of the oracle's (plus the probe it pays and the oracle does not)
    assert at_best["flops_per_image"] <= 1.1 * oracle["flops_per_image"] + PROBE[1]
    assert at_best["quality"] >= oracle["quality"] - 0.02


def test_noise_features_do_not_beat_random_at_the_same_mix():
    quality, X, _ = _synthetic(informative=False, seed=1)
    out = _run(quality, X)
    for t in (e["threshold"] for e in out["learned_exact"]):
        ours = next(p for p in out["points"] if p["policy"] == "learned allocation" and p["param"] == t)
        rand = next(p for p in out["points"] if p["policy"] == "random (same mix)" and p["param"] == t)
        lo, hi = rand["quality_ci"]
        assert ours["quality"] <= hi + 0.03, (t, ours["quality"], rand["quality_ci"])
        assert rand["flops_per_image"] == pytest.approx(ours["flops_per_image"] - PROBE[1], rel=0.05)


def test_fixed_options_cost_what_they_cost():
    quality, X, _ = _synthetic(n=100)
    out = _run(quality, X)
    fixed = [p for p in out["points"] if p["policy"].startswith("fixed")]
    assert [p["passes_per_image"] for p in fixed] == list(COST[:, 0])
    assert fixed[0]["flops_savings"] == 0.0 and fixed[-1]["flops_savings"] == pytest.approx(1 - 1e11 / 8e12)
    assert all(sum(p["mix"].values()) == pytest.approx(1.0) for p in out["points"])


def _cascade_case(n: int = 400, seed: int = 2):
    """B's probe reveals whether B/0 or B/30 suffices; only A's probe reveals whether A/50 suffices."""
    rng = np.random.default_rng(seed)
    cls_b, cls_a = rng.integers(0, 3, n), rng.integers(0, 2, n)  # cls_b 2: A needed; cls_a 1: A/200 needed
    good = lambda m: np.where(m, 0.8, 0.2) + rng.normal(0, 0.005, n)
    a50 = cls_a == 0
    quality = np.column_stack([good(np.ones(n, bool)), good(a50), good(cls_b <= 1), good(cls_b == 0),
                               good(np.ones(n, bool)), good(a50)])
    X = np.column_stack([cls_b + rng.normal(0, 0.1, n), rng.normal(size=n)])
    X_a = np.column_stack([cls_a + rng.normal(0, 0.1, n), rng.normal(size=n)])
    probed = COST[:2] + np.array([2, 2e10, 0.01])  # A's probe (2 passes) then the rest
    cost = np.vstack([COST, probed])
    resumes = np.array([[0], [0], [1], [1], [0], [0]]) * np.array([12, 4e10, 0.015])
    opts = allocation.Options(NAMES + ("A/200 after probe", "A/50 after probe"), cost, cost + PROBE - resumes,
                              probe=("", "", "B", "B", "A", "A"))
    best = np.where(cls_b == 0, 3, np.where(cls_b == 1, 2, np.where(a50, 5, 4)))  # the cascade's ideal choice
    return quality, X, X_a, opts, best


def test_the_cascade_reads_bs_probe_then_as_probe_and_pays_both():
    quality, X, X_a, opts, best = _cascade_case()
    n = len(X)
    out = allocation.evaluate(quality, opts, X, np.arange(n) % 5, tau=0.05, binary=(0, 2), p_cheap=np.full(n, 0.6),
                              router_threshold=0.55, boot=BOOT, probes={"A": X_a},
                              gb={"n_estimators": 30, "max_depth": 2, "learning_rate": 0.2})
    pts = out["points"]
    cascade = max((p for p in pts if p["policy"] == "cascade"), key=lambda p: p["quality"])
    ideal = np.bincount(best, minlength=6) / n
    assert np.abs(np.array(list(cascade["mix"].values())) - ideal).sum() < 0.1, (cascade["mix"], ideal)
    oracle = next(p for p in pts if p["policy"] == "oracle (all options)")
    assert cascade["quality"] >= oracle["quality"] - 0.02
    # B's probe on every seed; A's probe (inside the "after probe" options' cost) only on the seeds sent to A
    expected = opts.cost_probed[best, 1].mean()
    assert cascade["flops_per_image"] == pytest.approx(expected, rel=0.05)
    assert cascade["flops_per_image"] <= 1.1 * oracle["flops_per_image"] + PROBE[1] + 2e10
    by_a = max((p for p in pts if p["policy"] == "A probe allocation"), key=lambda p: p["quality"])
    assert set(k for k, v in by_a["mix"].items() if v > 0) <= {"A/200 after probe", "A/50 after probe"}
    assert by_a["mix"]["A/50 after probe"] == pytest.approx(np.mean(quality[:, 5] > 0.5), abs=0.05)
    learned = max((p for p in pts if p["policy"] == "learned allocation"), key=lambda p: p["quality"])
    assert not any(k.endswith("after probe") and v > 0 for k, v in learned["mix"].items())
    assert any(p["policy"] == "random (cascade's mix)" for p in pts)


def test_each_family_probe_has_its_probe_allocation_and_its_cascade():
    """A second family probe ("C", whose features alone reveal which of its two budgets suffices) beside A's: each
    gets its own probe allocation over its own options and a cascade through it (B's probe first), paying its own
    probe; the first family's cascade keeps its name, the policy deploys it."""
    quality, X, X_a, opts, best = _cascade_case()
    n, rng = len(X), np.random.default_rng(5)
    cls_c = rng.integers(0, 2, n)
    good = lambda m: np.where(m, 0.8, 0.2) + rng.normal(0, 0.005, n)
    quality = np.column_stack([quality, good(np.ones(n, bool)), good(cls_c == 0)])
    X_c = np.column_stack([cls_c + rng.normal(0, 0.1, n), rng.normal(size=n)])
    probed = opts.cost[4:6] + np.array([1, 1e10, 0.005])  # C's probe is cheaper than A's
    opts = allocation.Options(opts.names + ("C/200 after probe", "C/50 after probe"), np.vstack([opts.cost, probed]),
                              np.vstack([opts.cost_probed, probed + PROBE]), probe=opts.probe + ("C", "C"))
    out = allocation.evaluate(quality, opts, X, np.arange(n) % 5, tau=0.05, binary=(0, 2), p_cheap=np.full(n, 0.6),
                              router_threshold=0.55, boot=BOOT, probes={"A": X_a, "C": X_c},
                              gb={"n_estimators": 30, "max_depth": 2, "learning_rate": 0.2})
    names = {p["policy"] for p in out["points"]}
    assert {"A probe allocation", "cascade", "random (cascade's mix)", "C probe allocation", "cascade via C",
            "random (cascade via C's mix)", "oracle (all options)"} <= names
    best_of = lambda name: max((p for p in out["points"] if p["policy"] == name), key=lambda p: p["quality"])
    by_c = best_of("C probe allocation")
    assert {k for k, v in by_c["mix"].items() if v > 0} <= {"C/200 after probe", "C/50 after probe"}
    assert by_c["mix"]["C/50 after probe"] == pytest.approx(np.mean(cls_c == 0), abs=0.05)
    via_c = best_of("cascade via C")
    ideal = np.where(best <= 3, best, np.where(cls_c == 0, 7, 6))  # B where B's probe says so, else C's budget
    assert np.abs(np.array(list(via_c["mix"].values())) - np.bincount(ideal, minlength=8) / n).sum() < 0.1
    assert via_c["flops_per_image"] == pytest.approx(opts.cost_probed[ideal, 1].mean(), rel=0.05)
    assert not any(k.startswith("A/") and "after" in k and v > 0 for k, v in via_c["mix"].items())
    deployed = policy.fit({"B": X, "A": X_a, "C": X_c}, {p: ("f0", "f1") for p in "BAC"}, quality, opts, tau=0.05,
                          threshold=0.7, gb={"n_estimators": 10, "max_depth": 2, "learning_rate": 0.2})
    assert [s.probe for s in deployed.stages] == ["B", "A"]


def test_per_class_rows_add_up_to_the_whole():
    """Every policy's per-class quality and FLOPs, weighted by the classes' seeds, are its overall figures
    (random: the expectation at each class's own mix, which averages to the overall mix's only per class)."""
    quality, X, _ = _synthetic(n=200)
    labels = np.arange(200) % 3
    out = _run(quality, X, classes=allocation.Classes(labels, ("cat", "dog", "horse")))
    for p in out["points"]:
        rows = p["per_class"]
        assert [r["seeds"] for r in rows.values()] == [67, 67, 66]
        w = np.array([r["seeds"] for r in rows.values()]) / 200
        assert np.dot(w, [r["flops_per_image"] for r in rows.values()]) == pytest.approx(p["flops_per_image"])
        for r in rows.values():
            assert r["quality_ci"][0] <= r["quality"] <= r["quality_ci"][1]
        if not p["policy"].startswith("random"):
            assert np.dot(w, [r["quality"] for r in rows.values()]) == pytest.approx(p["quality"])
    assert "per_class" not in _run(quality, X)["points"][0]  # one class: no per-class rows


def test_per_class_routing_rows_have_intervals_and_add_up():
    rng = np.random.default_rng(0)
    n = 120
    labels, to_a, oracle = np.arange(n) % 2, rng.random(n) < 0.4, rng.random(n) < 0.5
    sa, sb = rng.normal(0.6, 0.1, n), rng.normal(0.5, 0.1, n)
    rows = evaluation.per_class(("cat", "dog"), labels, to_a, oracle, sa, sb, boot=BOOT)
    assert [r["class"] for r in rows] == ["cat", "dog", "all"]
    for r in rows:
        for k in ("quality_routed", "gap_vs_random", "precision"):
            assert r[f"{k}_ci"][0] <= r[k] <= r[f"{k}_ci"][1], (r["class"], k)
    whole = rows[-1]
    assert whole["precision"] == pytest.approx(np.mean(~oracle[~to_a]))
    assert whole["quality_routed"] == pytest.approx(np.mean(np.where(to_a, sa, sb)))
    assert whole["gap_vs_random"] == pytest.approx(whole["quality_routed"] - whole["quality_random"])


def test_a_per_seed_tau_equal_to_a_number_changes_nothing_and_a_wider_one_accepts_more():
    quality, X, _ = _synthetic(n=100)
    scalar, per_seed = _run(quality, X), _run(quality, X, tau=np.full(100, 0.05))
    assert [p["quality"] for p in scalar["points"]] == [p["quality"] for p in per_seed["points"]]
    assert per_seed["tau"] == 0.05
    wide = np.where(np.arange(100) % 2, 0.05, 0.7)  # every option acceptable for the even seeds
    out = _run(quality, X, tau=wide)
    assert out["tau"] == "per class"
    ok = allocation.acceptable(quality, wide)
    assert ok[::2].all() and (ok[1::2] == allocation.acceptable(quality[1::2], 0.05)).all()


def test_each_class_has_its_router_curve_beside_random_at_its_shares():
    rng = np.random.default_rng(1)
    n = 90
    labels, y = np.arange(n) % 3, (rng.random(n) < 0.5).astype(int)
    p_cheap = np.clip(0.5 * y + 0.5 * rng.random(n), 0, 1)
    qa, qb = rng.normal(0.6, 0.05, n), rng.normal(0.5, 0.05, n)
    costs = {"A": {"passes": 800, "flops": 8e12, "seconds": 4.0}, "B": {"passes": 46, "flops": 3e11, "seconds": 0.2},
             "B_finish": {"passes": 34, "flops": 2e11, "seconds": 0.15},
             "probe": {"passes": 13, "flops": 1e11, "seconds": 0.05}}
    out = evaluation.curves_by_class(("cat", "dog", "horse"), labels, y, p_cheap, qa, qb, costs,
                                     thresholds=(0.3, 0.5, 0.7), boot=BOOT, options=("A/200", "B/30"))
    assert list(out) == ["cat", "dog", "horse"]
    for c, pts in enumerate(out.values()):
        m = labels == c
        by = {(p["strategy"], p["param"]): p for p in pts}
        assert by[("always A/200", None)]["quality"] == pytest.approx(qa[m].mean())
        assert by[("always B/30", None)]["flops_savings"] == pytest.approx(1 - 3e11 / 8e12)
        for t in (0.3, 0.5, 0.7):
            router = by[("router", t)]
            share = np.mean(p_cheap[m] < t)
            assert router["share_to_a"] == pytest.approx(share)
            assert router["quality"] == pytest.approx(np.mean(np.where(p_cheap[m] < t, qa[m], qb[m])))
            random = by[("random", round(share * m.sum()) / m.sum())]
            assert random["quality"] == pytest.approx(share * qa[m].mean() + (1 - share) * qb[m].mean())
            assert random["quality_ci"][0] <= random["quality"] <= random["quality_ci"][1]


def test_people_s_verdicts_replace_the_automated_ones_where_given():
    """Where a person labeled a (seed, option) pair, the oracle and the learned allocation follow that verdict;
    the agreement with the automated labels is reported, and equals sklearn's on the labeled pairs."""
    from sklearn.metrics import cohen_kappa_score

    quality, X, cheapest = _synthetic(n=200)
    auto = allocation.acceptable(quality, 0.05)
    human = np.full(quality.shape, np.nan)
    human[:100, 1:] = 0.0  # the first 100 seeds: people accept none of the cheaper options
    human[100:150, 3] = 1.0  # 50 more: people accept B/0 (where the automated rule may not)
    ok = allocation.acceptable(quality, 0.05, human)
    assert not ok[:100, 1:].any() and ok[100:150, 3].all()
    np.testing.assert_array_equal(ok[150:], auto[150:])
    out = _run(quality, X, human=human)
    oracle = next(p for p in out["points"] if p["policy"] == "oracle")
    expected = np.where(np.arange(200) < 100, 0, np.where(np.arange(200) < 150, 3, cheapest))
    assert oracle["flops_per_image"] == pytest.approx(COST[expected, 1].mean())
    labeled = ~np.isnan(human)
    h, a = human[labeled] > 0.5, auto[labeled]
    agree = out["human"]
    assert agree["n"] == labeled.sum() == 100 * 3 + 50
    assert agree["accuracy"] == pytest.approx(np.mean(h == a))
    assert agree["cohen_kappa"] == pytest.approx(cohen_kappa_score(h, a))
    lo, hi = agree["accuracy_ci"]
    assert lo <= agree["accuracy"] <= hi  # over seeds, beside chance agreement at the two acceptable shares
    assert agree["chance_accuracy"] == pytest.approx(h.mean() * a.mean() + (1 - h.mean()) * (1 - a.mean()))
    assert set(agree["by_option"]) == set(NAMES[1:]) and agree["by_option"]["B/0"]["n"] == 150
    assert "human" not in _run(quality, X, human=np.full(quality.shape, np.nan))


GOLDEN = Path(__file__).parent / "data" / "binary_figures_golden.json"


def _golden_figures() -> dict:
    """The binary study's figures (cost-quality curves, per class) and the allocation's on fixed synthetic inputs."""
    from test_evaluation import make_inputs

    boot = stats.BootstrapConfig(n_resamples=100)
    inp = make_inputs(n=120, seed=3)
    out = {"cost_quality_curves": evaluation.cost_quality_curves(**inp, boot=boot, n_mc=4)}
    out["curves_by_class"] = evaluation.curves_by_class(("cat", "dog"), np.arange(120) % 2, inp["y"], inp["p_cheap"],
                                                        inp["quality_a"], inp["quality_b"], inp["costs"], boot=boot)
    quality, X, _ = _synthetic(n=120, seed=3)
    out["allocation"] = _run(quality, X, feats=np.random.default_rng(0).normal(size=(120, 4, 3)),
                             feats_real=np.random.default_rng(1).normal(size=(50, 3)))
    return json.loads(json.dumps(out, default=float))


def _differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list):
        return [f"{path}: length"] if len(a) != len(b) else [
            d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)):
        same = (np.isnan(a) and np.isnan(b)) or np.isclose(a, b, rtol=1e-9, atol=0.0)
        return [] if same else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_roles_as_options_leave_every_binary_and_allocation_figure_as_it_was():
    """The binary study's cost structure became the allocation's (`evaluation.Options`, two options): every figure
    of the brief's tables and of the allocation must stay as it was. The golden file was written by the code before
    that change (commit 1300e45, `evaluation.Costs` and `allocation.Options` apart) from these same inputs; equal
    to 1e-9 relative (the one formula sums the probe into each row, the old one added it after: rounding only).
    Rewrite it only with a change that is meant to move a figure, and say so in the commit."""
    diffs = _differences(json.loads(GOLDEN.read_text()), _golden_figures())
    assert not diffs, diffs[:10]
