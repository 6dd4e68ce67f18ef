"""Generator families and their options (`base`: the types and the batching helper; `registry`: the families)."""

from __future__ import annotations

import jax

from hybrid_jax.config import Preset
from hybrid_jax.generators import blockwise, registry
from hybrid_jax.generators.base import (Distillation, Family, Generator, Network, batches, generate, seed_labels,
                                        stream_keys)
from hybrid_jax.generators.registry import BRIEF_PAIR, BUILTIN, STREAMS, families

a_probe = blockwise.probe
probed_options = blockwise.probed_options

__all__ = ["BRIEF_PAIR", "BUILTIN", "Distillation", "Family", "Generator", "Network", "STREAMS", "a_probe", "batches",
           "binary", "distillations", "families", "generate", "options", "probed_options", "seed_labels",
           "seed_stream", "stream_keys"]


def binary(cfg: Preset) -> tuple[Generator, Generator]:
    """The brief's two options: A at its full budget (index 0), B at its trained corrector depth (index 1)."""
    return tuple(registry.by_name(cfg, name).brief(cfg) for name in BRIEF_PAIR)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """Every option of the preset's allocation study (always with the brief's pair among them), family by family
    (`families`: the study's own, then the preset's), each family's most expensive first."""
    return tuple(g for f in families(cfg) for g in f.options(cfg))


def seed_stream(seeds, base_seed: int, family: str) -> jax.Array:
    """Per-seed keys of `family`'s stream (`stream_keys`; as `routing.seed_keys`)."""
    return stream_keys(seeds, base_seed, STREAMS[family])


def distillations(cfg: Preset) -> tuple[tuple[Family, Distillation], ...]:
    """Every family's distilled samplers of the preset (stage `distill`), each with its family."""
    return tuple((f, d) for f in families(cfg) for d in f.distillations(cfg))
