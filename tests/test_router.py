"""Router: sklearn training/evaluation helpers and the exact JAX export of its trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from hybrid_jax.config import RouterConfig
from hybrid_jax.routing import router as R

SMALL = RouterConfig(n_estimators=30, max_depth=2, cv_folds=3, n_splits=4, seed=0)
NAMES = ("signal", "noise_a", "noise_b", "noise_c")


def _signal_data(n: int = 180, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Column 0 carries the label (cheap_ok share ~1/3), the others are noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.int64)
    X = rng.normal(size=(n, len(NAMES)))
    X[:, 0] += 2.0 * y
    return X.astype(np.float32), y


def _random_data(seed: int, n: int = 250, f: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Features on very different scales and offsets, a noisy nonlinear label."""
    rng = np.random.default_rng(seed)
    scale, shift = 10.0 ** rng.uniform(-3, 4, f), rng.normal(size=f) * 10.0 ** rng.uniform(-1, 4, f)
    Z = rng.normal(size=(n, f))
    y = (Z[:, 0] * Z[:, 1] + Z[:, 2] + rng.normal(size=n) > 0.4).astype(np.int64)
    return (Z * scale + shift).astype(np.float32), y


def _probe_inputs(ens: R.TreeEnsemble, X: np.ndarray, seed: int) -> np.ndarray:
    """Random rows plus rows placing one feature exactly at / next to each split threshold."""
    rng = np.random.default_rng(seed)
    rand = (rng.normal(size=(500, X.shape[1])) * X.std(0) * 1.5 + X.mean(0)).astype(np.float32)
    thr, feat = np.asarray(ens.threshold), np.asarray(ens.feature)
    split = np.asarray(ens.left) != np.arange(thr.shape[1])
    t, f = thr[split], feat[split]
    edges = np.concatenate([t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf))])
    rows = X[rng.integers(len(X), size=len(edges))].copy()
    rows[np.arange(len(edges)), np.tile(f, 3)] = edges
    return np.concatenate([rand, rows]).astype(np.float32)


@pytest.mark.parametrize("seed, n_trees, depth", [(0, 50, 2), (1, 120, 3), (2, 200, 4)])
def test_jax_matches_sklearn(seed, n_trees, depth):
    X, y = _random_data(seed)
    cfg = RouterConfig(n_estimators=n_trees, max_depth=depth, seed=seed)
    router = R.fit(X, y, cfg)
    ens = R.export_trees(router)
    assert ens.feature.shape[0] == n_trees and ens.depth <= depth
    Xq = _probe_inputs(ens, X, seed)
    p_sk = router.model.predict_proba(R._zscore(Xq, router.mean, router.scale))[:, 1]
    np.testing.assert_allclose(R.predict_proba(router, Xq), p_sk, rtol=0, atol=0)
    p_jax = np.asarray(jax.jit(R.jax_predict_proba)(ens, Xq))
    np.testing.assert_allclose(p_jax, p_sk, rtol=0, atol=1e-6)
    # vmap over single rows and a leading batch shape give the same numbers
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda r: R.jax_predict_proba(ens, r))(Xq[:64])),
                               p_jax[:64], atol=1e-7)
    assert R.jax_predict_proba(ens, Xq[:12].reshape(3, 4, -1)).shape == (3, 4)
    clear = np.abs(p_sk - cfg.threshold) > 1e-5
    np.testing.assert_array_equal(np.asarray(jax.jit(R.jax_route)(ens, Xq))[clear], (p_sk < cfg.threshold)[clear])


def test_fit_is_deterministic():
    X, y = _random_data(3)
    cfg = RouterConfig(n_estimators=40, max_depth=3, seed=7)
    np.testing.assert_array_equal(R.predict_proba(R.fit(X, y, cfg), X), R.predict_proba(R.fit(X, y, cfg), X))


def test_save_load_in_fresh_process(tmp_path):
    X, y = _random_data(4)
    cfg = RouterConfig(n_estimators=80, max_depth=4, threshold=0.6)
    router = R.fit(X, y, cfg, feature_names=[f"feat{i}" for i in range(X.shape[1])])
    out = R.save_router(router, tmp_path / "router", cfg=cfg, candidate_features=["extra", *router.feature_names])
    Xq = _probe_inputs(R.export_trees(router), X, 4)
    np.save(tmp_path / "x.npy", Xq)
    code = textwrap.dedent(f"""
        import jax, numpy as np
        from hybrid_jax.routing.router import load_router, jax_predict_proba, jax_route
        ens, meta = load_router({str(out)!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        np.save({str(tmp_path / 'p.npy')!r}, np.asarray(jax.jit(jax_predict_proba)(ens, x)))
        np.save({str(tmp_path / 'r.npy')!r}, np.asarray(jax_route(ens, x)))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env, timeout=120)
    p_sk = R.predict_proba(router, Xq)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), p_sk, rtol=0, atol=1e-6)
    clear = np.abs(p_sk - 0.6) > 1e-5
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy")[clear], (p_sk < 0.6)[clear])
    meta = json.loads((out / R.META_FILE).read_text())
    assert meta["feature_names"] == list(router.feature_names) and meta["dropped_features"] == ["extra"]
    assert meta["threshold"] == pytest.approx(0.6) and meta["config"]["n_estimators"] == 80
    np.testing.assert_array_equal(meta["scaler"]["mean"], router.mean)
    assert "sklearn_version" in meta and not list(out.glob("*.pkl"))


def test_load_errors(tmp_path):
    with pytest.raises(R.RouterError, match="no saved router"):
        R.load_router(tmp_path / "missing")
    X, y = _signal_data()
    out = R.save_router(R.export_trees(R.fit(X, y, SMALL)), tmp_path / "r")
    ens, _ = R.load_router(out)
    assert ens.feature_names == tuple(f"f{i}" for i in range(4))
    with open(out / R.TREES_FILE, "ab") as f:
        f.write(b"x")
    with pytest.raises(R.RouterError, match="does not match"):
        R.load_router(out)


def test_metrics_match_sklearn_on_hand_example():
    y = np.array([1, 0, 1, 1, 0, 0, 0, 1])
    p = np.array([0.9, 0.6, 0.4, 0.55, 0.2, 0.54, 0.1, 0.7])
    m = R.metrics(y, p, 0.55)
    pred = (p >= 0.55).astype(int)  # [1,1,0,1,0,0,0,1]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred)) == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred)) == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred)) == pytest.approx(3 / 4)
    assert (m["share_to_A"], m["n"], m["n_to_B"], m["precision_defined"]) == (0.5, 8, 4, True)
    none = R.metrics(y, p, 0.95)
    assert none["precision"] == 0.0 and not none["precision_defined"] and none["share_to_A"] == 1.0
    assert none["precision"] == skm.precision_score(y, p >= 0.95, zero_division=0)


def test_threshold_sweep_and_prior():
    X, y = _signal_data()
    p = R.predict_proba(R.fit(X, y, SMALL), X)
    rows = R.threshold_sweep(y, p, (0.4, 0.55, 0.7))
    assert [r["threshold"] for r in rows] == [0.4, 0.55, 0.7]
    shares = [r["share_to_A"] for r in rows]
    assert shares == sorted(shares)
    base = R.class_prior_baseline(y)
    assert base["precision"] == pytest.approx(y.mean()) and base["n"] == len(y)


def test_cross_validate_on_signal_data():
    X, y = _signal_data()
    cv = R.cross_validate(X, y, SMALL, NAMES)
    assert len(cv["folds"]) == 3 and sum(f["n_test"] for f in cv["folds"]) == len(y)
    for key in ("test_mean", "test_std", "train_mean"):
        assert set(cv[key]) == {"accuracy", "precision", "recall"}
    assert cv["test_mean"]["accuracy"] > 0.7 and cv["test_mean"]["precision"] > R.class_prior_baseline(y)["precision"]
    assert cv["train_mean"]["accuracy"] >= cv["test_mean"]["accuracy"]
    assert all(0 <= v <= 0.5 for v in cv["test_std"].values())


def test_best_of_splits_picks_max_precision():
    X, y = _signal_data()
    best = R.best_of_splits(X, y, SMALL, NAMES)
    splits = best["splits"]
    assert len(splits) == SMALL.n_splits
    expect = min(range(len(splits)), key=lambda i: (-splits[i]["precision"], -splits[i]["recall"], i))
    assert best["index"] == expect and best["test"] == splits[expect]
    train, test = best["train_idx"], best["test_idx"]
    assert not set(train) & set(test) and len(train) + len(test) == len(y)
    assert len(test) == pytest.approx(SMALL.test_fraction * len(y), abs=1)
    assert R.metrics(y[test], R.predict_proba(best["router"], X[test]), SMALL.threshold) == best["test"]


def test_ablation_keeps_signal_feature():
    X, y = _signal_data()
    out = R.ablation(X, y, NAMES, SMALL)
    assert set(out["delta"]) == set(NAMES)
    assert "signal" in out["kept"] and out["delta"]["signal"] < 0
    assert sorted(out["kept"] + out["dropped"]) == sorted(NAMES)
    assert all(out["delta"][n] > 0 for n in out["dropped"])
    assert 0 <= out["precision_all"] <= 1 and 0 <= out["precision_kept"] <= 1


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_bad_threshold(bad):
    with pytest.raises(R.RouterError, match="threshold"):
        R.metrics([0, 1], [0.2, 0.8], bad)


def test_mismatched_features_and_bad_targets():
    X, y = _signal_data()
    router = R.fit(X, y, SMALL, NAMES)
    with pytest.raises(R.RouterError, match="expected 4 features per seed, got 3"):
        R.predict_proba(router, X[:, :3])
    with pytest.raises(R.RouterError, match="expected 4 features in the last axis"):
        R.jax_predict_proba(R.export_trees(router), X[:, :3])
    with pytest.raises(R.RouterError, match="expected 4 feature names"):
        R.fit(X, y, SMALL, NAMES[:3])
    with pytest.raises(R.RouterError, match="every seed is"):
        R.fit(X, np.zeros(len(y), int), SMALL)
    with pytest.raises(R.RouterError, match="0 .A_needed. or 1"):
        R.fit(X, y + 1, SMALL)
    with pytest.raises(R.RouterError, match="NaN"):
        R.fit(np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y, SMALL)
    with pytest.raises(R.RouterError, match="lower router.cv_folds"):
        R.cross_validate(X[:20], np.r_[np.ones(2, int), np.zeros(18, int)], SMALL)
