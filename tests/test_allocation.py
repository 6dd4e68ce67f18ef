"""Per-seed compute allocation: labels from option qualities, cross-fitted policy, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_jax import allocation, evaluation

NAMES = ("A/200", "A/50", "B/30", "B/0")
COST = np.array([[800, 8e12, 4.0], [200, 2e12, 1.0], [46, 3e11, 0.2], [16, 1e11, 0.05]], float)
PROBE = np.array([13, 5e10, 0.02])
BOOT = evaluation.BootstrapConfig(n_resamples=200)


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


def _run(quality, X, **kw):
    n = len(X)
    return allocation.evaluate(quality, _opts(), X, np.arange(n) % 5, tau=0.05, binary=(0, 2),
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
