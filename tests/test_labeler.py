"""`hybrid_jax.labeler`: the A/B rule and its calibration, the Frechet distance, and the previous score
(bounded k-NN realism on eleven statistics, now the validation baseline of the labels stage) with its
original checks on real images. The score the labels stage uses is tested in tests/test_quality.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from sklearn.metrics import roc_auc_score

from hybrid_jax import config as config_lib
from hybrid_jax import data as data_lib
from hybrid_jax import labeler
from hybrid_jax.quality import rule

DEV_DATA = Path(os.environ.get("HYBRID_JAX_DEV_DATA",
                               Path(__file__).resolve().parents[2] / "shared/data/cifar-10-batches-py"))


def test_constant_image_has_zero_gradients_and_std():
    stats = np.asarray(labeler.image_statistics(np.full((2, 32, 32, 3), 0.3, np.float32)))
    names = list(labeler.STATISTICS)
    for n in ("grad_x_1", "grad_y_4", "laplacian", "pixel_std", "fine_to_coarse", "laplacian_to_gradient"):
        assert stats[:, names.index(n)] == pytest.approx(0.0, abs=1e-7)


def test_sharpness_ratios_match_their_formulas_and_fall_under_blur():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    names = list(labeler.STATISTICS)
    stats = np.asarray(labeler.image_statistics(images), np.float64)
    g = images.mean(-1).astype(np.float64)
    def grad(s):  # mean |gradient| at a distance of s pixels, x + y
        return np.abs(g[:, :, s:] - g[:, :, :-s]).mean((1, 2)) + np.abs(g[:, s:] - g[:, :-s]).mean((1, 2))

    lap = np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]).mean((1, 2))
    eps = 1e-3
    np.testing.assert_allclose(stats[:, names.index("fine_to_coarse")], np.log((grad(1) + eps) / (grad(2) + eps)), atol=1e-5)
    np.testing.assert_allclose(stats[:, names.index("laplacian_to_gradient")], np.log((lap + eps) / (grad(1) + eps)),
                               atol=1e-5)
    blurred = np.asarray(labeler.image_statistics(labeler.blur(images)))
    for n in ("fine_to_coarse", "laplacian_to_gradient"):  # blur removes fine detail first
        assert (blurred[:, names.index(n)] < stats[:, names.index(n)]).all()


def test_seam_statistic_sees_patch_borders():
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 0.02, (8, 32, 32, 3)), axis=2).astype(np.float32)
    shuffled = labeler.shuffle_patches(smooth)
    i = labeler.STATISTICS.index("patch_seams")
    assert (np.asarray(labeler.image_statistics(shuffled))[:, i] > np.asarray(labeler.image_statistics(smooth))[:, i]).all()


def test_realism_is_above_half_inside_the_reference_cloud_and_falls_outside():
    ref = np.random.default_rng(0).normal(size=(200, 3))
    scorer = labeler.fit_scorer(ref, k=5)
    inside, outside = scorer(np.zeros((1, 3))), scorer(np.full((1, 3), 10.0))
    assert 1.0 >= inside[0] > 0.5 > outside[0] > 0.0


def _unbounded_realism(scorer, feats):
    """Kynkaanniemi et al.'s R = max_i r_i / d_i as the labeler computed it before (d clamped at 1e-8)."""
    q = (feats - scorer.mean) / scorer.scale
    d = np.sqrt(((q[:, None, :] - scorer.ref[None]) ** 2).sum(-1))
    return (scorer.radii[None] / np.maximum(d, 1e-8)).max(1)


def test_bounded_realism_is_R_over_1_plus_R_and_stays_in_0_1_for_exact_duplicates():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 5))
    scorer = labeler.fit_scorer(ref, k=5)
    queries = np.r_[rng.normal(size=(200, 5)) * 1.5, ref[:50], ref[:5] + 1e-7]  # incl. exact duplicates
    s = scorer(queries)
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    assert (s[200:] > 0.99).all()  # (near-)duplicates of reference images: close to 1, never above
    R = _unbounded_realism(scorer, queries[:200])
    np.testing.assert_allclose(s[:200], R / (1 + R), rtol=1e-4)
    assert (R > 1).any() and (R < 1).any()  # the boundary of the manifold is 0.5 on the new scale
    np.testing.assert_array_equal(s[:200] > 0.5, R > 1)


def test_bounded_realism_handles_zero_radius_references():
    ref = np.r_[np.zeros((4, 2)), np.random.default_rng(1).normal(size=(20, 2)) + 5]  # 4 copies: r = 0 for k=3
    scorer = labeler.fit_scorer(ref, k=3)
    assert (scorer.radii[:4] == 0).all()
    s = scorer(np.r_[np.zeros((1, 2)), np.full((1, 2), 0.5)])
    assert np.isfinite(s).all() and s[0] == 1.0 and 0.0 <= s[1] < 1.0


def test_bounded_realism_ranks_like_the_unbounded_score():
    """R / (1 + R) is monotone in R: same order, same AUCs."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(300, 4))
    scorer = labeler.fit_scorer(ref, k=5)
    real, fake = rng.normal(size=(150, 4)), rng.normal(0.7, 1.3, size=(150, 4))
    queries = np.r_[real, fake]
    s, R = scorer(queries), _unbounded_realism(scorer, queries)
    assert (np.diff(s[np.argsort(R)]) >= 0).all()
    y = np.r_[np.ones(150), np.zeros(150)]
    assert roc_auc_score(y, s) == roc_auc_score(y, R)


def test_tau_is_the_quantile_of_real_vs_real_gaps():
    real = np.random.default_rng(3).beta(5, 4, size=40)
    gaps = [abs(real[i] - real[j]) for i in range(len(real)) for j in range(i + 1, len(real))]
    for q in (0.5, 0.9, 0.95):
        tau, text = labeler.label_rule(config_lib.LabelerConfig(margin_quantile=q), real)
        assert tau == pytest.approx(np.quantile(gaps, q), rel=1e-12)
        assert "absolute rule" in text and f"{tau:.4f}" in text and "780 pairs" in text
    assert labeler.calibrate_tau(real, 1.0) == pytest.approx(max(gaps))
    with pytest.raises(ValueError, match="at least 2"):
        labeler.calibrate_tau(real[:1], 0.9)


def test_label_rule_marks_a_needed_only_above_tau():
    real = np.array([0.5, 0.6, 0.8])  # gaps 0.1, 0.2, 0.3 -> median 0.2
    cfg = config_lib.LabelerConfig(margin_quantile=0.5)
    assert labeler.label_rule(cfg, real)[0] == pytest.approx(0.2)
    assert labeler.label_pairs(np.array([0.7, 0.7, 0.7, 0.5]), np.array([0.6, 0.49, 0.8, 0.9]), real, cfg) == [
        "cheap_ok", "A_needed", "cheap_ok", "cheap_ok"]


def test_two_real_images_are_about_the_same_for_a_share_q_of_pairs():
    """Calibration: over all pairs of distinct real images, |gap| > tau for a share 1 - q (up to one pair);
    the rule is one-sided, so over both orders (A, B) and (B, A) only half of those are A_needed, and a
    random pairing of real scores as A and B gives A_needed with expectation #{|gap| > tau} / n^2
    (about (1 - q) / 2), not 1 - q."""
    rng = np.random.default_rng(4)
    real = rng.beta(5, 4, size=100)
    n = len(real)
    for q in (0.8, 0.9):
        cfg = config_lib.LabelerConfig(margin_quantile=q)
        i, j = np.divmod(np.arange(n * n), n)  # every ordered pair (A = image i, B = image j)
        need = (np.array(labeler.label_pairs(real[i], real[j], real, cfg)) == "A_needed").reshape(n, n)
        assert not np.diag(need).any() and not (need & need.T).any()  # never both orders of one pair
        n_pairs = n * (n - 1) // 2
        wide = need.sum()  # each pair with |gap| > tau is A_needed in exactly one order
        assert abs(wide / n_pairs - (1 - q)) <= 1 / n_pairs + 1e-12
        assert np.mean(need[~np.eye(n, dtype=bool)]) == pytest.approx((1 - q) / 2, abs=1 / n_pairs)
        shares = [np.mean(np.array(labeler.label_pairs(real, real[rng.permutation(n)], real, cfg)) == "A_needed")
                  for _ in range(400)]
        expected = wide / n ** 2
        assert expected == pytest.approx((1 - q) / 2, abs=0.01)
        assert np.mean(shares) == pytest.approx(expected, abs=4 * np.std(shares) / np.sqrt(len(shares)) + 1e-3)


def test_labeler_config_checks_the_quantile_and_has_no_margin():
    with pytest.raises(config_lib.ConfigError, match="margin_quantile"):
        config_lib.LabelerConfig(margin_quantile=1.5)
    with pytest.raises(config_lib.ConfigError, match="no field 'margin'"):
        config_lib.override(config_lib.get_preset("paper"), "labeler.margin", "0.5")
    assert config_lib.get_preset("paper").labeler.a_needed_share == 0.0
    assert config_lib.get_preset("quick").labeler.a_needed_share == 0.672  # weak models: rank rule, flagged


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 4)), rng.normal(1.0, 2.0, size=(400, 4))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert labeler.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert labeler.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def dev_scores():
    """(scorer, train, held_out) on the development CIFAR-10 dogs (100 held out)."""
    if not DEV_DATA.exists():
        pytest.skip("development CIFAR-10 copy not present")
    images = data_lib.load_images("dog", path=str(DEV_DATA), use_tfds=False).images
    train, held_out = data_lib.holdout_split(images, 100)
    return labeler.fit_scorer(labeler.embed_all(train), k=5), train, held_out


def test_real_images_outrank_degraded_copies_on_real_data(dev_scores):
    scorer, train, held_out = dev_scores
    auc = labeler.validate(lambda x: scorer(labeler.embed_all(x)), held_out)
    print("labeler validation AUC:", auc)
    assert min(auc[k] for k in labeler.DEGRADATIONS) >= 0.9
    old = labeler.validate(lambda x: _unbounded_realism(scorer, labeler.embed_all(x)), held_out)
    assert old == pytest.approx(auc, abs=1e-12)  # the bounded score ranks exactly like the unbounded one


def test_reference_duplicates_on_real_data_score_at_most_one(dev_scores):
    scorer, train, held_out = dev_scores
    s = scorer(labeler.embed_all(train))
    assert np.isfinite(s).all() and (s <= 1.0).all() and (s > 0.99).all()
    assert (_unbounded_realism(scorer, labeler.embed_all(train[:20])) > 100).all()  # what used to blow up
    real = scorer(labeler.embed_all(held_out))
    assert 0.0 < real.min() and real.max() < 1.0


@pytest.mark.parametrize("name, degrade, at_least", [
    ("strong blur", lambda x: labeler.blur(labeler.blur(x)), 0.9),
    ("strong noise", lambda x: labeler.add_noise(x, sigma=0.3), 0.9),
    ("shuffled patches", labeler.shuffle_patches, 0.85),
])
def test_clearly_degraded_b_is_a_needed_for_most_seeds(dev_scores, name, degrade, at_least):
    scorer, _, held_out = dev_scores
    real = scorer(labeler.embed_all(held_out))
    degraded = scorer(labeler.embed_all(np.asarray(degrade(held_out), np.float32)))
    labels = labeler.label_pairs(real, degraded, real, config_lib.LabelerConfig())
    assert np.mean(np.array(labels) == "A_needed") >= at_least
    flipped = labeler.label_pairs(degraded, real, real, config_lib.LabelerConfig())  # B better than A
    assert np.mean(np.array(flipped) == "A_needed") == 0.0


def test_rank_rule_marks_the_largest_gaps_in_the_requested_share():
    gap_a = np.array([0.5, 3.0, -1.0, 2.0, 0.0, 1.0, 4.0, -2.0, 0.2, 0.1])
    labels = labeler.label_pairs(gap_a, np.zeros(10), np.ones(3), config_lib.LabelerConfig(a_needed_share=0.3))
    assert [i for i, l in enumerate(labels) if l == "A_needed"] == [1, 3, 6]
    tau, text = labeler.label_rule(config_lib.LabelerConfig(a_needed_share=0.3), np.ones(3))
    assert tau is None and "rank rule" in text and "30.0%" in text


def test_the_rule_within_each_class_uses_that_class_s_real_images():
    """Class 1's real images spread 10x wider, so its tau is 10x class 0's: the same gap is A_needed in
    class 0 and about the same in class 1; one class is exactly `label_pairs`."""
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(0.5, 0.01, 30), rng.normal(0.5, 0.1, 30)])
    real_classes = np.repeat([0, 1], 30)
    cfg = config_lib.LabelerConfig()
    taus = rule.class_taus(real, real_classes, 2, cfg.margin_quantile)
    assert taus[0] == pytest.approx(labeler.calibrate_tau(real[:30], cfg.margin_quantile))
    assert 5 < taus[1] / taus[0] < 20
    gap = 3 * taus[0]
    seed_classes = np.array([0, 1, 0, 1])
    score_a, score_b = np.full(4, 0.6), np.array([0.6 - gap, 0.6 - gap, 0.6, 0.6])
    assert rule.label_by_class(score_a, score_b, real, cfg, seed_classes, real_classes) == [
        "A_needed", "cheap_ok", "cheap_ok", "cheap_ok"]
    one = np.zeros(4, int)
    assert rule.label_by_class(score_a, score_b, real, cfg, one, np.zeros(60, int)) == labeler.label_pairs(
        score_a, score_b, real, cfg)
    ranked = rule.label_by_class(np.arange(4.0), np.zeros(4), real, config_lib.LabelerConfig(
        a_needed_share=0.5), seed_classes, real_classes)
    assert ranked == ["cheap_ok", "cheap_ok", "A_needed", "A_needed"]  # the rank rule's share in each class
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have fewer: raise data.holdout"):
        rule.class_taus(real[:31], real_classes[:31], 2, 0.9)
