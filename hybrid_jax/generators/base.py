"""What every generator family is made of: options (`Generator`), trained networks (`Network`), the family
(`Family`) that ties them to a seed-key stream, and the one batching helper every stage generates with.

Model A at each step budget and Model B at each corrector depth are options of one type, so routing, cost and
quality iterate over a tuple of them instead of naming A and B; a family lists its networks, so training stages,
the work-dir guard and parameter restore iterate over families. The brief's binary routing is the two-option case
(`registry.BRIEF_PAIR`). A new hybrid family is a new module and a registry entry, or a value added to a preset
(`Preset.families`), not a branch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax import timing, xla
from hybrid_jax.config import Preset
from hybrid_jax.data import fixed_batches, option_batches

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
    stream: int = 0  # the seed-key stream of its family (`Family.stream`), which `generate` keys seeds on
    probe: str = ""  # the probe it continues from: "B" (B's AR prefix, the router's), a family's `Probe.name`, ""
    finish: Callable | None = None  # (params, that probe's state) -> images: the rest of `sample_keys`'s work

    @property
    def passes(self) -> int:
        return sum(self.pass_counts.values())

    def flops(self, pass_flops: dict[str, float]) -> float:
        return float(sum(n * pass_flops[net] for net, n in self.pass_counts.items()))



def distilled_option(name: str, model: str, sampler, with_student: Callable, steps: int, pass_counts: dict[str, int],
                     *, stream: int, probe: str = "") -> Generator:
    """The option sampling with the `steps`-step student of a distillation (`Distillation`): its params (key
    `model`) are {"family": the family's params, "students": {str(steps): student params}}, and `with_student`
    (family params, student params) -> the params `sampler` (`sample_keys`, and `finish` with a probe) runs on."""
    pick = lambda p: with_student(p["family"], p["students"][str(steps)])
    finish = xla.jit(lambda p, state: sampler.finish(pick(p), state)) if probe else None
    return Generator(name, model, xla.jit(lambda p, keys, labels=None: sampler.sample_keys(pick(p), keys, labels)),
                     pass_counts, stream=stream, probe=probe, finish=finish)


@dataclasses.dataclass(frozen=True)
class Distillation:
    """A family's sampler that progressive distillation halves round by round (stage `distill`,
    `hybrid_jax.distill`): the trained network the first round's teacher is, the network's raw output and a
    training batch's condition, the teacher's DDIM grid and each round's student grid, and the options judged
    against each other: the teacher, then per round its student and naive DDIM of the network on the same steps."""

    name: str  # the students' params key (their `Generator.model`), and their folder in the stage
    network: str  # the trained network (its training stage) that is the first round's teacher
    net: Callable  # (params, x_t, t [b], cond) -> raw output: eps for the trained network, v for the students
    condition: Callable  # `distill.Condition`: (images, labels, key) -> (cond, loss mask or None)
    num_timesteps: int  # the network's trained chain
    grids: tuple[np.ndarray, ...]  # the teacher's grid (descending timesteps), then each round's student grid
    teacher: Generator  # naive DDIM on the teacher's grid
    students: tuple[Generator, ...]  # per round, with that round's student (`distilled_option`)
    naive: tuple[Generator, ...]  # per round, naive DDIM of the trained network on the student's grid

    @property
    def options(self) -> tuple[Generator, ...]:
        """The teacher, then per round (most steps first) the student and naive DDIM at its steps."""
        return (self.teacher, *(g for pair in zip(self.students, self.naive) for g in pair))


@dataclasses.dataclass(frozen=True)
class Probe:
    """A family's own probe: the first part of its sampling, run once per seed, whose features let a policy choose
    the family's budget for the rest and whose state the family's "after probe" options continue (never rerun)."""

    name: str  # `Generator.probe` of the options that continue it
    run: Callable  # jitted (params, keys [n][, labels]) -> (state [n], features [n, F]); the state's type has
    # `.take(idx)` (the examples at idx) and a static `concatenate(states)` (examples of several, in order)
    feature_names: tuple[str, ...]
    options: tuple[Generator, ...]  # the family's options after the probe, most expensive first


@dataclasses.dataclass(frozen=True)
class Network:
    """One trained network of a family: its training stage (`name`), its config section (`section(cfg)`: `.train`
    and `.snapshots`, pinned by the work-dir guard), its loss and its initial params."""

    name: str
    section: Callable[[Preset], Any]  # cfg -> its config section, e.g. `cfg.model_a`
    loss: Callable[[Preset], Callable]  # cfg -> loss(params, batch, key) -> scalar
    init: Callable[[Preset, jax.Array], Any]  # (cfg, key) -> params
    version: int = 0  # raised where the network's code changes what its checkpoints mean (its stage reruns)


@dataclasses.dataclass(frozen=True)
class Family:
    """A generator family: the networks it trains, its settings of options (`settings(cfg)`), the seed-key stream its
    options draw from, how its networks' params make the params its options sample with, its options, its brief
    option (the one the binary study names), the FLOPs of one pass of each unit its options' pass counts name, the
    samplers it distills and its own probe (may be none).

    The study's own families read their sections from the preset's fields (`cfg.blockwise`); a family added as a
    value (`Preset.families`) carries its settings in `config`, which the preset's JSON and the fingerprints hold."""

    name: str  # Generator.model of its options
    stream: int
    networks: tuple[Network, ...]
    settings: Callable[[Preset], Any]  # cfg -> its option settings (budgets, depths, probe length)
    assemble: Callable[[dict[str, Any]], Any]  # {network name: params} -> the params its options sample with
    options: Callable[[Preset], tuple[Generator, ...]]  # every option of the allocation, most expensive first
    brief: Callable[[Preset], Generator]  # its option in the brief's binary study
    pass_flops: Callable[[Preset, Any], dict[str, float]]  # (cfg, its params) -> FLOPs of one pass per unit it names
    distillations: Callable[[Preset], tuple[Distillation, ...]] = lambda cfg: ()  # its samplers distilled (may be none)
    probe: Callable[[Preset], Probe | None] = lambda cfg: None  # its own probe and the options continuing it
    config: Any = None  # a family added as a value: its settings, networks' sections included (frozen dataclass)


def generate(opts, params: dict, seeds, choice, *, base_seed: int, batch_size: int, num_classes: int = 1,
             probes: dict | None = None) -> np.ndarray:
    """Each seed's image from the option it was allocated (`choice` [n] indexes `opts`): seeds grouped by
    option, each group run in batches of exactly `batch_size` (the last padded; `data.option_batches`), so every
    option compiles one shape whatever the mix, and a seed's image is its option's own image for it, alone or in
    any mix.

    `probes` ({probe name: its state}, each over every seed in `seeds` order, on their seed streams): the probes
    already run for the allocation; an option that continues one (`Generator.probe`)
    finishes from its state instead of starting over, so its image is the same and the probe is not paid twice."""
    seeds, choice = np.asarray(seeds), np.asarray(choice)
    chex.assert_equal_shape((seeds, choice))
    probes = probes or {}
    out = None
    for k, part, padded in option_batches(choice, batch_size):
        g = opts[k]
        images, _ = _run(g, params[g.model], seeds, padded, base_seed, num_classes, probes.get(g.probe))
        out = np.zeros((len(seeds), *images.shape[1:]), np.asarray(images).dtype) if out is None else out
        out[part] = np.asarray(images)[: len(part)]
    return out


def batches(g: Generator, params, seeds, idx, *, base_seed: int, batch_size: int, num_classes: int = 1,
            probe=None):
    """Yields (part, images [len(part), S, S, 3], seconds) for option `g`'s images of seeds[idx], in batches of
    exactly `batch_size` (the last padded): `part` indexes `seeds`; `seconds` is the batch's wall time, blocked
    until ready (the first call of a shape compiles). With `probe` (the state of the probe `g` continues, over
    every seed in `seeds` order) `g` finishes from it instead of starting over (the same image)."""
    for _, part, padded in fixed_batches(np.asarray(idx), batch_size):  # `option_batches` of one option
        images, seconds = _run(g, params, np.asarray(seeds), padded, base_seed, num_classes, probe)
        yield part, np.asarray(images)[: len(part)], seconds


def _run(g: Generator, params, seeds: np.ndarray, padded: np.ndarray, base_seed: int, num_classes: int, probe):
    """(option `g`'s images of seeds[padded], seconds): finished from `probe`'s state where `g` continues it."""
    if probe is not None and g.finish is not None:
        return timing.timed(g.finish, params, probe.take(padded))
    return timing.timed(g.sample_keys, params, stream_keys(seeds[padded], base_seed, g.stream),
                        seed_labels(seeds[padded], num_classes))


def seed_labels(seeds, num_classes: int) -> jax.Array:
    """Class label of each seed: seed mod num_classes (int32 [n]). Balanced over any run of consecutive
    seeds, a function of the seed alone (so of no batch), and all zeros with one class."""
    return jnp.asarray(np.asarray(seeds, np.int64) % num_classes, jnp.int32)


def stream_keys(seeds, base_seed: int, stream: int) -> jax.Array:
    """Per-seed keys of one stream: fold_in(fold_in(key(base), seed), stream), one per seed, of no batch."""
    base = jax.random.key(base_seed)
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(base, s), stream))(jnp.asarray(seeds, jnp.uint32))
