"""Tables for the benchmarks; timing and FLOPs come from `hybrid_jax.timing` (one routine for all)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hybrid_jax.timing import Timing, compile_jax, jax_flops, num_cores, time_fn, time_many, xla_flops  # noqa: F401


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

    def row_text(self, i: int = -1) -> str:
        """Row `i` as it appears in `to_text()` (for printing rows as they are measured)."""
        return self.to_text().splitlines()[3 + (i % len(self.rows))]

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
