"""Measured cost of the routing strategies, every one under the same batching policy.

Every piece of work (A from scratch, B from scratch, B's probe, B finished from the probe's
cached prefix) runs in batches of one fixed size, so each compiles once. A partial batch is
padded, and every strategy is charged only for its real images (a call on r real images of
b is charged r/b of its time), as if the free slots were filled by the next seeds of a
stream: no strategy pays padding that another does not, and a routed strategy's seconds
agree with its passes and FLOPs. Seconds are medians over rounds (strategies interleaved so
that drifts of a shared machine hit all alike), after compilation, blocked until ready.
Network passes and FLOPs per image come from the samplers' pass counts and XLA's cost
analysis of one pass of each network at batch 1 (see `timing`).
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import generators, progress, routing, sharding, timing, xla
from hybrid_jax.config import Preset
from hybrid_jax.data import fixed_batches, option_batches
from hybrid_jax.models import class_labels

log = logging.getLogger("hybrid_jax.cost")

UNITS = ("A", "B", "B_finish", "probe")  # per-image work every strategy is made of


def pass_flops(cfg: Preset, trained: dict) -> dict[str, float]:
    """FLOPs of one pass of each unit of the networks of the families in `trained` ({family name: the params its
    options sample with}) at batch 1, at the preset's geometry (`Family.pass_flops`)."""
    return {unit: f for fam in generators.families(cfg) if fam.name in trained
            for unit, f in fam.pass_flops(cfg, trained[fam.name]).items()}


def image_flops(cfg: Preset, f: dict[str, float]) -> dict[str, float]:
    """FLOPs per image of the brief's two options (A, then B), from `pass_flops` (passes x one pass: XLA's cost
    analysis counts a loop body once, not times its trip count)."""
    return dict(zip(("A", "B"), (g.flops(f) for g in generators.binary(cfg))))


def unit_work(cfg: Preset, f: dict[str, float]) -> dict[str, dict[str, float]]:
    """Passes and FLOPs per image of each unit of work: the brief's two options from scratch (each option's own pass
    counts), B finished from the probe's prefix (B less the k AR steps the probe ran), and the probe (k AR steps +
    one teacher-forcing pass)."""
    k = cfg.router.prefix_steps
    a, b = generators.binary(cfg)
    return {"A": {"passes": a.passes, "flops": a.flops(f)},
            "B": {"passes": b.passes, "flops": b.flops(f)},
            "B_finish": {"passes": b.passes - k, "flops": b.flops(f) - k * f["b_ar_step"]},
            "probe": {"passes": k + 1, "flops": k * f["b_ar_step"] + f["b_teacher_forcing"]}}


@dataclasses.dataclass(frozen=True)
class Work:
    """The jitted pieces of work, each called at one batch size."""

    # each takes a seed batch: keys [b] and their class labels [b] (None: one class)
    a: Callable  # (keys_a, labels) -> images
    b: Callable  # (keys_b, labels) -> images
    probe: Callable  # (keys_b, labels) -> (Prefix, features, p_cheap, to_a): AR prefix + features + router
    prefix: Callable  # (keys_b, labels) -> Prefix: the AR prefix alone
    decide: Callable  # Prefix -> (features, p_cheap, to_a): the router's own overhead on a ready prefix
    finish: Callable  # (Prefix, idx [b]) -> images: B continued from the prefix of the seeds at idx


def make_work(routed: routing.RoutedSampler, params_a, params_b, prefix_steps: int,
              mesh: jax.sharding.Mesh | None = None) -> Work:
    """The pieces of work; with a mesh, each runs data-parallel over it (params replicated, every
    batch sharded, a finished prefix's subset laid over the mesh again), the batch a multiple of its size."""
    sa, sb = routed.sampler_a, routed.sampler_b
    params_a, params_b = sharding.replicate((params_a, params_b), mesh)
    shard = lambda keys, labels: sharding.shard_batch((keys, class_labels(labels, keys.shape[0])), mesh)
    finish = xla.jit(lambda p, prefix, idx: sb.finish(p, sharding.constrain_batch(prefix.take(idx), mesh,
                                                                                  prefix.batch_axes())))
    prefix_only = xla.jit(lambda p, keys, labels: sb.ar_prefix(p, keys, prefix_steps, labels))
    return Work(a=lambda keys, labels=None: sa.sample_keys(params_a, *shard(keys, labels)),
                b=lambda keys, labels=None: sb.sample_keys(params_b, *shard(keys, labels)),
                probe=lambda keys, labels=None: routed.probe(params_b, *shard(keys, labels)),
                prefix=lambda keys, labels=None: prefix_only(params_b, *shard(keys, labels)),
                decide=routed.decide, finish=lambda prefix, idx: finish(params_b, prefix, idx))


def _take(keys, labels, idx: np.ndarray) -> tuple:
    """(keys[idx], labels[idx]) of a seed batch; labels None (one class) are zeros."""
    return keys[idx], class_labels(labels, keys.shape[0])[idx]


def charged_seconds(fn, keys, sel: np.ndarray, b: int, labels=None) -> float:
    """Seconds charged for `fn` over keys[sel] (and their labels) in batches of b (padded, charged per real item)."""
    return sum(timing.timed(fn, *_take(keys, labels, padded))[1] * len(idx) / b
               for _, idx, padded in fixed_batches(sel, b))


def _routed(work: Work, keys_a, keys_b, to_a: np.ndarray, b: int, labels=None) -> float:
    """Seconds charged for the routed pipeline: probe each batch, finish its B seeds from the prefix, A the rest
    (each side of the batch padded to b by `data.option_batches`, charged per real seed)."""
    total = 0.0
    for _, idx, padded in fixed_batches(np.arange(len(to_a)), b):
        (prefix, *_), dt = timing.timed(work.probe, *_take(keys_b, labels, padded))
        total += dt * len(idx) / b
        sides = ((work.finish, lambda rows: (prefix, jnp.asarray(rows))),  # by to_a: B from the batch's prefix,
                 (work.a, lambda rows: _take(keys_a, labels, idx[rows])))  # A from scratch
        for k, rows, rows_padded in option_batches(np.asarray(to_a[idx], int), b):
            fn, args = sides[k]
            total += timing.timed(fn, *args(rows_padded))[1] * len(rows) / b
    return total


def _ready_prefixes(work: Work, keys_b, n: int, b: int, labels=None) -> list:
    return [work.prefix(*_take(keys_b, labels, padded)) for _, _, padded in fixed_batches(np.arange(n), b)]


def _on_prefixes(fn: Callable, prefixes: list, n: int, b: int, *args) -> float:
    """Seconds charged for `fn(prefix, *args)` over ready prefixes of n seeds in batches of b (each charged per real
    seed)."""
    return sum(timing.timed(fn, p, *args)[1] * min(b, n - i * b) / b for i, p in enumerate(prefixes))


def _decide_seconds(work: Work, prefixes: list, n: int, b: int) -> float:
    return _on_prefixes(work.decide, prefixes, n, b)


def _finish_seconds(work: Work, prefixes: list, n: int, b: int) -> float:
    return _on_prefixes(work.finish, prefixes, n, b, jnp.arange(b))


def strategies(work: Work, keys_a, keys_b, decisions: dict[str, np.ndarray], b: int,
               labels=None, options: tuple[str, str] = ("A", "B")) -> dict[str, Callable[[], float]]:
    """name -> () -> seconds charged over all n seeds. `decisions`: each routed strategy's to_a [n] (probe paid).
    `labels`: each seed's class (None: one). `options`: the two options' names (A's role, then B's): the fixed
    strategies are "always <name>". A mix without a probe (the labels' oracle) is not timed again: per-image
    charging makes it exactly its share of these rows (`composed_row`)."""
    n = keys_b.shape[0]
    every = np.arange(n)
    prefixes = _ready_prefixes(work, keys_b, n, b, labels)
    fixed = lambda fn, keys, sel: charged_seconds(fn, keys, sel, b, labels)
    out = {f"always {name}": lambda fn=fn, keys=keys: fixed(fn, keys, every)
           for name, fn, keys in zip(options, (work.a, work.b), (keys_a, keys_b))}
    out.update({name: lambda m=to_a: _routed(work, keys_a, keys_b, m, b, labels) for name, to_a in decisions.items()})
    out.update({"probe": lambda: fixed(work.probe, keys_b, every),
                "AR prefix": lambda: fixed(work.prefix, keys_b, every),
                "router on a ready prefix": lambda: _decide_seconds(work, prefixes, n, b),
                "B finish": lambda: _finish_seconds(work, prefixes, n, b)})
    return out


def composed_row(rows: dict[str, dict], options: tuple[str, str], share_to_a: float) -> dict:
    """The row of a strategy that sends `share_to_a` of the seeds to the first option from scratch and the rest to
    the second, with no probe: under per-image charging its seconds are that mix of the two "always" rows (median,
    min and max alike), so it is composed from them, not timed again ("composed": True)."""
    fixed = [rows[f"always {name}"] for name in options]
    return {k: float(share_to_a * fixed[0][k] + (1.0 - share_to_a) * fixed[1][k])
            for k in ("seconds_per_image", "min", "max")} | {"composed": True}


def early_seconds(probe: Callable, finish: Callable, params_b, keys, b: int, repeats: int, labels=None
                  ) -> dict[str, float]:
    """Seconds per image of the early exit's two units of work on `keys` in batches of b (charged per real image),
    median over `repeats` rounds after a compiling call of each: its short probe (`probe(params_b, keys, labels) ->
    (Prefix, entropy)`) and B finished from the short prefix (`finish(params_b, Prefix)`)."""
    n, sel = keys.shape[0], np.arange(keys.shape[0])
    prefixes = [probe(params_b, *_take(keys, labels, padded))[0] for _, _, padded in fixed_batches(sel, b)]
    timing.timed(finish, params_b, prefixes[0])
    rounds = {"probe_early": [], "B_finish_early": []}
    for _ in range(repeats):
        rounds["probe_early"].append(charged_seconds(lambda k, l: probe(params_b, k, l), keys, sel, b, labels) / n)
        rounds["B_finish_early"].append(_on_prefixes(lambda p: finish(params_b, p), prefixes, n, b) / n)
    return {k: statistics.median(v) for k, v in rounds.items()}


def warm_up(work: Work, keys_a, keys_b, b: int, labels=None) -> dict[str, float]:
    """Compiles every piece of work at batch b with one call on the first b seeds (padded); returns each call's
    seconds (compile + one run), which `measure` then need not spend a whole round on."""
    padded = np.resize(np.arange(min(b, keys_b.shape[0])), b)
    (ka, labels_b), (kb, _) = _take(keys_a, labels, padded), _take(keys_b, labels, padded)
    seconds = {}
    _, seconds["A"] = timing.timed(work.a, ka, labels_b)
    _, seconds["B"] = timing.timed(work.b, kb, labels_b)
    _, seconds["probe"] = timing.timed(work.probe, kb, labels_b)
    prefix, seconds["AR prefix"] = timing.timed(work.prefix, kb, labels_b)
    _, seconds["router on a ready prefix"] = timing.timed(work.decide, prefix)
    _, seconds["B finish"] = timing.timed(work.finish, prefix, jnp.arange(b))
    return seconds


def measure(contenders: dict[str, Callable[[], float]], n: int, repeats: int,
            warm: Callable[[], object] | None = None) -> dict[str, dict]:
    """Seconds per image of each contender over `repeats` interleaved rounds (median, min and max over rounds),
    after a warm-up: `warm` (e.g. `warm_up`, one compiling call per program) or, without it, a whole round of
    every contender, whose seconds are reported as "first_round"."""
    if warm is not None:
        warm()
    rounds = [(r, name) for r in range(repeats + (warm is None)) for name in contenders]
    first, runs = {}, {name: [] for name in contenders}
    for r, name in progress.track(rounds, len(rounds), "cost", "measurement", log):  # minutes each at paper scale
        seconds = contenders[name]() / n
        if r or warm is not None:
            runs[name].append(seconds)
        else:
            first[name] = seconds
    return {name: {"seconds_per_image": statistics.median(r), "min": min(r), "max": max(r),
                   **({"first_round": first[name]} if name in first else {})} for name, r in runs.items()}


def unit_costs(measured: dict[str, dict], work_units: dict[str, dict],
               options: tuple[str, str] = ("A", "B")) -> dict[str, dict[str, float]]:
    """Passes, FLOPs and measured seconds per image of each unit of work (`options` as in `strategies`)."""
    seconds = {"A": f"always {options[0]}", "B": f"always {options[1]}", "B_finish": "B finish", "probe": "probe"}
    return {u: {**work_units[u], "seconds": measured[seconds[u]]["seconds_per_image"]} for u in UNITS}


def consistency(routed_out: routing.RoutedOutput, images_a: np.ndarray, images_b: np.ndarray) -> dict:
    """Max |routed image - the model's own image (`images_a`, `images_b`: the seeds stage's)| for the seeds of each
    side (should be ~0)."""
    n = len(routed_out.images)
    ref = np.where(routed_out.to_a[:, None, None, None], images_a[:n], images_b[:n])
    diff = np.abs(routed_out.images - ref).max(axis=(1, 2, 3))
    return {"n": n, "max_abs_diff_a": float(diff[routed_out.to_a].max(initial=0.0)),
            "max_abs_diff_b": float(diff[~routed_out.to_a].max(initial=0.0))}
