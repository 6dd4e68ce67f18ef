"""The one timing routine every benchmark uses, plus FLOPs from XLA and a small table type.

`time_many` times several callables side by side: it compiles each JAX one ahead of time
(compile seconds reported separately), warms each up, then runs the repeats in rounds
(A, B, A, B, ...) so that slow drifts of a shared machine hit every contender alike, and
reports the median. Every call is wrapped in `jax.block_until_ready`. `time_fn` is the
single-callable case.
"""

from __future__ import annotations

import dataclasses
import gc
import os
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


def _is_jax_jitted(fn) -> bool:
    return hasattr(fn, "lower") and hasattr(fn, "trace")


def compile_jax(fn, *args) -> tuple[Any, float]:
    """(compiled executable, seconds spent lowering + compiling). `fn` must be a jax.jit function
    without static arguments (wrap them in a closure)."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _call(fn, args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


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


# ----------------------------------------------------------------------------- tables


@dataclasses.dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, *row) -> None:
        if len(row) != len(self.columns):
            raise ValueError(f"row has {len(row)} cells, table {self.title!r} has {len(self.columns)} columns")
        self.rows.append([fmt(c) for c in row])

    def to_text(self) -> str:
        cells = [self.columns] + self.rows
        widths = [max(len(str(r[i])) for r in cells) for i in range(len(self.columns))]
        line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))
        out = [f"== {self.title}", line(self.columns), line(["-" * w for w in widths])]
        out += [line(r) for r in self.rows] + [f"  note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_markdown(self) -> str:
        cell = lambda c: str(c).replace("|", "\\|")  # a bare | would split the cell
        out = [f"### {self.title}", "", "| " + " | ".join(map(cell, self.columns)) + " |",
               "|" + "|".join("---" for _ in self.columns) + "|"]
        out += ["| " + " | ".join(map(cell, r)) + " |" for r in self.rows]
        if self.notes:
            out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def fmt(x) -> str:
    if isinstance(x, float):
        if x != x:
            return "n/a"
        if x == 0:
            return "0"
        if abs(x) >= 1000 or abs(x) < 1e-3:
            return f"{x:.3g}"
        return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def ms(seconds: float) -> float:
    return 1e3 * seconds


def gflop(flops: float) -> float:
    return flops / 1e9
