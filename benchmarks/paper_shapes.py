"""(j) Every stage at paper shapes: `python -m experiments.run --preset paper-shapes` end to end in a
fresh process on a fresh work dir (stand-in data, so it needs no files), then the seconds and
peak memory of each stage read back from the stages' `done.json`.

Peak memory is the process's so far (`timing.memory_peaks`): host RSS, and the device
allocator's peak where the backend reports one. Both only grow, so a stage's figure is an upper
bound of its own peak and a rise from the stage before is that stage's doing. One run, no
repeats (it takes most of half an hour on a 2-core CPU); measured when `paper` is among the presets.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from benchmarks.timing import Table
from hybrid_jax import io
from hybrid_jax.config import get_preset
from hybrid_jax.study.pipeline import stage_names

PRESET = "paper-shapes"
REPO = Path(__file__).resolve().parents[1]
PEAK_NOTE = ("Peak memory is the process's peak up to the end of the stage (it only grows); 'n/a': the backend "
             "reports no device allocator peak (CPU); 'not run': the stage had not finished.")


def stage_table(workdir: Path, title: str) -> Table:
    """Seconds and peak memory of every finished stage of `workdir`, in pipeline order."""
    table = Table(title, ["stage", "seconds", "peak host RSS MiB", "peak device MiB"])
    total = 0.0
    for name in stage_names(get_preset(PRESET)):
        done = Path(workdir) / name / "done.json"
        if not done.exists():
            table.add(name, "not run", "", "")
            continue
        s = io.read_json(done)["summary"]
        total += s["stage_seconds"]
        table.add(name, s["stage_seconds"], s.get("peak_rss_mib", float("nan")), s.get("peak_device_mib", "n/a"))
    table.add("all stages", total, "", "")
    return table


def run_end_to_end(workdir: Path, timeout_s: float = 3600) -> tuple[int, float, str]:
    """(exit code, wall seconds, stderr's tail) of one `paper-shapes` run into `workdir`."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--preset", PRESET, "--offline",
                          "--workdir", str(workdir)], cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    return out.returncode, time.perf_counter() - t0, out.stderr[-3000:]


def run(presets: list[str], repeats: int) -> list[Table]:
    if "paper" not in presets:
        return []
    with tempfile.TemporaryDirectory(prefix="paper-shapes-") as tmp:
        code, wall, err = run_end_to_end(Path(tmp) / "run")
        device = jax.devices()[0]
        table = stage_table(Path(tmp) / "run", f"Preset {PRESET} end to end on {device.platform}:{device.device_kind}"
                                              f" (this process's device): seconds and peak memory per stage")
    table.notes += [f"`python -m experiments.run --preset {PRESET} --offline` in a fresh process and work dir: "
                    f"exit code {code}, {wall / 60:.1f} min wall (process start, imports and compilation included).",
                    PEAK_NOTE]
    if code != 0:
        table.notes.append(f"the run FAILED; its stderr ended with: {err[-500:]!r}")
    return [table]


def main(argv=None) -> int:
    """`python -m benchmarks.paper_shapes WORKDIR`: the stage table of an existing work dir, as markdown."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.paper_shapes", description=main.__doc__)
    p.add_argument("workdir", type=Path)
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    device = jax.devices()[0]
    title = args.title or f"Stages of {args.workdir} on {device.platform}:{device.device_kind}: seconds and peak memory"
    table = stage_table(args.workdir, title)
    table.notes.append(PEAK_NOTE)
    print(table.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
