"""(i) Persistent compilation cache: a rerun of a stage with the cache vs with `--no-compile-cache`.

One work dir per preset, its models trained once at the preset's shapes for one epoch (shapes set
what compiles; seeds cut to one batch). Its first `seeds` run fills the work dir's cache. Then the
same command, `python -m experiments.run --stages seeds`, reruns the stage (its outputs deleted
first) in a fresh process, alternately with the cache and with `--no-compile-cache`, `repeats`
times each. Reported: the process's wall time and the stage's own seconds (median, min, max), and
the first run's (cache empty). The seeds stage compiles Model A's and Model B's samplers, the
probe and the features: most of what a resumed paper run recompiles.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.timing import Table
from hybrid_jax import io
from hybrid_jax.config import get_preset

STAGE = "seeds"
SHRINK = ("model_a.train.epochs=1", "model_b.train.epochs=1", "corrector.train.epochs=1")  # shapes unchanged


def _overrides(preset: str) -> list[str]:
    return ["--set", *SHRINK, f"seeds.num_seeds={get_preset(preset).seeds.batch_size}"]


def _run(workdir: Path, preset: str, *extra: str) -> tuple[float, float]:
    """(process wall seconds, stage seconds) of one `experiments.run` of the stage in a fresh process."""
    shutil.rmtree(workdir / STAGE, ignore_errors=True)
    cmd = [sys.executable, "-m", "experiments.run", "--preset", preset, "--workdir", str(workdir), "--offline",
           "--stages", STAGE, *_overrides(preset), *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HYBRID_JAX_COMPILE_CACHE": "1"})
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return wall, io.read_json(workdir / STAGE / "done.json")["summary"]["stage_seconds"]


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def run(presets: list[str], repeats: int) -> list[Table]:
    table = Table(f"Compilation cache: `experiments.run --stages {STAGE}` rerun in a fresh process",
                  ["preset", "runs each", "first run: wall s / stage s (cache empty)",
                   "cached: wall s", "cached: stage s", "--no-compile-cache: wall s", "--no-compile-cache: stage s",
                   "stage speedup (median)"])
    table.notes.append("Wall: the whole process (imports, work-dir checks, stage); stage: the stage's own seconds "
                       "from its done.json. Median (min-max) over alternating runs, each in a fresh process. "
                       f"Models trained for one epoch at the preset's shapes ({', '.join(SHRINK)}); seeds cut to one "
                       "batch, so that compilation is a visible share of the stage.")
    for name in presets:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp) / name
            setup = [sys.executable, "-m", "experiments.run", "--preset", name, "--workdir", str(workdir),
                     "--offline", "--stages", "data,model_a,model_b,corrector", "--no-compile-cache", *_overrides(name)]
            subprocess.run(setup, capture_output=True, text=True, check=True)
            first = _run(workdir, name)
            cached, uncached = [], []
            for _ in range(repeats):
                cached.append(_run(workdir, name))
                uncached.append(_run(workdir, name, "--no-compile-cache"))
        stage = lambda runs: [s for _, s in runs]
        wall = lambda runs: [w for w, _ in runs]
        table.add(name, repeats, f"{first[0]:.1f} / {first[1]:.1f}", _spread(wall(cached)), _spread(stage(cached)),
                  _spread(wall(uncached)), _spread(stage(uncached)),
                  f"{statistics.median(stage(uncached)) / statistics.median(stage(cached)):.2f}x")
        print(table.row_text(), flush=True)
    return [table]
