"""Stage `features`: the probe features as a plain CSV (seed, one column per feature) for any tool."""

from __future__ import annotations

import numpy as np

from hybrid_jax import io
from hybrid_jax.study.rundir import Run, Stage
from hybrid_jax.study.stages import seeds as seeds_stage


def run_stage(run: Run) -> dict:
    f = seeds_stage.load_probe_features(run)
    if not np.isfinite(f["features"]).all():
        raise ValueError("non-finite router features; the models may have diverged")
    names = [str(n) for n in f["names"]]
    rows = ["seed," + ",".join(names)] + [f"{s}," + ",".join(f"{v:.9g}" for v in row)
                                          for s, row in zip(f["seeds"], f["features"])]
    io.write_text(run.path("features", "features.csv"), "\n".join(rows) + "\n")
    io.write_npz(run.path("features", "features.npz"), **f)
    return {"n_seeds": len(f["seeds"]), "n_features": len(names)}


def load(run: Run) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(seeds [n], features [n, F], names [F])."""
    f = io.read_npz(run.path("features", "features.npz"))
    return f["seeds"], f["features"], [str(n) for n in f["names"]]


STAGE = Stage("features", run_stage, after=("seeds",))
