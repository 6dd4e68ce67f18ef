"""The options a router chooses among: each a value with a name, a jitted per-key sampler and its cost.

Model A at each step budget and Model B at each corrector depth are options of one type, so
routing, cost and quality iterate over a tuple of them instead of naming A and B. The brief's
binary routing is the two-option case (A at its full budget, B at its trained depth). Later
hybrid families add options, not branches.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from hybrid_jax import model_a, model_b
from hybrid_jax.config import Preset
from hybrid_jax.models.decoder import SEQ_LEN

STREAMS = {"model_a": 1, "model_b": 2}  # trained model -> the seed-key stream its options draw from


@dataclasses.dataclass(frozen=True)
class Generator:
    """One option: `sample_keys(params, keys[n]) -> images [n, 32, 32, 3]`, pure and jitted.

    `model` names the trained parameters it samples with ({"model_a", "model_b"}: a dict of trained
    params holds B's as {"ar", "corrector"}) and so the seed-key stream it draws from; `pass_counts`
    counts its network passes per image by network (keys of `cost.pass_flops`), so passes and FLOPs
    follow from data.
    """

    name: str
    model: str
    sample_keys: Callable
    pass_counts: dict[str, int]

    @property
    def passes(self) -> int:
        return sum(self.pass_counts.values())

    def flops(self, pass_flops: dict[str, float]) -> float:
        return float(sum(n * pass_flops[net] for net, n in self.pass_counts.items()))



def model_a_option(cfg: Preset, budget: int) -> Generator:
    s = model_a.make_sampler(cfg.model_a, budget)
    return Generator(f"A/{budget} steps", "model_a", s.sample_keys, {"a_unet": s.passes})


def model_b_option(cfg: Preset, depth: int) -> Generator:
    s = model_b.make_sampler(cfg.model_b, cfg.corrector, depth)
    return Generator(f"B/corrector {depth}", "model_b", s.sample_keys, {"b_ar_step": SEQ_LEN, "corrector_unet": depth})


def binary(cfg: Preset) -> tuple[Generator, Generator]:
    """The brief's two options: A at its full budget (index 0), B at its trained corrector depth (index 1)."""
    return model_a_option(cfg, cfg.model_a.steps_per_block), model_b_option(cfg, cfg.corrector.start_step)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """Every option of the preset's allocation study (always with the brief's pair among them), most
    expensive A first, then B from the deepest corrector."""
    budgets = set(cfg.allocation.a_budgets) | {cfg.model_a.steps_per_block}
    depths = set(cfg.allocation.b_depths) | {cfg.corrector.start_step}
    a = [model_a_option(cfg, b) for b in sorted(budgets, reverse=True)]
    b = [model_b_option(cfg, d) for d in sorted(depths, reverse=True)]
    return tuple(a + b)


def seed_stream(seeds, base_seed: int, model: str) -> jax.Array:
    """Per-seed keys of one model's stream: fold_in(fold_in(key(base), seed), stream) (as `routing.seed_keys`)."""
    base = jax.random.key(base_seed)
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(base, s), STREAMS[model]))(
        jnp.asarray(seeds, jnp.uint32))
