"""(f) Router study: `crossfit.run_study` (the whole recipe cross-fitted) on synthetic features.

Features: the preset's seed count x its feature count (paper: 600 x 24), labels with the
brief's cheap_ok share (32.8 %), the first SIGNAL columns shifted with the label, the rest
noise (so the ablation has something to keep and something to drop). One cold run per
preset (a paper run takes minutes, so `repeats` is not used): a fresh cache directory,
every fit runs, on every core (router.n_jobs = 0); then a rerun on the warm cache, which
fits nothing. Target: paper scale <= 10 minutes on this 2-core CPU.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import Table, num_cores
from hybrid_jax.config import get_preset
from hybrid_jax.probe import features
from hybrid_jax.routing import crossfit

CHEAP_OK_SHARE = 0.328  # the brief's label balance
SIGNAL = 6  # informative columns (shifted by 0.6 sd when cheap_ok)


def synthetic(n: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < CHEAP_OK_SHARE).astype(np.int64)
    X = rng.standard_normal((n, n_features))
    X[:, :SIGNAL] += 0.6 * y[:, None]
    return X.astype(np.float32), y


def run(presets: list[str], repeats: int) -> list[Table]:
    table = Table("Router study: cross-fitted recipe (ablation -> fit in every fold, split and the deployed fit)",
                  ["preset", "seeds x features", "final / screen trees", "ablation folds", "recipes", "fits",
                   "processes", "wall s (cold cache)", "wall s per fit", "core-s per fit",
                   "wall s (warm cache rerun)", "out-of-fold precision"])
    table.notes.append(f"Synthetic features: cheap_ok share {CHEAP_OK_SHARE}, {SIGNAL} informative columns, the "
                       "rest noise. One cold run per preset (fresh cache directory), then a rerun that reads "
                       "every fit back from the cache. Target: paper <= 10 min (600 s) on 2 cores.")
    for name in presets:
        preset = get_preset(name)
        cfg = preset.router
        names = features.feature_names(preset.model_b.decoder.num_layers)
        X, y = synthetic(preset.seeds.num_seeds, len(names))
        jobs = cfg.n_jobs or num_cores()
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            res, _ = crossfit.run_study(X, y, names, cfg, Path(cache), desc=f"router study ({name})")
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm_res, _ = crossfit.run_study(X, y, names, cfg, Path(cache), desc=f"router study ({name}, warm)")
            warm = time.perf_counter() - t0
        assert warm_res["fits"]["ran"] == 0, warm_res["fits"]
        fits = res["fits"]["ran"]
        table.add(name, f"{len(y)} x {len(names)}", f"{cfg.n_estimators} / {cfg.screen_estimators}",
                  cfg.ablation_folds, cfg.cv_folds + cfg.n_splits + 1, fits, jobs, cold, cold / fits,
                  cold * jobs / fits, warm, res["oof"]["metrics"]["precision"])
        print(table.row_text(), flush=True)
    return [table]
