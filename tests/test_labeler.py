"""The automated labeler: its statistics, the realism score, the A/B rule, Frechet distance, and its
validation on real images (held-out real must outrank degraded copies)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from hybrid_jax import config as config_lib
from hybrid_jax import data as data_lib
from hybrid_jax import labeler

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


def test_realism_is_above_one_inside_the_reference_cloud_and_falls_outside():
    ref = np.random.default_rng(0).normal(size=(200, 3))
    scorer = labeler.fit_scorer(ref, k=5)
    inside, outside = scorer(np.zeros((1, 3))), scorer(np.full((1, 3), 10.0))
    assert inside[0] > 1.0 > outside[0]


def test_label_rule_uses_the_margin_in_units_of_real_score_std():
    real = np.array([1.0, 3.0])  # std 1
    cfg = config_lib.LabelerConfig(margin=0.5)
    assert labeler.label_pairs(np.array([2.0, 2.0, 2.0]), np.array([2.1, 1.6, 1.4]), real, cfg) == [
        "cheap_ok", "cheap_ok", "A_needed"]


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 4)), rng.normal(1.0, 2.0, size=(400, 4))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert labeler.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert labeler.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.skipif(not DEV_DATA.exists(), reason="development CIFAR-10 copy not present")
def test_real_images_outrank_degraded_copies_on_real_data():
    images = data_lib.load_images("dog", path=str(DEV_DATA), use_tfds=False).images
    train, held_out = data_lib.holdout_split(images, 100)
    scorer = labeler.fit_scorer(labeler.embed_all(train), k=5)
    auc = labeler.validate(lambda x: scorer(labeler.embed_all(x)), held_out)
    print("labeler validation AUC:", auc)
    assert min(auc[k] for k in labeler.DEGRADATIONS) >= 0.9


def test_rank_rule_marks_the_largest_gaps_in_the_requested_share():
    gap_a = np.array([0.5, 3.0, -1.0, 2.0, 0.0, 1.0, 4.0, -2.0, 0.2, 0.1])
    labels = labeler.label_pairs(gap_a, np.zeros(10), np.ones(3), config_lib.LabelerConfig(a_needed_share=0.3))
    assert [i for i, l in enumerate(labels) if l == "A_needed"] == [1, 3, 6]
