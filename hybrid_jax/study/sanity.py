"""Plausible ranges of the figures the report prints, so an impossible value is flagged, not reported.

`RANGES` maps a kind of figure to its (lo, hi) bounds, closed unless `OPEN` says otherwise;
`check(kind, value)` says why a value is implausible (None if it is plausible) and
`fmt(kind, value, spec)` formats a plausible value with `spec` and anything else as a visible flag,
e.g. "⚠ 7.41e+06 (implausible: quality score outside [0, 1])".
"""

from __future__ import annotations

import math

RANGES: dict[str, tuple[float, float]] = {
    "probability": (0.0, 1.0),
    "share": (0.0, 1.0),  # a fraction of seeds / images / labels (agreement, share routed to A, ...)
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "auc": (0.0, 1.0),
    "auc_gap": (-1.0, 1.0),  # a difference of two ROC AUCs
    "icc": (-1.0, 1.0),  # intraclass correlation: its estimate dips below 0 when the share between seeds is ~0
    "savings": (-1.0, 1.0),  # 1 - cost / cost of always A: below -1 would mean over twice A's cost
    "quality": (0.0, 1.0),  # the labeler's bounded realism score
    "quality_gap": (-1.0, 1.0),  # a difference of two mean quality scores
    "seconds": (0.0, 1e4),  # a measured time (per image or per stage)
    "frechet": (0.0, 1e4),  # Frechet distance between feature sets
    "kid": (-1.0, 1e4),  # kernel inception distance: unbiased, so slightly below 0 for close sets
    "mse": (0.0, 4.0),  # mean squared pixel difference of two images in [-1, 1]
    "mse_gap": (-4.0, 4.0),  # a difference of two such MSEs
}
# (lower bound excluded, upper bound excluded); kinds not listed have a closed range.
OPEN: dict[str, tuple[bool, bool]] = {
    "seconds": (True, True),  # a time of 0 means a broken timer
    "frechet": (False, True),
}
NAMES: dict[str, str] = {"auc": "AUC", "icc": "intraclass correlation", "quality": "quality score", "seconds": "time in seconds",
                         "frechet": "Frechet distance",
         "kid": "KID", "mse": "pixel MSE"}
FLAG = "⚠"


def _interval(kind: str) -> str:
    lo, hi = RANGES[kind]
    lo_open, hi_open = OPEN.get(kind, (False, False))
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check(kind: str, value) -> str | None:
    """None if `value` is a plausible figure of this kind, else a short reason.

    Raises KeyError for an unknown kind (a programming error, not a bad value).
    """
    if kind not in RANGES:
        raise KeyError(f"unknown kind of figure {kind!r}; known: {sorted(RANGES)}")
    name = NAMES.get(kind, kind)
    if value is None:
        return f"{name} missing"
    if isinstance(value, (bool, str, bytes)):
        return f"{name} is not a number ({type(value).__name__})"
    try:  # ints, floats, numpy scalars and 0-d arrays
        value = float(value)
    except (TypeError, ValueError):
        return f"{name} is not a number ({type(value).__name__})"
    if not math.isfinite(value):
        return f"{name} is not finite"
    lo, hi = RANGES[kind]
    lo_open, hi_open = OPEN.get(kind, (False, False))
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        return f"{name} outside {_interval(kind)}"
    return None


def fmt(kind: str, value, spec: str = ".3f") -> str:
    """`format(value, spec)` if `value` is plausible, else "⚠ <value> (implausible: <reason>)"."""
    reason = check(kind, value)
    if reason is None:
        try:
            return format(value, spec)
        except (TypeError, ValueError):  # e.g. a 0-d array with an older numpy
            return format(float(value), spec)
    try:
        shown = format(float(value), ".3g")
    except (TypeError, ValueError):
        shown = repr(value)
    return f"{FLAG} {shown} (implausible: {reason})"
