"""The early-exit policy (`hybrid_jax.routing.early_exit`): thresholds from the training folds only, compute that counts
the steps each seed ran, the entropy read off the short probe, and its figures beside its baselines."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_jax import config as config_lib
from hybrid_jax import stats
from hybrid_jax.probe import features
from hybrid_jax.routing import early_exit

UNITS = {"A": {"passes": 80, "flops": 8.0e9, "seconds": 0.4}, "B": {"passes": 46, "flops": 1.0e9, "seconds": 0.05},
         "B_finish": {"passes": 34, "flops": 0.8e9, "seconds": 0.04}, "probe": {"passes": 13, "flops": 0.2e9,
                                                                               "seconds": 0.012}}
AR_FLOPS = 1.5e7


def _synthetic(n: int = 300, seed: int = 0):
    """Entropy that is decisive in its tails (low: A_needed, high: cheap_ok) and noise in between."""
    rng = np.random.default_rng(seed)
    e = rng.uniform(0, 1, n)
    y = np.where(e < 0.15, 0, np.where(e > 0.85, 1, rng.integers(0, 2, n)))
    return e, y, np.arange(n) % 5


def test_the_rule_exits_only_where_the_training_folds_say_it_is_right_often_enough():
    e, y, _ = _synthetic()
    rule = early_exit.fit_rule(e, y, min_accuracy=0.9)
    exited, to_a = rule.decide(e)
    assert rule.sign == 1 and 0.1 < exited.mean() < 0.5  # both tails, not the noisy middle
    assert np.mean(to_a[exited] == (y[exited] == 0)) >= 0.9
    assert not early_exit.fit_rule(np.random.default_rng(1).uniform(size=300), y, min_accuracy=0.99).decide(e)[0].any()
    flipped = early_exit.fit_rule(-e, y, min_accuracy=0.9)  # high entropy now means A_needed
    assert flipped.sign == -1 and np.array_equal(flipped.decide(-e)[1][exited], to_a[exited])


def test_thresholds_come_from_the_training_folds_only():
    """Changing the held-out fold's entropy and labels changes none of that fold's thresholds (so the decisions
    on it move only through their own entropy), while the rules of the other folds may."""
    e, y, folds = _synthetic()
    router = np.random.default_rng(2).random(len(e)) < 0.5
    _, _, rules = early_exit.crossfit(e, y, folds, router, 0.9)
    e2, y2 = e.copy(), y.copy()
    held = folds == 0
    e2[held], y2[held] = np.random.default_rng(3).uniform(0.4, 0.6, held.sum()), 1 - y[held]
    _, _, rules2 = early_exit.crossfit(e2, y2, folds, router, 0.9)
    assert rules2[0] == rules[0]
    # and fitting on the training folds by hand gives that fold's rule
    direct = early_exit.fit_rule(e[~held], y[~held], 0.9)
    assert (rules[0]["lo"], rules[0]["hi"], rules[0]["sign"]) == (direct.lo, direct.hi, direct.sign)


def test_seeds_that_do_not_exit_keep_the_routers_decision():
    e, y, folds = _synthetic()
    router = np.random.default_rng(4).random(len(e)) < 0.3
    to_a, exited, _ = early_exit.crossfit(e, y, folds, router, 0.9)
    assert exited.any() and np.array_equal(to_a[~exited], router[~exited])
    to_a_none, exited_none, _ = early_exit.crossfit(np.zeros(len(e)), y, folds, router, 0.99)
    assert not exited_none.any() and np.array_equal(to_a_none, router)


def test_compute_counts_the_steps_each_seed_ran():
    added = early_exit.early_units(UNITS, 4, 12, AR_FLOPS, {"probe_early": 0.004, "B_finish_early": 0.046})
    units = {**UNITS, **added}
    assert added["probe_early"]["passes"] == 4 and added["probe_early"]["flops"] == 4 * AR_FLOPS
    # B finished from the short prefix runs the 8 AR steps the router's probe would have run, and the rest
    assert added["B_finish_early"]["passes"] == UNITS["B_finish"]["passes"] + 8
    to_a = np.array([True, False, True, False])
    exited = np.array([True, True, False, False])
    cost = early_exit.per_seed_cost(to_a, exited, units)
    assert cost[:, 0].tolist() == [4 + 80, 4 + 34 + 8, 13 + 80, 13 + 34]
    assert cost[1, 0] == UNITS["B"]["passes"]  # an exited B seed runs exactly B's own passes
    assert cost[1, 1] == pytest.approx(4 * AR_FLOPS + 0.8e9 + 8 * AR_FLOPS)


def test_evaluate_reports_every_baseline_with_intervals_and_gaps():
    e, y, folds = _synthetic()
    rng = np.random.default_rng(5)
    qa = rng.uniform(0.7, 0.9, len(e))
    qb = np.where(y == 1, rng.uniform(0.7, 0.9, len(e)), rng.uniform(0.0, 0.3, len(e)))
    p_cheap = rng.random(len(e))  # an uninformative router
    units = {**UNITS, **early_exit.early_units(UNITS, 4, 12, AR_FLOPS, {"probe_early": 0.004, "B_finish_early": 0.05})}
    out = early_exit.evaluate(e, y, folds, p_cheap, 0.5, qa, qb, e, units, min_accuracy=0.9,
                              boot=stats.BootstrapConfig(n_resamples=200))
    assert set(out["points"]) == {"early exit", "router (k = 12)", "entropy rule", "random (same share)"}
    for p in out["points"].values():
        lo, hi = p["quality_ci"]
        assert lo <= p["quality"] <= hi
    gap = out["points"]["random (same share)"]["gap"]
    assert gap["ci"][0] > 0  # the decisive tails beat random routing at the same share
    assert out["points"]["early exit"]["share_to_a"] == out["share_to_a"]
    assert 0.5 < out["entropy_auc"] <= 1.0 and out["exited_accuracy"] >= 0.85


def test_the_short_probes_entropy_is_the_first_steps_of_the_routers_probe():
    """A probe continued is the same probe: the entropy after k_early steps equals the one read off the first
    k_early steps of the router's 12-step prefix (same keys), so the early exit never reruns work."""
    import jax

    from hybrid_jax import generators
    from hybrid_jax.generators import model_b

    cfg = config_lib.get_preset("test")
    params = model_b.init_params(cfg.model_b, cfg.corrector, jax.random.key(0), geometry=cfg.geometry)
    sb = model_b.make_sampler(cfg.model_b, cfg.corrector, geometry=cfg.geometry)
    keys = generators.seed_stream(np.arange(3), 0, "model_b")
    short, entropy = early_exit.make_probe(sb, 4)(params, keys)
    long = sb.ar_prefix(params, keys, 12)
    np.testing.assert_allclose(np.asarray(entropy), np.asarray(early_exit.layer1_entropy(short)), rtol=1e-6)
    first = np.asarray(features.attention_entropy(long.attn[:4]))[:, 0].mean(axis=(0, 2))
    np.testing.assert_allclose(np.asarray(entropy), first, rtol=1e-5, atol=1e-6)
    assert np.all((np.asarray(entropy) >= 0) & (np.asarray(entropy) <= 1))


def test_early_exit_config_is_checked_naming_the_field():
    test = config_lib.get_preset("test")
    for key, value, words in (("early_exit.k_early", "1", "early_exit.k_early must be >= 2"),
                              ("early_exit.k_early", "12", "must be below router.prefix_steps"),
                              ("early_exit.min_accuracy", "0.3", "early_exit.min_accuracy must be in")):
        with pytest.raises(config_lib.ConfigError, match=words):
            config_lib.override(test, key, value)


def test_the_vectorised_auc_equals_sklearns_and_resamples_into_an_interval():
    """`stats.auc` (the entropy's AUC and its bootstrap interval) against sklearn, ties included, row by row."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (5, 40))
    s = np.round(rng.normal(size=(5, 40)) + y, 1)  # rounded: ties
    np.testing.assert_allclose(stats.auc(y, s), [roc_auc_score(a, b) for a, b in zip(y, s)], rtol=1e-12)
    assert np.isnan(stats.auc(np.ones(10), np.arange(10)))  # one class: undefined
    lo, hi = stats.bootstrap_ci((y[0], s[0]), stats.auc, rng, stats.BootstrapConfig(n_resamples=200))
    assert lo <= stats.auc(y[0], s[0]) <= hi
