"""Plausible ranges of reported figures: impossible values are flagged, never printed as results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybrid_jax.study import sanity


def test_ranges_are_data_with_the_documented_bounds():
    for kind in ("probability", "share", "precision", "recall", "accuracy", "auc", "quality"):
        assert sanity.RANGES[kind] == (0.0, 1.0)
    assert sanity.RANGES["savings"] == (-1.0, 1.0)
    assert sanity.RANGES["seconds"] == (0.0, 1e4) and sanity.OPEN["seconds"] == (True, True)
    assert sanity.RANGES["frechet"] == (0.0, 1e4) and sanity.OPEN["frechet"] == (False, True)
    assert all(lo < hi for lo, hi in sanity.RANGES.values())
    assert set(sanity.OPEN) <= set(sanity.RANGES)


@pytest.mark.parametrize("kind, value", [
    ("probability", 0.0), ("probability", 1.0), ("share", 0.672), ("precision", 1), ("recall", np.float32(0.5)),
    ("accuracy", np.float64(0.99)), ("auc", 0.9995), ("savings", -0.3), ("savings", 1.0), ("quality", 0.577),
    ("seconds", 0.009), ("seconds", 9999.0), ("frechet", 0.0), ("frechet", 23.0), ("share", np.array(0.5)),
])
def test_plausible_values_pass(kind, value):
    assert sanity.check(kind, value) is None


@pytest.mark.parametrize("kind, value, reason", [
    ("quality", 7411232.0, "quality score outside [0, 1]"),
    ("quality", -0.01, "quality score outside [0, 1]"),
    ("precision", 1.0001, "precision outside [0, 1]"),
    ("auc", float("nan"), "AUC is not finite"),
    ("savings", -1.5, "savings outside [-1, 1]"),
    ("seconds", 0.0, "time in seconds outside (0, 10000)"),
    ("seconds", 1e4, "time in seconds outside (0, 10000)"),
    ("seconds", -2.0, "time in seconds outside (0, 10000)"),
    ("frechet", math.inf, "Frechet distance is not finite"),
    ("frechet", -1e-3, "Frechet distance outside [0, 10000)"),
    ("frechet", 1e4, "Frechet distance outside [0, 10000)"),
    ("share", None, "share missing"),
    ("share", "0.5", "share is not a number (str)"),
    ("share", True, "share is not a number (bool)"),
    ("share", [0.1, 0.2], "share is not a number (list)"),
])
def test_implausible_values_get_a_short_reason(kind, value, reason):
    assert sanity.check(kind, value) == reason


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(KeyError, match="unknown kind"):
        sanity.check("percentage", 0.5)
    with pytest.raises(KeyError):
        sanity.fmt("percentage", 0.5, ".2f")


def test_fmt_formats_plausible_values_and_flags_the_rest_visibly():
    assert sanity.fmt("quality", 0.57717, ".3f") == "0.577"
    assert sanity.fmt("share", 0.672, ".1%") == "67.2%"
    assert sanity.fmt("seconds", np.float32(0.0093), ".4f") == "0.0093"
    assert sanity.fmt("auc", np.array(0.99), ".2f") == "0.99"  # 0-d arrays are numbers too
    assert sanity.fmt("quality", 7411232.0, ".3f") == "⚠ 7.41e+06 (implausible: quality score outside [0, 1])"
    assert sanity.fmt("auc", float("nan")) == "⚠ nan (implausible: AUC is not finite)"
    assert sanity.fmt("share", None) == "⚠ None (implausible: share missing)"
    for kind, bad in (("precision", 1.2), ("savings", -3.0), ("seconds", 0.0), ("frechet", -1.0)):
        out = sanity.fmt(kind, bad, ".3f")
        assert out.startswith(sanity.FLAG) and "implausible" in out and out != format(bad, ".3f")
