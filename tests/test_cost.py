"""Cost: every strategy under one batching policy; a routed run's seconds agree with its parts."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_jax import routing, timing
from hybrid_jax.config import RouterConfig
from hybrid_jax.probe import features
from hybrid_jax.routing import evaluation, router as router_lib
from hybrid_jax.study import cost


@pytest.fixture(scope="module")
def work(preset, model_a_params, model_b_params, model_a_sampler, model_b_sampler, perturb):
    names = features.feature_names(preset.model_b.decoder.num_layers)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, len(names)))
    y = (X[:, 0] > 0).astype(np.int64)
    ens = router_lib.export_trees(router_lib.fit(X, y, RouterConfig(n_estimators=5, max_depth=2), names))
    routed = routing.make_routed_sampler(model_a_sampler, model_b_sampler, ens, list(range(len(names))),
                                         preset.router.prefix_steps)
    return cost.make_work(routed, perturb(model_a_params, 1), perturb(model_b_params, 2), preset.router.prefix_steps)


def _synthetic_router_contenders(work, n: int, b: int, s: float):
    """The routed pipeline under a synthetic router sending a known share s of n seeds to A, and its parts."""
    keys_a, keys_b = routing.seed_keys(range(n), 0)
    to_a = np.zeros(n, bool)
    to_a[np.random.default_rng(1).permutation(n)[: int(s * n)]] = True
    parts = ("always A", "B finish", "probe", "synthetic router")
    contenders = {k: v for k, v in cost.strategies(work, keys_a, keys_b, {"synthetic router": to_a}, b).items()
                  if k in parts}
    return contenders, keys_a, keys_b


def test_routed_seconds_are_charged_as_the_sum_of_their_parts(work, monkeypatch):
    """Each piece of work takes a fixed, known time per batch (a fake clock; the work itself runs): the routed
    pipeline is charged exactly s t_A + (1 - s) t_finish + t_probe per image, each part charged alone the same
    way. The wall-clock version of this check is the slow test below (seconds on a shared machine are noisy)."""
    n, b, s = 8, 4, 0.5
    per_batch = {work.a: 0.2, work.finish: 0.04, work.probe: 0.002, work.prefix: 0.001}
    real_timed = timing.timed
    monkeypatch.setattr(timing, "timed", lambda fn, *args: (real_timed(fn, *args)[0], per_batch.get(fn, 0.0)))
    contenders, keys_a, keys_b = _synthetic_router_contenders(work, n, b, s)
    t = {k: v["seconds_per_image"] for k, v in cost.measure(contenders, n, repeats=1, warm=lambda: None).items()}
    assert t["always A"] == pytest.approx(0.2 / b) and t["probe"] == pytest.approx(0.002 / b)
    assert t["B finish"] == pytest.approx(0.04 / b)
    expected = s * t["always A"] + (1 - s) * t["B finish"] + t["probe"]
    assert t["synthetic router"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow
def test_routed_seconds_agree_with_their_parts(work):
    """A synthetic router sending a known share s to A: the measured routed seconds per image are
    within 10 % of s t_A + (1 - s) t_finish + t_probe, each part measured alone the same way."""
    n, b, s = 8, 4, 0.5
    contenders, keys_a, keys_b = _synthetic_router_contenders(work, n, b, s)
    rows = cost.measure(contenders, n, repeats=5, warm=lambda: cost.warm_up(work, keys_a, keys_b, b))
    # the least disturbed round of each: on a shared machine the minimum is far steadier than the median
    t = {k: rows[k]["min"] for k in ("always A", "B finish", "probe", "synthetic router")}
    expected = s * t["always A"] + (1 - s) * t["B finish"] + t["probe"]
    assert t["synthetic router"] == pytest.approx(expected, rel=0.10), (t, expected)


def test_a_mix_without_probe_is_composed_from_the_fixed_rows_as_per_image_charging_times_it(work, monkeypatch):
    """The labels' oracle (no probe) is not timed again: charged per image, timing it gives exactly its share of the
    two fixed rows, which `cost.composed_row` writes (checked against a timed mix under a fake clock)."""
    n, b = 8, 4
    per_batch = {work.a: 0.2, work.b: 0.03}
    real_timed = timing.timed
    monkeypatch.setattr(timing, "timed", lambda fn, *args: (real_timed(fn, *args)[0], per_batch.get(fn, 0.0)))
    keys_a, keys_b = routing.seed_keys(range(n), 0)
    m = np.array([1, 0, 0, 1, 1, 0, 0, 0], bool)
    timed_mix = (cost.charged_seconds(work.a, keys_a, np.flatnonzero(m), b)
                 + cost.charged_seconds(work.b, keys_b, np.flatnonzero(~m), b)) / n
    contenders = {k: v for k, v in cost.strategies(work, keys_a, keys_b, {}, b).items() if k.startswith("always")}
    rows = cost.measure(contenders, n, repeats=1, warm=lambda: None)
    row = cost.composed_row(rows, ("A", "B"), m.mean())
    assert row["composed"] and row["seconds_per_image"] == pytest.approx(timed_mix, rel=1e-12)
    assert row["min"] <= row["seconds_per_image"] <= row["max"]


def test_no_strategy_pays_padding(work, monkeypatch):
    """Seconds are charged per real image: a partial last batch costs its share of a full one."""
    calls = []

    def one_second_per_call(fn, *args):
        calls.append(len(args[-1]))
        return None, 1.0

    monkeypatch.setattr(timing, "timed", one_second_per_call)
    keys_a, keys_b = routing.seed_keys(range(10), 0)
    charged = cost.charged_seconds(work.a, keys_a, np.arange(10), 4)
    assert calls == [4, 4, 4]  # one shape: the last batch is padded ...
    assert charged == pytest.approx(10 / 4)  # ... and charged for its 2 real images only


def test_composed_costs_are_linear_in_the_share():
    """The one composed-cost formula (`evaluation.Options.per_image`), which the routed stage's timing check, every
    strategy's cost and every allocation policy's cost read: probe + share x A + (1 - share) x B's part."""
    units = {u: {"passes": p, "flops": 10.0 * p, "seconds": 0.01 * p}
             for u, p in (("A", 800), ("B", 46), ("B_finish", 34), ("probe", 13))}
    costs = evaluation.Options.binary(units, ("A/800", "B/30"))
    mix = evaluation.binary_mix
    assert costs.names == ("A/800", "B/30") and costs.columns("B").tolist() == [1]
    assert costs.per_image(mix(1.0), False)["passes"] == 800
    assert costs.per_image(mix(0.0), False)["passes"] == 46
    assert costs.per_image(mix(0.25), True)["passes"] == pytest.approx(13 + 0.25 * 800 + 0.75 * 34)
    assert costs.per_image(mix(0.25), True)["seconds"] == pytest.approx(0.01 * (13 + 0.25 * 800 + 0.75 * 34))
    assert costs.savings(costs.per_image(mix(0.25), True))["flops"] == pytest.approx(
        1 - (13 + 0.25 * 800 + 0.75 * 34) / 800)


def test_a_warm_up_replaces_the_compiling_round():
    """With `warm` every round is timed (none reported as a first round) and the warm-up runs once, first;
    without it a whole first round is the warm-up, reported apart."""
    calls = []
    contenders = {name: (lambda name=name: calls.append(name) or 2.0) for name in ("x", "y")}
    rows = cost.measure(contenders, 2, repeats=3, warm=lambda: calls.append("warm"))
    assert calls == ["warm"] + ["x", "y"] * 3
    assert rows["x"] == {"seconds_per_image": 1.0, "min": 1.0, "max": 1.0}
    calls.clear()
    rows = cost.measure(contenders, 2, repeats=3)
    assert calls == ["x", "y"] * 4 and rows["y"]["first_round"] == 1.0


def test_warm_up_calls_every_piece_of_work_once_at_the_batch(work):
    keys_a, keys_b = routing.seed_keys(range(3), 0)
    seconds = cost.warm_up(work, keys_a, keys_b, 4)
    assert set(seconds) == {"A", "B", "probe", "AR prefix", "router on a ready prefix", "B finish"}
    assert all(v > 0 for v in seconds.values())
