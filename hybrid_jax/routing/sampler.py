"""The routed pipeline: probe B's first k AR steps, route each seed, then finish B from its
cached prefix or hand the seed to A.

Seed keys (documented, stable): seed s under base seed b has key `fold_in(key(b), s)`;
Model A draws from `fold_in(that, 1)`, Model B from `fold_in(that, 2)`. So an integer seed
fully determines both images, at any batch size or batch composition.

Subsets are padded to the next size of the form 2^j or 3 x 2^j (1, 2, 3, 4, 6, 8, 12, ...;
`data.option_batches`), so a batch of n compiles at most about 2 log2(n) shapes of each half
however the router splits it, and padding adds less than half to a half's work.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import generators, sharding, xla
from hybrid_jax.config import Geometry
from hybrid_jax.data import option_batches
from hybrid_jax.generators import model_a, model_b
from hybrid_jax.models import class_labels
from hybrid_jax.probe import features as features_lib
from hybrid_jax.routing import router as router_lib


def seed_keys(seeds: Sequence[int], base_seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """Per-seed keys (keys_a, keys_b), each [n]."""
    return tuple(generators.seed_stream(seeds, base_seed, m) for m in generators.BRIEF_PAIR)


@dataclasses.dataclass(frozen=True)
class RoutedOutput:
    images: np.ndarray  # [n, S, S, 3], the samplers' geometry
    to_a: np.ndarray  # [n] bool, True where Model A made the image
    p_cheap: np.ndarray  # [n] router's P(cheap_ok)


@dataclasses.dataclass(frozen=True)
class RoutedSampler:
    probe: Callable  # jitted (params_b, keys_b[, labels]) -> (Prefix, features [n, F], p_cheap [n], to_a [n])
    decide: Callable  # jitted Prefix -> (features [n, F], p_cheap [n], to_a [n])
    run: Callable  # (params_a, params_b, keys_a, keys_b[, labels: each seed's class]) -> RoutedOutput
    sampler_a: model_a.Sampler
    sampler_b: model_b.Sampler


def _decide_fn(ensemble: router_lib.TreeEnsemble, feature_idx: Sequence[int], geometry: Geometry,
               num_classes: int = 1) -> Callable:
    cols = jnp.asarray(feature_idx, jnp.int32)

    def decide(prefix: model_b.Prefix):
        feats = features_lib.compute(prefix, geometry, num_classes)
        p = router_lib.jax_predict_proba(ensemble, feats[:, cols])
        return feats, p, p < ensemble.threshold_route

    return decide


def make_decide(ensemble: router_lib.TreeEnsemble, feature_idx: Sequence[int], geometry: Geometry,
                num_classes: int = 1) -> Callable:
    """jitted Prefix -> (all candidate features, P(cheap_ok), to_a): the router's own work on a ready prefix."""
    return xla.jit(_decide_fn(ensemble, feature_idx, geometry, num_classes))


def make_probe(sampler_b: model_b.Sampler, ensemble: router_lib.TreeEnsemble, feature_idx: Sequence[int],
               prefix_steps: int, num_classes: int = 1) -> Callable:
    """jitted probe: B's prefix, all candidate features (the class one-hot last with several classes), and
    the in-graph routing decision."""
    decide = _decide_fn(ensemble, feature_idx, sampler_b.geometry, num_classes)

    def probe(params_b, keys_b, labels=None):
        prefix = sampler_b.ar_prefix(params_b, keys_b, prefix_steps, labels)
        return (prefix, *decide(prefix))

    return xla.jit(probe)


def generate_split(sampler_a: model_a.Sampler, sampler_b: model_b.Sampler, params_a, params_b, keys_a, keys_b,
                   to_a: np.ndarray, prefix: model_b.Prefix | None = None,
                   mesh: jax.sharding.Mesh | None = None, labels=None) -> np.ndarray:
    """Images where A makes the `to_a` seeds and B the rest (from `prefix` when given, else from scratch);
    with a mesh, each side's batch is laid over it (padded to a multiple of its size). `labels`: each
    seed's class (None: one class; a prefix carries its own)."""
    n = keys_b.shape[0]
    labels = class_labels(labels, n)
    on_mesh = lambda tree, axes=None: sharding.constrain_batch(tree, mesh, axes)
    finish_b = ((lambda i: sampler_b.finish(params_b, on_mesh(prefix.take(i), prefix.batch_axes())))
                if prefix is not None else lambda i: sampler_b.sample_keys(params_b, *on_mesh((keys_b[i], labels[i]))))
    images = np.zeros((n, *sampler_b.geometry.image_shape), np.float32)
    make = (finish_b, lambda i: sampler_a.sample_keys(params_a, *on_mesh((keys_a[i], labels[i]))))  # by to_a
    for k, idx, padded in option_batches(np.asarray(to_a, int), multiple=1 if mesh is None else mesh.size):
        images[idx] = sharding.to_host(make[k](jnp.asarray(padded)))[: idx.size]
    return images


def make_routed_sampler(sampler_a: model_a.Sampler, sampler_b: model_b.Sampler,
                        ensemble: router_lib.TreeEnsemble, feature_idx: Sequence[int],
                        prefix_steps: int, mesh: jax.sharding.Mesh | None = None,
                        num_classes: int = 1) -> RoutedSampler:
    """With a mesh, `run` is data-parallel over it (params replicated, seeds sharded; a batch of any size,
    padded to a multiple of the mesh size) and gives the same images and decisions as on one device."""
    probe = make_probe(sampler_b, ensemble, feature_idx, prefix_steps, num_classes)

    def run(params_a, params_b, keys_a, keys_b, labels=None) -> RoutedOutput:
        params_a, params_b = sharding.replicate((params_a, params_b), mesh)
        (keys_a, keys_b, labels), n = sharding.pad_batch((keys_a, keys_b, class_labels(labels, keys_b.shape[0])), mesh)
        prefix, _, p, to_a = probe(params_b, *sharding.shard_batch((keys_b, labels), mesh))
        to_a, p = sharding.to_host((to_a, p))
        images = generate_split(sampler_a, sampler_b, params_a, params_b, keys_a, keys_b, to_a, prefix, mesh, labels)
        return RoutedOutput(images[:n], to_a[:n], p[:n])

    return RoutedSampler(probe=probe, decide=make_decide(ensemble, feature_idx, sampler_b.geometry, num_classes),
                         run=run, sampler_a=sampler_a, sampler_b=sampler_b)
