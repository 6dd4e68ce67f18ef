"""Cross-fitted router study: the whole recipe nested in every fold, parallel, cached and resumable."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from hybrid_jax import trees
from hybrid_jax.config import ConfigError, RouterConfig
from hybrid_jax.routing import crossfit as C
from hybrid_jax.routing import router as R

# Few, shallow trees with a large learning rate: real routing in milliseconds per fit.
CFG = RouterConfig(n_estimators=30, max_depth=2, learning_rate=0.2, threshold=0.55, cv_folds=3, n_splits=3,
                   ablation_folds=2, ablation_estimators=10, sweep=(0.4, 0.55, 0.7), seed=0)
NAMES = ("signal", "noise_a", "noise_b", "noise_c", "noise_d")
REPO = Path(__file__).resolve().parents[1]


def _data(n: int = 120, seed: int = 0, shift: float = 4.0, share: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Column 0 is shifted by `shift` sd for cheap_ok seeds (share `share`), the others are noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < share).astype(np.int64)
    X = rng.normal(size=(n, len(NAMES)))
    X[:, 0] += shift * y
    return X.astype(np.float32), y


def _without_fits(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "fits"}


def _arrays(ens: R.TreeEnsemble) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(ens, k)) for k in trees.ARRAYS}


def _assert_same_router(a: R.TreeEnsemble, b: R.TreeEnsemble) -> None:
    assert a.feature_names == b.feature_names and a.depth == b.depth
    for k, v in _arrays(a).items():
        np.testing.assert_array_equal(v, np.asarray(getattr(b, k)), err_msg=k)


@pytest.fixture(scope="module")
def signal_study():
    X, y = _data(shift=8.0)  # the label, plus noise far below the class gap
    res, ens = C.run_study(X, y, NAMES, CFG, cache_dir=None, n_jobs=1)
    return X, y, res, ens


def test_recipe_is_an_sklearn_classifier():
    est = C.recipe_from_config(CFG, NAMES, cache_dir="somewhere")
    assert is_classifier(est)
    assert {f: getattr(est, f) for f in C.RECIPE_FIELDS} == {f: getattr(CFG, f) for f in C.RECIPE_FIELDS}
    twin = clone(est)
    assert twin.get_params() == est.get_params() and twin.config() == est.config()
    X, y = _data()
    est.set_params(cache_dir=None).fit(X, y)
    proba = est.predict_proba(X)
    assert proba.shape == (len(y), 2) and np.allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(est.predict(X), (proba[:, 1] >= CFG.threshold).astype(int))
    assert list(est.classes_) == [0, 1] and "signal" in est.kept_ and est.router_.feature_names == tuple(est.kept_)
    assert est.score(X, y) > 0.8
    with pytest.raises(R.RouterError, match="ablation_folds"):
        C.RouterRecipe(ablation_folds=1).fit(X, y)
    with pytest.raises(R.RouterError, match="expected 5 features"):
        est.predict_proba(X[:, :4])


def test_recipe_ablation_is_router_ablation():
    """One piece of code decides: the recipe's ablation equals router.ablation on the same rows."""
    X, y = _data(seed=3)
    est = C.recipe_from_config(CFG, NAMES).fit(X, y)
    assert est.ablation_ == R.ablation(X, y, NAMES, CFG)
    assert est.kept_ == est.ablation_["kept"] and est.ablation_["n_estimators"] == CFG.screen_estimators
    off = C.recipe_from_config(dataclasses.replace(CFG, ablation=False), NAMES).fit(X, y)
    assert off.ablation_ is None and off.kept_ == list(NAMES) and off.fits_["total"] == 0


def test_study_matches_cross_val_predict(signal_study):
    """sklearn nests the recipe itself: same out-of-fold probabilities, bit for bit, and same kept features."""
    X, y, res, _ = signal_study
    cv = StratifiedKFold(CFG.cv_folds, shuffle=True, random_state=CFG.seed)
    p = cross_val_predict(C.recipe_from_config(CFG, NAMES), X, y, cv=cv, method="predict_proba")[:, 1]
    np.testing.assert_array_equal(np.asarray(res["oof"]["p_cheap"]), p)
    for fold, (train, test) in zip(res["folds"], cv.split(X, y)):
        assert fold["test_idx"] == test.tolist()
        assert fold["kept"] == C.recipe_from_config(CFG, NAMES).fit(X[train], y[train]).kept_


def test_no_held_out_seed_reaches_its_recipe(monkeypatch):
    """Every fit task is recorded: a fold's recipe (screens, kept screen, final) only touches its training rows."""
    X, y = _data(seed=1)
    tasks, run = [], C._Fits.run

    def recording_run(self, batch, what):
        tasks.extend(batch)
        return run(self, batch, what)

    monkeypatch.setattr(C._Fits, "run", recording_run)
    res, _ = C.run_study(X, y, NAMES, CFG, cache_dir=None, n_jobs=1)
    n, k, F = len(y), CFG.ablation_folds, len(NAMES)
    tests = [set(f["test_idx"]) for f in res["folds"]]
    assert sorted(i for t in tests for i in t) == list(range(n))
    assert all(res["oof"]["fold"][i] == f for f, t in enumerate(tests) for i in t)
    rows = lambda a: set(a.tolist())
    screens = [t for t in tasks if t.cfg.n_estimators == CFG.screen_estimators]
    finals = [t for t in tasks if t.cfg.n_estimators == CFG.n_estimators]
    assert all(not rows(t.train) & rows(t.evaluate) for t in screens), "screens predict out of fold"
    for f, fold in enumerate(res["folds"]):
        train = set(fold["train_idx"])
        assert train == set(range(n)) - tests[f]
        # no other recipe's training rows fit inside a fold's (splits train on 80 %, the deployed on all)
        mine = [t for t in screens if rows(t.train) | rows(t.evaluate) <= train]
        dropped = len(fold["kept"]) < F
        assert len(mine) == (F + 1 + dropped) * k, "every screen of this fold's ablation, and only those"
        by_set = {}
        for t in mine:
            by_set.setdefault(t.cols, []).append(rows(t.evaluate))
        assert all(set().union(*ev) == train for ev in by_set.values()), "each set pools over the training rows"
        final = [t for t in finals if rows(t.train) == train]
        assert len(final) == 1 and [NAMES[j] for j in final[0].cols] == fold["kept"]
    assert len(finals) == CFG.cv_folds + CFG.n_splits + 1


def test_report_is_consistent(signal_study, tmp_path):
    X, y, res, ens = signal_study
    json.dumps(res)  # JSON-serialisable as is
    oof = np.asarray(res["oof"]["p_cheap"])
    t = CFG.threshold
    assert res["oof"]["metrics"] == R.metrics(y, oof, t)
    cv = res["cv"]
    assert cv["in_sample"] == ["train"] and cv["n_folds"] == CFG.cv_folds
    for row, fold in zip(cv["folds"], res["folds"]):
        assert row["test"] == R.metrics(y[fold["test_idx"]], oof[fold["test_idx"]], t)  # CV from the same fits
        assert row["kept"] == fold["kept"] and row["n_train"] == len(fold["train_idx"])
    assert set(cv["test_mean"]) == set(cv["test_std"]) == set(cv["train_mean"]) == set(R.SUMMARY_KEYS)
    best = res["best_split"]
    assert best["index"] == R.best_index(best["splits"]) and best["test"] == best["splits"][best["index"]]
    assert best["n_positive_test"] == int(y[best["test_idx"]].sum())
    assert (best["warning"] is None) == (best["test"]["n_to_B"] >= C.MIN_SUPPORT
                                         and best["n_positive_test"] >= C.MIN_SUPPORT)
    assert best["warning"] and "fewer than 10" in best["warning"]  # 24 test seeds: too few to trust
    assert [r["threshold"] for r in res["sweep"]] == list(CFG.sweep)
    # the deployed router is the recipe fitted on all seeds
    est = C.recipe_from_config(CFG, NAMES).fit(X, y)
    assert res["kept"] == est.kept_ == list(ens.feature_names) and res["ablation"] == est.ablation_
    _assert_same_router(ens, R.export_trees(est.router_))
    kept = [NAMES.index(n) for n in res["kept"]]
    np.testing.assert_allclose(np.asarray(R.jax_predict_proba(ens, X[:, kept])), est.predict_proba(X)[:, 1],
                               atol=1e-6)
    loaded, meta = R.load_router(R.save_router(ens, tmp_path / "r", CFG, candidate_features=NAMES))
    _assert_same_router(loaded, ens)


def test_signal_features_route_precisely(signal_study):
    _, y, res, _ = signal_study
    m = res["oof"]["metrics"]
    assert m["precision"] > 0.9 and m["n_to_B"] >= 20 and "signal" in res["kept"]


def test_noise_features_invent_no_signal():
    """Pure noise: the out-of-sample precision is the class prior, within a bootstrap 95 % interval."""
    rng = np.random.default_rng(7)
    n = 300
    y = (rng.random(n) < 0.5).astype(np.int64)
    X = rng.normal(size=(n, len(NAMES)))
    res, _ = C.run_study(X, y, NAMES, CFG, cache_dir=None, n_jobs=1)
    to_b = np.asarray(res["oof"]["p_cheap"]) >= CFG.threshold
    assert to_b.sum() >= 30, "enough seeds routed to B for the check to mean something"
    boot = np.random.default_rng(0).integers(n, size=(2000, n))
    prec = np.array([y[b][to_b[b]].mean() for b in boot])
    lo, hi = np.quantile(prec, [0.025, 0.975])
    assert lo <= y.mean() <= hi, (lo, y.mean(), hi)


def test_denoised_targets_keep_each_training_sets_share_and_take_the_best_quality():
    y = np.array([1, 0, 0, 1, 0, 1, 0, 0])
    q = np.array([0.1, 0.9, 0.5, 0.2, 0.5, 0.3, 0.0, 0.8])
    targets = C.denoised_targets(y, q)
    np.testing.assert_array_equal(targets(np.arange(8)), [0, 1, 1, 0, 0, 0, 0, 1])  # 3 of 8, the tie in row order
    rows = np.array([0, 3, 6, 7])  # 2 of 4 cheap_ok under the labels
    np.testing.assert_array_equal(targets(rows), [0, 1, 0, 1])
    np.testing.assert_array_equal(C.label_targets(y)(rows), y[rows])


def test_a_study_on_the_labels_own_quality_is_the_label_study(signal_study):
    """Quality that ranks exactly as the labels makes the denoised targets the labels: the same study, bitwise."""
    X, y, res, ens = signal_study
    res_q, ens_q = C.run_study(X, y, NAMES, CFG, cache_dir=None, n_jobs=1, quality=y + 0.0)
    assert _without_fits(res_q) == _without_fits(res)
    _assert_same_router(ens_q, ens)


def test_a_denoised_study_learns_the_quality_and_is_judged_on_the_labels():
    """Labels that are the quality plus noise after the probe: the fits learn the quality (its signal column
    kept), and every figure is on the labels (the out-of-fold metrics are the labels' at the stored P)."""
    rng = np.random.default_rng(3)
    n = 200
    X = rng.normal(size=(n, len(NAMES)))
    quality = X[:, 0] + 0.3 * rng.normal(size=n)
    y = ((quality + 1.5 * rng.normal(size=n)) > 0).astype(np.int64)
    res, _ = C.run_study(X, y, NAMES, CFG, cache_dir=None, n_jobs=1, quality=quality)
    p = np.asarray(res["oof"]["p_cheap"])
    assert res["oof"]["metrics"] == R.metrics(y, p, CFG.threshold)
    assert "signal" in res["kept"]
    plain, _ = C.run_study(X, y, NAMES, CFG, cache_dir=None, n_jobs=1)
    assert plain["oof"]["p_cheap"] != res["oof"]["p_cheap"]


def test_rerun_fits_only_what_is_missing(tmp_path, monkeypatch):
    X, y = _data(seed=2)
    cache = tmp_path / "cache"
    res, ens = C.run_study(X, y, NAMES, CFG, cache, n_jobs=1)
    files = sorted(cache.glob("*.npz"))
    total = res["fits"]["total"]
    assert res["fits"] == {"total": total, "cached": 0, "ran": total} and len(files) == total
    assert not list(cache.glob(".*.tmp"))
    gone = files[::3]
    for f in gone:
        f.unlink()
    ran, fit = [], C._fit
    monkeypatch.setattr(C, "_fit", lambda key, *a: ran.append(key) or fit(key, *a))
    res2, ens2 = C.run_study(X, y, NAMES, CFG, cache, n_jobs=1)
    assert sorted(f"{k}.npz" for k in ran) == sorted(f.name for f in gone)
    assert res2["fits"] == {"total": total, "cached": total - len(gone), "ran": len(gone)}
    assert _without_fits(res2) == _without_fits(res)
    _assert_same_router(ens2, ens)
    res3, ens3 = C.run_study(X, y, NAMES, CFG, cache, n_jobs=1)
    assert res3["fits"]["ran"] == 0 and len(ran) == len(gone) and _without_fits(res3) == _without_fits(res)
    _assert_same_router(ens3, ens)


def test_n_jobs_does_not_change_results():
    X, y = _data(seed=4)
    res1, ens1 = C.run_study(X, y, NAMES, CFG, cache_dir=None, n_jobs=1)
    res2, ens2 = C.run_study(X, y, NAMES, CFG, cache_dir=None, n_jobs=2)
    assert res1 == res2
    _assert_same_router(ens1, ens2)


STUDY_SCRIPT = """
import json, sys
import numpy as np
from hybrid_jax import trees
from hybrid_jax.config import RouterConfig
from hybrid_jax.routing import crossfit
d = sys.argv[1]
X, y = np.load(d + "/X.npy"), np.load(d + "/y.npy")
res, ens = crossfit.run_study(X, y, {names!r}, {cfg!r}, d + "/cache", n_jobs=1)
np.savez(d + "/router.npz", **{{k: np.asarray(getattr(ens, k)) for k in trees.ARRAYS}})
with open(d + "/results.json", "w") as f:
    json.dump(res, f)
"""


def test_killed_run_resumes(tmp_path):
    """SIGKILL a study midway; the rerun keeps every finished fit's file and ends where an uninterrupted run does."""
    rng = np.random.default_rng(5)
    names = tuple(f"f{i}" for i in range(8))
    y = (rng.random(200) < 0.4).astype(np.int64)
    X = rng.normal(size=(200, len(names)))
    X[:, :2] += y[:, None]
    cfg = dataclasses.replace(CFG, n_estimators=60, ablation_estimators=20, cv_folds=4, n_splits=4)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    script = STUDY_SCRIPT.format(names=names, cfg=cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(cache.glob("*.npz"))) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -9, f"the study ended before it could be killed: {err.decode()[-2000:]}"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.glob("*.npz")}
    assert len(before) >= 20 and not (tmp_path / "results.json").exists()

    subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, cwd=tmp_path, check=True, timeout=300)
    resumed = json.loads((tmp_path / "results.json").read_text())
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.glob("*.npz")}
    assert all(after[name] == stamp for name, stamp in before.items()), "a finished fit was written again"
    total = resumed["fits"]["total"]
    assert resumed["fits"] == {"total": total, "cached": len(before), "ran": total - len(before)}
    assert len(after) == total > len(before)

    fresh, ens = C.run_study(X, y, names, cfg, cache_dir=None, n_jobs=1)
    assert _without_fits(resumed) == json.loads(json.dumps(_without_fits(fresh)))
    saved = np.load(tmp_path / "router.npz")
    for k, v in _arrays(ens).items():
        np.testing.assert_array_equal(saved[k], v, err_msg=k)


def test_errors():
    X, y = _data()
    with pytest.raises(R.RouterError, match="n_jobs must be >= 0"):
        C.run_study(X, y, NAMES, CFG, None, n_jobs=-1)
    few = np.r_[np.ones(4, int), np.zeros(36, int)]
    with pytest.raises(R.RouterError, match="lower router.ablation_folds"):
        C.run_study(X[:40], few, NAMES, dataclasses.replace(CFG, ablation_folds=4, cv_folds=2), None, n_jobs=1)
    with pytest.raises(R.RouterError, match="lower router.cv_folds"):
        C.run_study(X[:40], few, NAMES, dataclasses.replace(CFG, cv_folds=5), None, n_jobs=1)
    for field, bad in (("ablation_folds", 1), ("ablation_estimators", -1), ("n_jobs", -2)):
        with pytest.raises(ConfigError, match=f"router.{field}"):
            dataclasses.replace(CFG, **{field: bad})
    assert dataclasses.replace(CFG, ablation_estimators=0).screen_estimators == CFG.n_estimators
    assert dataclasses.replace(CFG, ablation_estimators=500).screen_estimators == CFG.n_estimators


def test_router_stage_benchmark_at_test_scale():
    from benchmarks import router_stage

    (table,) = router_stage.run(["test"], repeats=1)
    assert len(table.rows) == 1 and table.rows[0][0] == "test"

