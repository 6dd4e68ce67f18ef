"""Generator families and their options (`base`: the types and the batching helper; `registry`: the families)."""

from __future__ import annotations

import jax

from hybrid_jax.config import Preset
from hybrid_jax.generators import registry
from hybrid_jax.generators.base import (Distillation, Family, Generator, Network, Probe, batches, generate,
                                        seed_labels, stream_keys)
from hybrid_jax.generators.registry import BRIEF_PAIR, BUILTIN, STREAMS, families

__all__ = ["BRIEF_PAIR", "BUILTIN", "Distillation", "Family", "Generator", "Network", "Probe", "STREAMS",
           "allocation_options", "batches", "binary", "distillations", "families", "generate", "options", "probes",
           "seed_labels", "seed_stream", "stream_keys"]


def binary(cfg: Preset) -> tuple[Generator, Generator]:
    """The brief's two options: A at its full budget (index 0), B at its trained corrector depth (index 1)."""
    return tuple(registry.by_name(cfg, name).brief(cfg) for name in BRIEF_PAIR)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """Every option of the preset's allocation study (always with the brief's pair among them), family by family
    (`families`: the study's own, then the preset's), each family's most expensive first."""
    return tuple(g for f in families(cfg) for g in f.options(cfg))


def allocation_options(cfg: Preset) -> tuple[Generator, ...]:
    """Every option the allocation compares, in its order: `options`, then each family probe's "after probe"
    options (`probes`); the deployed policy's option indices refer to this order."""
    return options(cfg) + tuple(g for _, p in probes(cfg) for g in p.options)


def probes(cfg: Preset) -> tuple[tuple[Family, Probe], ...]:
    """Every family's own probe of the preset (those that have one), each with its family: the allocation runs each
    once per seed and offers the options that continue it."""
    return tuple((f, p) for f in families(cfg) if (p := f.probe(cfg)) is not None)


def seed_stream(seeds, base_seed: int, family: str) -> jax.Array:
    """Per-seed keys of `family`'s stream (`stream_keys`; as `routing.seed_keys`)."""
    return stream_keys(seeds, base_seed, STREAMS[family])


def distillations(cfg: Preset) -> tuple[tuple[Family, Distillation], ...]:
    """Every family's distilled samplers of the preset (stage `distill`), each with its family."""
    return tuple((f, d) for f in families(cfg) for d in f.distillations(cfg))
