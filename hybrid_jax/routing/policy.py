"""The deployed allocation policy: the allocate stage's per-seed policy fitted on every seed, as arrays.

A policy is a list of stages, each reading one probe's features ("B": B's AR prefix, as the router;
a family's own probe, e.g. "A": A's first steps) and holding, per option it may pick (cheapest first),
a gradient-boosting P(option acceptable | features) exported to `router.TreeEnsemble`. `choose` takes,
per seed, the cheapest option of the first stage whose probability reaches the threshold; where none
does, the next stage decides; where no stage does, the fallback option. The cascade is the stages
("B": B's options, then the first family probe's "after probe" budgets, fallback its costliest);
without family-probe options it is the learned allocation's single "B" stage over every option. The
same rule as `allocation.predicted`, in-graph, so probe -> allocate -> sample stays on device. Saved as one
npz + one JSON, read without sklearn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hybrid_jax import io
from hybrid_jax.routing import allocation
from hybrid_jax.routing import router as router_lib

FORMAT_VERSION = 1
TREES_FILE = "policy_trees.npz"
META_FILE = "policy.json"


class PolicyError(ValueError):
    """A policy that cannot be fitted, saved, read or applied as asked."""


@struct.dataclass
class PolicyStage:
    trees: tuple[router_lib.TreeEnsemble, ...]  # per option: P(acceptable | this probe's features)
    options: tuple[int, ...] = struct.field(pytree_node=False)  # option indices, cheapest first
    probe: str = struct.field(pytree_node=False)  # whose probe features it reads ("B", a family probe's name)


@struct.dataclass
class Policy:
    stages: tuple[PolicyStage, ...]
    threshold: jax.Array  # f32 []: an option is taken where P(acceptable) >= threshold
    option_names: tuple[str, ...] = struct.field(pytree_node=False)
    fallback: int = struct.field(pytree_node=False)  # the option where no stage's probability reaches it


def _tree_model(X: np.ndarray, y: np.ndarray, names: Sequence[str], gb: Mapping, seed: int) -> router_lib.TreeEnsemble:
    """P(y | X) as trees: a GB fit (`allocation.fit_acceptable`), or its constant rate where y has one class."""
    model = allocation.fit_acceptable(X, y, gb, seed)
    if isinstance(model, float):
        return router_lib.constant_ensemble(model, names)
    ident = router_lib.Router(tuple(names), np.zeros(X.shape[1]), np.ones(X.shape[1]), model, 0.5)
    return router_lib.export_trees(ident)


def fit(features: Mapping[str, np.ndarray], feature_names: Mapping[str, Sequence[str]], quality: np.ndarray,
        opts: allocation.Options, tau: float | np.ndarray, threshold: float, *, gb: Mapping | None = None,
        seed: int = 0, human: np.ndarray | None = None) -> Policy:
    """The deployed policy on every seed: `features[probe]` [n, F] per probe (the router's, "B", and each family
    probe that options of `opts` continue), `quality` [n, K] of each option's image, `tau` the acceptability margin
    (a number, or each seed's [n]), `human` people's verdicts where they exist (`allocation.acceptable`). With
    family probes, the cascade through the first (`allocation.cascade_name(0, ...)`); without, the learned
    allocation over every option."""
    gb = dict(gb or allocation.DEFAULT_GB)
    ok = allocation.acceptable(quality, tau, human)
    order = opts.cheapest_first
    own = allocation.family_probes(opts)
    if own and own[0] not in features:
        raise PolicyError(f"options continue the {own[0]!r} probe but no {own[0]!r}-probe features were given")
    router = allocation.ROUTER_PROBE
    plan = ([(router, opts.columns(router)), (own[0], opts.columns(own[0]))] if own
            else [(router, np.arange(len(opts.names)))])
    stages = []
    for probe, cols in plan:
        cols = order[np.isin(order, cols)]  # cheapest first
        trees = tuple(_tree_model(features[probe], ok[:, k], feature_names[probe], gb, seed) for k in cols)
        stages.append(PolicyStage(trees=trees, options=tuple(int(k) for k in cols), probe=probe))
    return Policy(stages=tuple(stages), threshold=jnp.float32(threshold), option_names=tuple(opts.names),
                  fallback=stages[-1].options[-1])


def choose(policy: Policy, features: Mapping[str, jax.Array]) -> jax.Array:
    """[n] int32 option index per seed from each probe's features (`features["B"]`, and a family probe's where a
    stage reads it). Pure and jittable."""
    missing = {s.probe for s in policy.stages} - set(features)
    if missing:
        raise PolicyError(f"the policy reads the {sorted(missing)} probe features; pass them as features[...]")
    n = next(iter(features.values())).shape[0]
    choice = jnp.full((n,), policy.fallback, jnp.int32)
    for stage in reversed(policy.stages):  # an earlier stage overrides the later ones where it decides
        p = jnp.stack([router_lib.jax_predict_proba(t, features[stage.probe]) for t in stage.trees], axis=1)
        ok = p >= policy.threshold
        pick = jnp.asarray(stage.options, jnp.int32)[jnp.argmax(ok, axis=1)]
        choice = jnp.where(ok.any(axis=1), pick, choice)
    return choice


def save(policy: Policy, directory: str | Path, **meta) -> Path:
    """Write `policy_trees.npz` and `policy.json` (atomically; the JSON holds a SHA-256 of the npz)."""
    arrays = {f"{i}/{j}/{k}": v for i, s in enumerate(policy.stages) for j, t in enumerate(s.trees)
              for k, v in router_lib.ensemble_arrays(t).items()}
    meta = {"format": FORMAT_VERSION, "option_names": list(policy.option_names), "fallback": policy.fallback,
            "threshold": float(policy.threshold),
            "stages": [{"probe": s.probe, "options": list(s.options), "feature_names": list(s.trees[0].feature_names)}
                       for s in policy.stages], **meta}
    return io.write_npz_pair(directory, TREES_FILE, META_FILE, arrays, meta)


def load(directory: str | Path) -> tuple[Policy, dict]:
    """(Policy, metadata) written by `save`; no sklearn needed."""
    meta, arrays = io.read_npz_pair(directory, TREES_FILE, META_FILE, FORMAT_VERSION, "allocation policy",
                                    PolicyError, "re-run the allocate stage")
    stages = tuple(PolicyStage(
        trees=tuple(router_lib.ensemble_from_arrays({k: arrays[f"{i}/{j}/{k}"] for k in router_lib.ENSEMBLE_ARRAYS},
                                                    s["feature_names"]) for j in range(len(s["options"]))),
        options=tuple(s["options"]), probe=s["probe"]) for i, s in enumerate(meta["stages"]))
    policy = Policy(stages=stages, threshold=jnp.float32(meta["threshold"]),
                    option_names=tuple(meta["option_names"]), fallback=int(meta["fallback"]))
    return policy, meta

