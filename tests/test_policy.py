"""The deployed allocation policy: in-graph choice equal to the NumPy rule on sklearn's probabilities,
the cascade it learns on every seed, save/load round trip, clear errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hybrid_jax import xla
from hybrid_jax.routing import allocation, policy, router
from test_allocation import _cascade_case, _opts, _synthetic

GB = {"n_estimators": 30, "max_depth": 2, "learning_rate": 0.2}
NAMES = {"B": ("b0", "b1"), "A": ("a0", "a1")}


def _reference(feats, quality, opts, tau, t):
    """The same rule in NumPy from sklearn's predict_proba of the same fits (`allocation.predicted`)."""
    ok, order = allocation.acceptable(quality, tau), opts.cheapest_first
    p = np.zeros(quality.shape)
    for k in range(quality.shape[1]):
        probe = "A" if k in opts.columns("A") else "B"
        m = allocation.fit_acceptable(feats[probe], ok[:, k], GB, 0)
        p[:, k] = m if isinstance(m, float) else m.predict_proba(feats[probe].astype(np.float32))[:, 1]
    a_cols, b_cols = opts.columns("A"), opts.columns("B")
    by_a = allocation.predicted(p[:, a_cols], a_cols, t, order, order[np.isin(order, a_cols)][-1])
    return allocation.predicted(p[:, b_cols], b_cols, t, order, by_a), p


def test_cascade_policy_in_graph_equals_the_numpy_rule_and_learns_the_cascade():
    quality, X, X_a, opts, best = _cascade_case()
    feats = {"B": X, "A": X_a}
    pol = policy.fit(feats, NAMES, quality, opts, tau=0.05, threshold=0.7, gb=GB)
    assert [s.probe for s in pol.stages] == ["B", "A"] and pol.fallback == 4  # A/200 after probe: A's costliest
    choice = np.asarray(xla.jit(policy.choose)(pol, {k: v.astype(np.float32) for k, v in feats.items()}))
    expected, p = _reference(feats, quality, opts, 0.05, 0.7)
    clear = np.all(np.abs(p - 0.7) > 1e-5, axis=1)  # f32 sigmoid vs sklearn's f64 only matters at the threshold
    np.testing.assert_array_equal(choice[clear], expected[clear])
    assert np.mean(choice == best) > 0.95  # in sample, the cascade's ideal choice


def test_single_stage_policy_without_a_probe_options():
    quality, X, cheapest = _synthetic(n=300)
    pol = policy.fit({"B": X}, {"B": NAMES["B"]}, quality, _opts(), tau=0.05, threshold=0.6, gb=GB)
    assert len(pol.stages) == 1 and pol.stages[0].options == tuple(int(k) for k in _opts().cheapest_first)
    choice = np.asarray(policy.choose(pol, {"B": X.astype(np.float32)}))
    assert np.mean(choice == cheapest) > 0.95


def test_an_option_always_acceptable_becomes_a_constant_and_is_taken_first():
    quality, X, _ = _synthetic(n=200)
    quality[:, 3] = quality.max(1)  # B/0, the cheapest, always acceptable
    pol = policy.fit({"B": X}, {"B": NAMES["B"]}, quality, _opts(), tau=0.05, threshold=0.9, gb=GB)
    assert pol.stages[0].trees[0].depth == 0
    np.testing.assert_allclose(router.jax_predict_proba(pol.stages[0].trees[0], X[:5]), 1.0, atol=1e-6)
    assert np.all(np.asarray(policy.choose(pol, {"B": X})) == 3)


def test_save_and_load_give_the_same_choices(tmp_path):
    quality, X, X_a, opts, _ = _cascade_case(n=200)
    feats = {"B": X.astype(np.float32), "A": X_a.astype(np.float32)}
    pol = policy.fit(feats, NAMES, quality, opts, tau=0.05, threshold=0.7, gb=GB)
    policy.save(pol, tmp_path / "policy", policy_name="cascade")
    back, meta = policy.load(tmp_path / "policy")
    assert meta["policy_name"] == "cascade" and back.option_names == opts.names
    np.testing.assert_array_equal(policy.choose(back, feats), policy.choose(pol, feats))
    jax.tree.map(np.testing.assert_array_equal, back, pol)


def test_errors_say_what_is_missing(tmp_path):
    quality, X, X_a, opts, _ = _cascade_case(n=100)
    with pytest.raises(policy.PolicyError, match="'A'-probe features"):
        policy.fit({"B": X}, NAMES, quality, opts, tau=0.05, threshold=0.7, gb=GB)
    pol = policy.fit({"B": X, "A": X_a}, NAMES, quality, opts, tau=0.05, threshold=0.7, gb=GB)
    with pytest.raises(policy.PolicyError, match=r"\['A'\] probe features"):
        policy.choose(pol, {"B": X})
    with pytest.raises(policy.PolicyError, match="run the allocate stage"):
        policy.load(tmp_path / "nothing")
    policy.save(pol, tmp_path / "p")
    (tmp_path / "p" / policy.TREES_FILE).write_bytes(b"torn")
    with pytest.raises(policy.PolicyError, match="does not match"):
        policy.load(tmp_path / "p")


@pytest.mark.parametrize("mine, fixed, verdict", [((0.6, (0.55, 0.65)), (0.4, (0.35, 0.45)), "beats it"),
                                                  ((0.4, (0.35, 0.45)), (0.6, (0.55, 0.65)), "is worse"),
                                                  ((0.5, (0.4, 0.6)), (0.45, (0.35, 0.55)), "does not beat it")])
def test_report_sets_the_deployed_policy_beside_the_best_fixed_option_at_no_more_flops(mine, fixed, verdict):
    from hybrid_jax.study.stages import report_md as report

    pt = lambda name, param, q, flops: {"policy": name, "param": param, "quality": q[0], "quality_ci": list(q[1]),
                                        "flops_per_image": flops, "flops_savings": 0.5}
    result = {"deployed": {"policy": "cascade", "threshold": 0.8},
              "points": [pt("cascade", 0.8, mine, 5.0), pt("fixed: B/0", None, fixed, 4.0),
                         pt("fixed: A/200", None, (0.9, (0.85, 0.95)), 10.0)]}  # better but costlier: not the baseline
    (line,) = report._deployed_line(result)
    assert "B/0" in line and verdict in line and "A/200" not in line
