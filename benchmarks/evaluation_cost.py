"""(k) What the study spends on judging its models beside what it spends training them: stage seconds.

    python -m benchmarks.evaluation_cost [--preset quick] [--baseline REV] [--out FILE]

Runs `python -m experiments.run --preset P --offline` in a fresh process on a new work dir and reads
each stage's own seconds from its done.json. With `--baseline REV` (a git revision of this
repository) the trained models of that work dir (data and training stages, no compile cache) are then
copied and judged again by that revision's code (a git worktree), every stage after training run
afresh, so the two columns are the same models judged by the two versions, side by side in one run.
Evaluation is every stage after training; the target is evaluation <= half of training (quick).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.timing import Table
from hybrid_jax import io
from hybrid_jax.config import get_preset
from hybrid_jax.study.pipeline import stage_names
from hybrid_jax.study.stages import train

ROOT = Path(__file__).resolve().parents[1]


def _training(preset: str) -> tuple[str, ...]:
    """The preset's stages that train (the distillation's students among them)."""
    return (*train.models(get_preset(preset)), "distill")


def _run(tree: Path, workdir: Path, preset: str) -> float:
    """Wall seconds of one whole `experiments.run` of `tree`'s code on `workdir`, in a fresh process."""
    cmd = [sys.executable, "-m", "experiments.run", "--preset", preset, "--workdir", str(workdir), "--offline"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)})
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} in {tree} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def _stage_seconds(workdir: Path, since: float, preset: str) -> dict[str, tuple[float, bool]]:
    """stage -> (its seconds, whether this run made it (else reused from the run before))."""
    out = {}
    for name in stage_names(get_preset(preset)):
        done = workdir / name / "done.json"
        if done.exists():
            out[name] = (io.read_json(done)["summary"]["stage_seconds"], done.stat().st_mtime >= since)
    return out


def _totals(seconds: dict[str, tuple[float, bool]], training_stages: tuple[str, ...]) -> tuple[float, float]:
    training = sum(s for name, (s, _) in seconds.items() if name in training_stages)
    evaluation = sum(s for name, (s, _) in seconds.items() if name not in training_stages and name != "data")
    return training, evaluation


def _copy_trained(src: Path, dst: Path, training_stages: tuple[str, ...]) -> None:
    """`dst` as `src` was when training ended: its config, data and trained models, nothing judged yet and no
    compile cache, so the baseline generates, judges and compiles everything itself, as the first column did."""
    dst.mkdir(parents=True)
    shutil.copy(src / "run.json", dst / "run.json")
    for name in ("data", *training_stages):
        shutil.copytree(src / name, dst / name)


def run(presets: list[str], repeats: int = 1, baseline: str | None = None) -> list[Table]:
    tables = []
    for preset in presets:
        with tempfile.TemporaryDirectory(prefix="evaluation_cost_") as tmp:
            tmp = Path(tmp)
            columns = {}
            start = time.time()
            _run(ROOT, tmp / "this", preset)
            columns["this tree"] = _stage_seconds(tmp / "this", start, preset)
            if baseline:
                tree = tmp / "baseline-tree"
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), baseline],
                               check=True, capture_output=True)
                try:
                    _copy_trained(tmp / "this", tmp / "baseline", _training(preset))
                    start = time.time()
                    _run(tree, tmp / "baseline", preset)
                    columns[f"baseline {baseline}"] = _stage_seconds(tmp / "baseline", start, preset)
                finally:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                                   capture_output=True)
        table = Table(f"Stage seconds, preset {preset}: training vs evaluation",
                      ["stage", *(f"{c} s" for c in columns)])
        for name in stage_names(get_preset(preset)):
            table.add(name, *(f"{cols[name][0]:.1f}" + ("" if cols[name][1] else " (reused)") if name in cols
                              else "–" for cols in columns.values()))
        totals = {c: _totals(cols, _training(preset)) for c, cols in columns.items()}
        table.add(f"training ({' + '.join(_training(preset))})", *(f"{t:.1f}" for t, _ in totals.values()))
        table.add("evaluation (every stage after training)", *(f"{e:.1f}" for _, e in totals.values()))
        table.add("evaluation / training", *(f"{e / t:.2f}" for t, e in totals.values()))
        table.notes.append("Each stage's own seconds from its done.json, one `experiments.run` per column in a fresh "
                           "process; `(reused)`: that column's code did not rerun the stage (same fingerprint), so "
                           "its seconds are the first column's. Target: evaluation / training <= 0.5 (quick).")
        tables.append(table)
    return tables


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--baseline", help="a git revision whose code judges the same trained models")
    p.add_argument("--out", help="also write the table as markdown here")
    args = p.parse_args(argv)
    tables = run(args.preset.split(","), baseline=args.baseline)
    for t in tables:
        print(t.to_text())
    if args.out:
        io.write_text(Path(args.out), "\n".join(t.to_markdown() for t in tables))


if __name__ == "__main__":
    main()
