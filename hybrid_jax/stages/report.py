"""Stage `report`: `report/report.md` and its figures, from what the other stages recorded."""

from __future__ import annotations

from hybrid_jax.rundir import Run, Stage


def run_stage(run: Run) -> dict:
    from hybrid_jax import report  # matplotlib only when a report is written
    return {"report": str(report.write_report(run))}


STAGE = Stage("report", run_stage,
              after=("data", "model_a", "model_b", "corrector", "labels", "router", "routed", "allocate"))
