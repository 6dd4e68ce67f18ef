"""The options a router chooses among: each a value with a name, a jitted per-key sampler and its cost.

Model A at each step budget and Model B at each corrector depth are options of one type, so
routing, cost and quality iterate over a tuple of them instead of naming A and B. The brief's
binary routing is the two-option case (A at its full budget, B at its trained depth). Later
hybrid families add options, not branches.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import features, geometry, model_a, model_b, timing, xla
from hybrid_jax.config import Preset
from hybrid_jax.data import fixed_batches

STREAMS = {"model_a": 1, "model_b": 2}  # trained model -> the seed-key stream its options draw from


@dataclasses.dataclass(frozen=True)
class Generator:
    """One option: `sample_keys(params, keys[n][, labels[n]]) -> images [n, S, S, 3]` (S: the geometry's; labels:
    each key's class, `seed_labels`, needed with several classes), pure and jitted.

    `model` names the trained parameters it samples with ({"model_a", "model_b"}: a dict of trained
    params holds B's as {"ar", "corrector"}) and so the seed-key stream it draws from; `pass_counts`
    counts its network passes per image by network (keys of `cost.pass_flops`), so passes and FLOPs
    follow from data.
    """

    name: str
    model: str
    sample_keys: Callable
    pass_counts: dict[str, int]
    probe: str = ""  # the probe it continues from: "B" (B's AR prefix), "A" (A's own probe), "" (from scratch)
    finish: Callable | None = None  # (params, that probe's state) -> images: the rest of `sample_keys`'s work

    @property
    def passes(self) -> int:
        return sum(self.pass_counts.values())

    def flops(self, pass_flops: dict[str, float]) -> float:
        return float(sum(n * pass_flops[net] for net, n in self.pass_counts.items()))



def model_a_option(cfg: Preset, budget: int) -> Generator:
    s = model_a.make_sampler(cfg.model_a, budget, geometry=cfg.geometry, num_classes=cfg.data.num_classes)
    return Generator(f"A/{budget} steps", "model_a", s.sample_keys, {"a_unet": s.passes})


def model_b_option(cfg: Preset, depth: int) -> Generator:
    s = model_b.make_sampler(cfg.model_b, cfg.corrector, depth, geometry=cfg.geometry,
                             num_classes=cfg.data.num_classes)
    return Generator(f"B/corrector {depth}", "model_b", s.sample_keys,
                     {"b_ar_step": cfg.geometry.num_patches, "corrector_unet": depth}, probe="B", finish=s.finish)


def model_a_probed_option(cfg: Preset, budget: int) -> Generator:
    """A at `budget` steps per block after A's own probe (`model_a.make_probed_sampler`): probe, then the rest."""
    a = cfg.allocation
    s = model_a.make_probed_sampler(cfg.model_a, budget, a.a_probe_budget, a.a_probe_steps,
                                    num_classes=cfg.data.num_classes, geometry=cfg.geometry)
    return Generator(f"A/{budget} steps after probe", "model_a", s.sample_keys, {"a_unet": s.passes}, probe="A",
                     finish=s.finish)


def binary(cfg: Preset) -> tuple[Generator, Generator]:
    """The brief's two options: A at its full budget (index 0), B at its trained corrector depth (index 1)."""
    return model_a_option(cfg, cfg.model_a.steps_per_block), model_b_option(cfg, cfg.corrector.start_step)


def _budgets(cfg: Preset) -> list[int]:
    return sorted(set(cfg.allocation.a_budgets) | {cfg.model_a.steps_per_block}, reverse=True)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """Every option of the preset's allocation study (always with the brief's pair among them), most
    expensive A first, then B from the deepest corrector."""
    depths = set(cfg.allocation.b_depths) | {cfg.corrector.start_step}
    a = [model_a_option(cfg, b) for b in _budgets(cfg)]
    b = [model_b_option(cfg, d) for d in sorted(depths, reverse=True)]
    return tuple(a + b)


def a_probe(cfg: Preset) -> Callable:
    """jitted (params_a, keys [n][, labels]) -> (model_a.Probe, [n, len(features.A_PROBE)] features): A's own probe
    on each key, which every "after probe" option continues from (`generate(..., probes={"A": probe})`), and the
    features read off it."""
    a = cfg.allocation
    probed = model_a.make_probed_sampler(cfg.model_a, cfg.model_a.steps_per_block, a.a_probe_budget, a.a_probe_steps,
                                         num_classes=cfg.data.num_classes, geometry=cfg.geometry)
    mask = geometry.block_masks(cfg.geometry)[0]

    def run(params, keys, labels=None):
        state = probed.probe(params, keys, labels)
        return state, features.a_probe(state.x0, mask)

    return xla.jit(run)


def probed_options(cfg: Preset) -> tuple[Generator, ...]:
    """A at each of the preset's step budgets after A's own probe (the cascade's second stage), most expensive first."""
    return tuple(model_a_probed_option(cfg, b) for b in _budgets(cfg))


def generate(opts, params: dict, seeds, choice, *, base_seed: int, batch_size: int, num_classes: int = 1,
             probes: dict | None = None) -> np.ndarray:
    """Each seed's image from the option it was allocated (`choice` [n] indexes `opts`): seeds grouped by
    option, each group run in batches of exactly `batch_size` (the last padded), so every option compiles one
    shape whatever the mix, and a seed's image is its option's own image for it, alone or in any mix.

    `probes` ({"B": model_b.Prefix, "A": model_a.Probe}, each over every seed in `seeds` order, on their seed
    streams): the probes already run for the allocation; an option that continues one (`Generator.probe`)
    finishes from its state instead of starting over, so its image is the same and the probe is not paid twice."""
    seeds, choice = np.asarray(seeds), np.asarray(choice)
    chex.assert_equal_shape((seeds, choice))
    probes = probes or {}
    out = None
    for k in np.unique(choice):
        g = opts[k]
        for part, images, _ in batches(g, params[g.model], seeds, np.flatnonzero(choice == k), base_seed=base_seed,
                                       batch_size=batch_size, num_classes=num_classes, probe=probes.get(g.probe)):
            out = np.zeros((len(seeds), *images.shape[1:]), images.dtype) if out is None else out
            out[part] = images
    return out


def batches(g: Generator, params, seeds, idx, *, base_seed: int, batch_size: int, num_classes: int = 1,
            probe=None):
    """Yields (part, images [len(part), S, S, 3], seconds) for option `g`'s images of seeds[idx], in batches of
    exactly `batch_size` (the last padded): `part` indexes `seeds`; `seconds` is the batch's wall time, blocked
    until ready (the first call of a shape compiles). With `probe` (the state of the probe `g` continues, over
    every seed in `seeds` order) `g` finishes from it instead of starting over (the same image)."""
    seeds = np.asarray(seeds)
    for _, part, padded in fixed_batches(np.asarray(idx), batch_size):
        images, seconds = timing.timed(*(
            (g.finish, params, probe.take(padded)) if probe is not None and g.finish is not None
            else (g.sample_keys, params, seed_stream(seeds[padded], base_seed, g.model),
                  seed_labels(seeds[padded], num_classes))))
        yield part, np.asarray(images)[: len(part)], seconds


def seed_labels(seeds, num_classes: int) -> jax.Array:
    """Class label of each seed: seed mod num_classes (int32 [n]). Balanced over any run of consecutive
    seeds, a function of the seed alone (so of no batch), and all zeros with one class."""
    return jnp.asarray(np.asarray(seeds, np.int64) % num_classes, jnp.int32)


def seed_stream(seeds, base_seed: int, model: str) -> jax.Array:
    """Per-seed keys of one model's stream: fold_in(fold_in(key(base), seed), stream) (as `routing.seed_keys`)."""
    base = jax.random.key(base_seed)
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(base, s), STREAMS[model]))(
        jnp.asarray(seeds, jnp.uint32))
