"""Honest timing and FLOP counts: compile time apart from run time, results blocked until ready.

`time_many` times several callables side by side: it compiles each jitted one ahead of time
(compile seconds reported separately), warms each up, then runs the repeats in rounds
(A, B, A, B, ...) so that slow drifts of a shared machine hit every contender alike, and
reports the median. XLA's cost analysis counts a while-loop body once, whatever its trip
count, so the FLOPs of a scanned sampler are (network passes x FLOPs of one pass).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import resource
import statistics
import time
from typing import Any, Callable

import jax


@dataclasses.dataclass
class Timing:
    median_s: float  # median wall seconds of one call after compilation and warm-up
    runs: list[float]  # every timed call, in order
    compile_s: float | None  # jax: lower + compile seconds (None for non-JAX callables)
    compiled: Any = dataclasses.field(default=None, repr=False)  # jax.stages.Compiled, for cost analysis

    @property
    def min_s(self) -> float:
        return min(self.runs)


def num_cores() -> int:
    """Cores this process may run on (XLA's CPU thread pool uses this many)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_peaks() -> dict[str, float]:
    """Peak memory of this process so far, in MiB: host RSS, and the first local device's
    allocator peak where the backend reports one (GPU, TPU; not the CPU). Both only grow, so
    after each stage of a run they bound that stage's peak from above."""
    peaks = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        peaks["peak_device_mib"] = stats["peak_bytes_in_use"] / 2**20
    return peaks


def _is_jax_jitted(fn) -> bool:
    return hasattr(fn, "lower") and hasattr(fn, "trace")


def compile_jax(fn, *args) -> tuple[Any, float]:
    """(compiled executable, seconds spent lowering + compiling). `fn` must be a jax.jit function
    without static arguments (wrap them in a closure)."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def timed(fn, *args) -> tuple[Any, float]:
    """(fn(*args), its wall seconds), blocked until the result is ready."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def _call(fn, args) -> float:
    return timed(fn, *args)[1]


def time_many(contenders: dict[str, tuple[Callable, tuple]], repeats: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Time `{name: (fn, args)}` side by side; returns `{name: Timing}`.

    JAX jit functions are compiled ahead of time and the executable is timed (so no call
    pays for tracing or a cache lookup miss); anything else (torch) is called as is.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    calls, compile_s, compiled = {}, {}, {}
    for name, (fn, args) in contenders.items():
        if _is_jax_jitted(fn):
            compiled[name], compile_s[name] = compile_jax(fn, *args)
            calls[name] = compiled[name]
        else:
            calls[name], compile_s[name], compiled[name] = fn, None, None
    for name, (_, args) in contenders.items():
        for _ in range(warmup):
            _call(calls[name], args)
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, (_, args) in contenders.items():
                runs[name].append(_call(calls[name], args))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(statistics.median(r), r, compile_s[name], compiled[name]) for name, r in runs.items()}


def time_fn(fn: Callable, *args, repeats: int = 5, warmup: int = 1) -> Timing:
    """Median seconds of `fn(*args)` (compile seconds apart for a jax.jit function)."""
    return time_many({"fn": (fn, args)}, repeats, warmup)["fn"]


def xla_flops(compiled) -> float:
    """FLOPs of one call of a compiled JAX executable, from XLA's cost analysis (nan if absent)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def jax_flops(fn, *args) -> float:
    """`xla_flops` of a jax.jit function at these arguments (compiles it)."""
    return xla_flops(compile_jax(fn, *args)[0])


def flops(fn: Callable, *args) -> float:
    """FLOPs of one call of `fn(*args)` from XLA's cost analysis of the program compiled for the CPU,
    whatever the default backend. On GPUs convolutions run as cuDNN custom calls, which the analysis
    counts as zero: on an H200 it gave paper Model A 1.06 GFLOP per U-Net pass where the CPU program
    of the same function has 11.7. Counting on the CPU gives one figure on every backend."""
    cpu = jax.devices("cpu")[0]
    return jax_flops(jax.jit(fn), *jax.device_put(args, cpu))
