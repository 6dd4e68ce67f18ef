"""The probe's ceiling (`hybrid_jax.routing.ceiling`): the intraclass correlation against scipy's one-way ANOVA, the
oracles' AUCs on cases whose answer is known, and fresh finishes of B's prefix that keep the prefix."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.stats

from hybrid_jax import stats
from hybrid_jax.config import RouterConfig
from hybrid_jax.routing import ceiling

BOOT = stats.BootstrapConfig(n_resamples=200)


def _scores(n=400, draws=5, between=1.0, within=1.0, seed=0):
    """[draws, n] scores: a per-seed level of sd `between` plus per-draw noise of sd `within`."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, between, n) + rng.normal(0, within, (draws, n))


def test_icc_is_scipys_one_way_anova_f_turned_into_a_share():
    s = _scores(n=30, draws=4)
    f = scipy.stats.f_oneway(*s.T).statistic  # groups = seeds, members = draws
    assert ceiling.icc(s) == pytest.approx((f - 1) / (f + s.shape[0] - 1), rel=1e-10)


def test_icc_recovers_the_share_of_variance_between_seeds():
    assert ceiling.icc(_scores(n=4000, between=1.0, within=1.0)) == pytest.approx(0.5, abs=0.03)
    assert ceiling.icc(_scores(n=4000, between=2.0, within=1.0)) == pytest.approx(0.8, abs=0.03)
    assert abs(ceiling.icc(_scores(n=4000, between=0.0, within=1.0))) < 0.03
    assert ceiling.icc(np.tile(np.arange(10.0), (3, 1))) == 1.0  # every draw the same: the prefix fixes everything
    with pytest.raises(ValueError, match="at least 2 draws"):
        ceiling.icc(np.zeros((1, 5)))


def test_icc_is_vectorised_over_bootstrap_resamples():
    """The [draws, resamples, n] call `stats.bootstrap_ci` makes equals one call per resample."""
    s = _scores(n=20, draws=3)
    idx = np.random.default_rng(1).integers(0, 20, (7, 20))
    batched = ceiling.icc(s[:, idx], axis=-1)
    assert batched.shape == (7,)
    np.testing.assert_allclose(batched, [ceiling.icc(s[:, i]) for i in idx], rtol=1e-12)


def test_the_oracles_read_what_the_label_depends_on():
    n = 400
    s = _scores(n=n, draws=5, between=1.0, within=0.3)
    y = (s[0] > np.median(s[0])).astype(int)  # the label is the seed's own image's quality
    p_cheap = np.random.default_rng(2).random(n)  # a router with no skill
    c = ceiling.summarize(s, y, p_cheap, boot=BOOT)
    assert c["n"] == n and c["draws"] == 4
    assert c["image_oracle"]["auc"] == 1.0
    assert 0.85 < c["prefix_oracle"]["auc"] < 1.0  # the other draws share the seed's level, not its noise
    assert c["router"]["ci"][0] < 0.5 < c["router"]["ci"][1]
    assert c["router"]["auc"] == pytest.approx(stats.auc(y, p_cheap))
    lo, hi = c["icc"]["ci"]
    assert lo < c["icc"]["value"] < hi and 0.8 < c["icc"]["value"] < 1.0
    # finishes independent of the seed and of each other: the prefix says nothing
    fresh = np.vstack([s[0], np.random.default_rng(3).normal(0, s[0].std(), (4, n))])
    none = ceiling.summarize(fresh, y, p_cheap, boot=BOOT)
    assert none["prefix_oracle"]["ci"][0] < 0.5 < none["prefix_oracle"]["ci"][1]
    assert none["icc"]["value"] < 0.1


def test_summarize_names_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\[1 \+ draws, n\]"):
        ceiling.summarize(np.zeros((1, 5)), np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="len\\(y\\)"):
        ceiling.summarize(np.zeros((3, 5)), np.zeros(4), np.zeros(5))


def test_fresh_finishes_keep_the_prefix_and_redraw_the_rest(preset, model_b_params):
    """With the corrector off (depth 0) an image is its AR patches: the first k rows of patches equal the seed's
    own image in every finish, the rest differ; the finishes are deterministic and independent of the batch."""
    from hybrid_jax.generators import model_b

    sampler = model_b.make_sampler(preset.model_b, preset.corrector, 0, geometry=preset.geometry)
    keys = jax.random.split(jax.random.key(5), 3)
    k = preset.geometry.num_patches // 2
    prefix = sampler.ar_prefix(model_b_params, keys, k)
    own = np.asarray(sampler.finish(model_b_params, prefix))
    draws = [np.asarray(x) for x in ceiling.continue_prefix(sampler.finish, model_b_params, prefix, 2)]
    rows = preset.geometry.image_size * k // preset.geometry.num_patches  # raster patches: k patches = these rows
    for x in draws:
        np.testing.assert_array_equal(x[:, :rows], own[:, :rows])
        assert np.abs(x[:, rows:] - own[:, rows:]).max() > 1e-3
    assert np.abs(draws[0] - draws[1]).max() > 1e-3
    again = ceiling.continue_prefix(sampler.finish, model_b_params, prefix, 2)
    np.testing.assert_array_equal(np.asarray(again[1]), draws[1])
    alone = ceiling.continue_prefix(sampler.finish, model_b_params, sampler.ar_prefix(model_b_params, keys[1:2], k), 2)
    np.testing.assert_allclose(np.asarray(alone[1])[0], draws[1][1], atol=1e-5)


def test_a_negative_number_of_finishes_is_a_config_error_naming_the_field():
    from hybrid_jax import config as config_lib

    with pytest.raises(config_lib.ConfigError, match="router.continuations must be >= 0"):
        config_lib.override(config_lib.get_preset("test"), "router.continuations", "-1")
    assert config_lib.override(config_lib.get_preset("test"), "router.continuations", "0").router.continuations == 0
    with pytest.raises(config_lib.ConfigError, match="router.denoise needs router.continuations >= 1"):
        config_lib.apply_overrides(config_lib.get_preset("test"), ["router.continuations=0", "router.denoise=true"])


def _prefix_study(n=240, draws=8, seed=0):
    """Features of which the first fixes a seed's level of quality, finishes scattered widely around it, and a label
    read off the seed's own image: the label is mostly noise after the probe, the level is what a probe can learn."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    scores = X[:, 0] + rng.normal(0, 2.0, (draws + 1, n))
    y = (scores[0] > np.median(scores[0])).astype(int)
    return X, scores, y, np.arange(n) % 4


def test_learned_scores_are_the_router_learners_fits_on_the_other_folds():
    """Each target's out-of-fold scores equal sklearn fitted by hand on the other folds, and a fold's scores do not
    move when its own targets change."""
    from sklearn.ensemble import GradientBoostingRegressor

    X, scores, y, folds = _prefix_study()
    cfg = RouterConfig(n_estimators=30, max_depth=2)
    out = ceiling.learned_scores(X, scores, y, folds, cfg)
    assert tuple(out) == ceiling.LEARNED_TARGETS
    test = folds == 1
    by_hand = GradientBoostingRegressor(n_estimators=30, max_depth=2, learning_rate=cfg.learning_rate, random_state=0)
    by_hand.fit(X[~test], scores.mean(0)[~test])
    np.testing.assert_array_equal(out[ceiling.LEARNED_TARGETS[2]][test], by_hand.predict(X[test]))
    scores2, y2 = scores.copy(), y.copy()
    scores2[:, test], y2[test] = -scores[:, test], 1 - y[test]
    again = ceiling.learned_scores(X, scores2, y2, folds, cfg)
    for name in ceiling.LEARNED_TARGETS:
        np.testing.assert_array_equal(again[name][test], out[name][test])


def test_a_target_with_the_noise_after_the_probe_averaged_out_ranks_the_label_better():
    X, scores, y, folds = _prefix_study()
    out = ceiling.learned_scores(X, scores, y, folds, RouterConfig(n_estimators=50, max_depth=2))
    c = ceiling.summarize(scores, y, out[ceiling.LEARNED_TARGETS[0]], learned=out, boot=BOOT)
    auc = {name: v["auc"] for name, v in c["learned"].items()}
    assert auc[ceiling.LEARNED_TARGETS[2]] > auc[ceiling.LEARNED_TARGETS[0]] + 0.03  # measured: 0.667 against 0.555
    gain = c["learned"][ceiling.LEARNED_TARGETS[2]]
    assert gain["minus_label"] == pytest.approx(auc[ceiling.LEARNED_TARGETS[2]] - auc[ceiling.LEARNED_TARGETS[0]])
    assert 0 < gain["minus_label_ci"][0] < gain["minus_label"] < gain["minus_label_ci"][1]  # paired: the gain is real
    assert c["learned"][ceiling.LEARNED_TARGETS[0]]["minus_label"] == 0
