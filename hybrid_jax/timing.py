"""Honest timing and FLOP counts: compile time apart from run time, results blocked until ready.

XLA's cost analysis counts a while-loop body once, whatever its trip count, so the FLOPs of
a scanned sampler are taken as (network passes x FLOPs of one pass), each pass analysed on
its own.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    compile_s: float  # first call (trace + compile + one run) minus a steady-state run
    run_s: float  # median over repeats, after warm-up
    runs: tuple[float, ...]


def time_fn(fn: Callable, *args, repeats: int = 3, warmup: int = 1) -> Timing:
    """Time `fn(*args)`; the first call's extra cost over the median is reported as compile time."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        jax.block_until_ready(fn(*args))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
    run = statistics.median(runs)
    return Timing(compile_s=max(first - run, 0.0), run_s=run, runs=tuple(runs))


def flops(fn: Callable, *args) -> float:
    """FLOPs of one call of `fn(*args)` from XLA's cost analysis (loop bodies counted once)."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", float("nan")))
