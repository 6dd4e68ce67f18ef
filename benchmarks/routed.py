"""(e) HOOK, NOT IMPLEMENTED: routed pipeline throughput vs the ideal mix.

To be written once the routed pipeline exists (issue 8, item 5): images/s of the routed
pipeline (probe B's first k steps, route, finish B or run A) against the ideal mix
share_A x t_A + share_B x t_B measured side by side with `benchmarks.timing.time_many`.
Until then `run` returns no table and `benchmarks.run` reports it as not measured.
"""

from __future__ import annotations

from benchmarks.timing import Table

IMPLEMENTED = False


def run(presets: list[str], repeats: int) -> list[Table]:
    """HOOK (e): routed pipeline throughput vs share_A x t_A + share_B x t_B. Returns [] until implemented."""
    return []
