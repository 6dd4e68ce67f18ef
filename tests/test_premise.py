"""The premise figures (`hybrid_jax.study.premise`) against direct computations on tiny arrays, and the verdict's rule."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hybrid_jax import stats
from hybrid_jax.study import premise


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 3)), rng.normal(0.5, 1.0, size=(40, 3))
    k = lambda x, y: (np.dot(x, y) / 3 + 1) ** 3
    direct = (sum(k(a[i], a[j]) for i in range(30) for j in range(30) if i != j) / (30 * 29)
              + sum(k(b[i], b[j]) for i in range(40) for j in range(40) if i != j) / (40 * 39)
              - 2 * np.mean([k(x, y) for x in a for y in b]))
    assert stats.kid(a, b) == pytest.approx(direct, rel=1e-9)
    same = [stats.kid(rng.normal(size=(200, 3)), rng.normal(size=(200, 3))) for _ in range(5)]
    assert abs(np.mean(same)) < 0.05 < stats.kid(a, b)


def test_distance_intervals_contain_the_estimate_and_separate_far_sets():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(100, 4))
    near, far = rng.normal(size=(100, 4)), rng.normal(2.0, 1.0, size=(100, 4))
    e_near, e_far = (premise.distance_estimates(x, real, np.random.default_rng(2), 100) for x in (near, far))
    for e in (e_near, e_far):
        assert e["fd_ci"][0] <= e["fd"] <= e["fd_ci"][1] and e["kid_ci"][0] <= e["kid"] <= e["kid_ci"][1]
    assert e_near["fd_ci"][1] < e_far["fd_ci"][0] and e_near["kid_ci"][1] < e_far["kid_ci"][0]


def test_the_interval_is_corrected_for_the_resamples_bias():
    """100 images in 32 dimensions: a resample's repeated images raise the FD so much that the plain percentile
    interval lies wholly above the estimate; the corrected one is that spread, shifted to the estimate."""
    from hybrid_jax.stats import frechet_distance

    rng = np.random.default_rng(5)
    feats, real = rng.normal(size=(100, 32)), rng.normal(0.3, 1.0, size=(300, 32))
    e = premise.distance_estimates(feats, real, np.random.default_rng(6), 100)
    draws = np.random.default_rng(6)
    plain = np.array([frechet_distance(feats[draws.integers(0, 100, 100)], real) for _ in range(100)])
    assert np.quantile(plain, 0.025) > e["fd"]  # the bias the correction removes
    assert e["fd_ci"][0] <= e["fd"] <= e["fd_ci"][1]
    width = np.quantile(plain, 0.975) - np.quantile(plain, 0.025)
    assert e["fd_ci"][1] - e["fd_ci"][0] == pytest.approx(width, rel=1e-9)


def test_nearest_is_the_brute_force_nearest_neighbour():
    rng = np.random.default_rng(3)
    x, train = rng.normal(size=(7, 2, 2, 3)), rng.normal(size=(50, 2, 2, 3))
    dist, idx = premise.nearest(x, train, chunk=3)
    brute = np.linalg.norm(x.reshape(7, 1, -1) - train.reshape(1, 50, -1), axis=-1)
    np.testing.assert_array_equal(idx, brute.argmin(1))
    np.testing.assert_allclose(dist, brute.min(1), rtol=1e-9, atol=1e-9)


def test_an_exact_copy_is_detected_and_a_held_out_image_is_not():
    rng = np.random.default_rng(4)
    train, real, fresh = (rng.normal(size=(n, 4, 4, 3)) for n in (200, 200, 100))
    real_dist, _ = premise.nearest(real, train)
    copies = train[:100].copy()
    copies[:50] = fresh[:50]  # half copies, half new images
    d_copy, idx = premise.nearest(copies, train)
    assert np.all(d_copy[50:] < 1e-6) and np.all(idx[50:] == np.arange(50, 100))  # the expansion rounds
    got = premise.copy_share(d_copy, real_dist, np.random.default_rng(0))
    assert got["share"] >= 0.5 and got["copies"]
    held = premise.copy_share(premise.nearest(fresh, train)[0], real_dist, np.random.default_rng(0))
    assert held["share"] < 0.05 and not held["copies"]


def test_pca_space_is_fitted_on_training_pixels_only():
    rng = np.random.default_rng(5)
    train, real = rng.normal(size=(60, 2, 2, 3)), rng.normal(size=(20, 2, 2, 3))
    space, project = premise.pca_space(train, real, dims=4)
    assert space.train.shape == (60, 4) and space.real.shape == (20, 4)
    np.testing.assert_allclose(space.train.mean(0), 0, atol=1e-9)  # centred on the training mean
    np.testing.assert_allclose(project(real), space.real)


def _figures(fd, fd_ci, quality, copies=False):
    mem = {"share": 0.0, "share_ci": [0.0, 0.0], "real_rate": 0.01, "copies": copies}
    return {"median_quality": quality, "spaces": {s: {"fd": fd, "fd_ci": fd_ci} for s in ("labeler", "pixel PCA")},
            "memorisation": {"pixels": mem, "labeler": dict(mem)}}


def test_quality_figures_are_the_direct_median_fd_and_kid_with_intervals_around_them():
    from hybrid_jax.stats import frechet_distance

    rng = np.random.default_rng(3)
    train, real, feats = rng.normal(size=(50, 3)), rng.normal(size=(60, 3)), rng.normal(0.3, 1.0, size=(40, 3))
    quality = rng.uniform(size=40)
    out = premise.quality_figures(quality, {"s": feats}, [premise.Space("s", train, real)], np.random.default_rng(4),
                                  100)
    assert out["n"] == 40 and out["median_quality"] == np.median(quality)
    assert out["median_quality_ci"][0] <= np.median(quality) <= out["median_quality_ci"][1]
    e = out["spaces"]["s"]
    assert e["fd"] == pytest.approx(frechet_distance(feats, real))
    assert e["kid"] == pytest.approx(stats.kid(feats, real))
    assert e["fd_ci"][0] < e["fd_ci"][1] and e["kid_ci"][0] < e["kid_ci"][1]


def test_verdict_follows_the_stated_rule():
    a, b = _figures(10.0, [9.0, 11.0], 0.6), _figures(20.0, [18.0, 22.0], 0.3)
    assert premise.verdict(a, b, 0.5) == {"verdict": "holds", "failed": []}
    overlapping = copy.deepcopy(b)
    overlapping["spaces"]["pixel PCA"]["fd_ci"] = [10.5, 30.0]  # one space only: the verdict needs both
    checks = {"FD in pixel PCA": (a, overlapping, 0.5), "median quality": (a, _figures(20.0, [18.0, 22.0], 0.7), 0.5),
              "A_needed share": (a, b, 0.1), "A copies": (_figures(10.0, [9.0, 11.0], 0.6, copies=True), b, 0.5)}
    for words, (ra, rb, share) in checks.items():
        out = premise.verdict(ra, rb, share)
        assert out["verdict"] == "fails" and any(f.startswith(words) for f in out["failed"]), (words, out)
