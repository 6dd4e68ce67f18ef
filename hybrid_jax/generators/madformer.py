"""MADFormer's sampler and loss (`models.madformer`): blocks one after another (A's quadrants), each from one pass of
the clean stream over the block before it (KV-cached) and then S diffusion steps of the last layers on the block.

A block's noise is keyed on the seed's key folded with the block index (and, per step, the step's timestep), so an
image depends on its seed alone, never on its batch. `prefix` runs block 0 (the probe's state); `finish` continues
it; `sample_keys` runs every block in one scan and equals `finish(prefix(...))` to XLA's rounding (separately
compiled programs, which the ancestral steps carry; 1e-4 in the tests). S = 0 takes the clean stream's decoded
guess of each block (no diffusion step).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import flax
import jax
import jax.numpy as jnp

from hybrid_jax import diffusion, timing, xla
from hybrid_jax import geometry as geometry_lib
from hybrid_jax.config import Geometry, MADFormerConfig, Preset
from hybrid_jax.data import images_and_labels
from hybrid_jax.generators.base import Family, Generator, Network, Probe
from hybrid_jax.models import build, class_labels
from hybrid_jax.models.madformer import Cache, MADFormer, block_tokens, init_cache, unblock_tokens
from hybrid_jax.probe import features


def make_model(cfg: MADFormerConfig, geometry: Geometry, patch: int, num_classes: int = 1) -> MADFormer:
    if geometry.block_size % patch:
        raise ValueError(f"the MADFormer patch size {patch} must divide the block size {geometry.block_size}")
    per_side = geometry.block_size // patch
    return build(MADFormer, cfg, num_blocks=geometry.num_blocks, block_len=per_side * per_side,
                 token_dim=patch * patch * geometry.channels, num_classes=num_classes)


def init_params(model: MADFormer, key: jax.Array):
    tokens = jnp.zeros((1, model.num_blocks * model.block_len, model.token_dim))
    return model.init(key, tokens, tokens, jnp.zeros(tokens.shape[:2], jnp.int32))["params"]


def make_loss(model: MADFormer, geometry: Geometry, patch: int, num_timesteps: int, ar_weight: float = 0.1
              ) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """loss(params, batch, key): eps-MSE over every block, each at its own uniform timestep, plus `ar_weight` x
    the MSE of the decoded AR guess against the clean block (the source's 0.1)."""
    sched = diffusion.linear_schedule(num_timesteps)

    def loss(params, batch, key):
        images, labels = images_and_labels(batch)
        tokens = block_tokens(images, geometry, patch)  # [b, L, d]
        b, n, d = tokens.shape
        k_t, k_noise = jax.random.split(key)
        t = jnp.repeat(jax.random.randint(k_t, (b, model.num_blocks), 0, num_timesteps), model.block_len, axis=1)
        noise = jax.random.normal(k_noise, tokens.shape)
        x_t = diffusion.q_sample(sched, tokens.reshape(b * n, d), t.reshape(-1), noise.reshape(b * n, d))
        eps, guess = model.apply({"params": params}, tokens, x_t.reshape(b, n, d), t, labels)
        return jnp.mean((eps - noise) ** 2) + ar_weight * jnp.mean((guess - tokens) ** 2)

    return loss


@flax.struct.dataclass
class State:
    """Sampling after some blocks: what is drawn, the clean cache, and the seeds' keys and classes."""

    tokens: jax.Array  # [b, L, token_dim], blocks not yet drawn zero
    cache: Cache  # [layers, b, L, heads, head_dim] each
    keys: jax.Array  # [b]
    labels: jax.Array  # [b]

    def take(self, idx) -> "State":
        return State(self.tokens[idx], Cache(self.cache.k[:, idx], self.cache.v[:, idx]), self.keys[idx],
                     self.labels[idx])

    @staticmethod
    def concatenate(states: "list[State]") -> "State":
        """One state over the examples of `states`, in order."""
        cat = lambda get, axis=0: jnp.concatenate([get(s) for s in states], axis=axis)
        return State(cat(lambda s: s.tokens), Cache(cat(lambda s: s.cache.k, 1), cat(lambda s: s.cache.v, 1)),
                     cat(lambda s: s.keys), cat(lambda s: s.labels))


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Jitted: `sample_keys(params, keys[n][, labels])` -> images; `prefix(params, keys[, labels])` -> State after
    block 0; `finish(params, state)` -> images. `passes` per image by unit ({"mad_ar": blocks, "mad_diffusion":
    blocks x S})."""

    sample_keys: Callable
    prefix: Callable
    finish: Callable
    passes: dict[str, int]


def _chain(num_timesteps: int, steps: int) -> diffusion.Chain | None:
    return diffusion.ddpm_chain(num_timesteps, diffusion.respace(num_timesteps, steps)) if steps else None


def _start(model: MADFormer, keys, labels, num_classes: int) -> State:
    chex.assert_rank(keys, 1)
    n, tokens = keys.shape[0], model.num_blocks * model.block_len
    return State(jnp.zeros((n, tokens, model.token_dim)),
                 init_cache(n, model.num_layers, model.width, model.num_heads, tokens), keys,
                 class_labels(labels, n, num_classes))


def _block(model: MADFormer, chain: diffusion.Chain | None, num_timesteps: int, params, state: State, j,
           trace: bool = False):
    """Block j drawn: the state with it; with `trace`, (that state, its AR guess [b, block_len, token_dim], its
    predicted clean block after each diffusion step [S, b, block_len, token_dim] (S = 0: the guess alone), the mean
    normalised attention entropy of the noisy stream's queries over its steps [b] (S = 0: 0))."""
    v, bl, d = {"params": params}, model.block_len, model.token_dim
    prev = jax.lax.dynamic_slice_in_dim(state.tokens, jnp.maximum(j - 1, 0) * bl, bl, axis=1)
    cond, cache = model.apply(v, prev, j, state.cache, state.labels, method=MADFormer.clean)
    guess = model.apply(v, cond, method=MADFormer.decode) if chain is None or trace else None
    entropy = jnp.zeros(prev.shape[:1])
    if chain is None:
        x, x0s = guess, guess[None]
    else:
        keys = jax.vmap(lambda k: jax.random.fold_in(k, j))(state.keys)
        denoise = lambda p, x, t, **kw: model.apply(p, x, jnp.broadcast_to(t[:, None], x.shape[:2]), cond, cache, j,
                                                    method=MADFormer.denoise, **kw)
        x_init = diffusion.per_example_normal(keys, num_timesteps, (bl, d))
        if trace:
            x, x0s, parts = diffusion.sample_chain(lambda p, x, t, _: _with_entropy(denoise(
                p, x, t, mutable=["intermediates"])), v, chain, x_init, keys, trace=True, has_aux=True)
            entropy = features.entropy_mean(*parts)
        else:
            x, x0s = diffusion.sample_chain(lambda p, x, t, _: denoise(p, x, t), v, chain, x_init, keys), None
    tokens = jax.lax.dynamic_update_slice_in_dim(state.tokens, x.astype(state.tokens.dtype), j * bl, axis=1)
    drawn = State(tokens, cache, state.keys, state.labels)
    return (drawn, guess, x0s, entropy) if trace else drawn


def _with_entropy(out) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """(eps, sown intermediates) -> (eps, `features.query_entropy` of every query of every layer)."""
    eps, sown = out
    weights = [w for layer in sown["intermediates"].values() for w in layer["attn"]]
    return eps, features.query_entropy(weights, jnp.ones((eps.shape[0], eps.shape[1]), bool))


def make_sampler(model: MADFormer, geometry: Geometry, patch: int, num_timesteps: int, steps: int,
                 num_classes: int = 1) -> Sampler:
    chain = _chain(num_timesteps, steps)
    block = lambda params, state, j: _block(model, chain, num_timesteps, params, state, j)

    def blocks(params, state: State, first: int) -> State:
        return jax.lax.scan(lambda s, j: (block(params, s, j), None), state, jnp.arange(first, model.num_blocks))[0]

    def image(state: State) -> jax.Array:
        return jnp.clip(unblock_tokens(state.tokens, geometry, patch), -1.0, 1.0)

    def prefix(params, keys, labels=None) -> State:
        return block(params, _start(model, keys, labels, num_classes), 0)

    def finish(params, state: State):
        return image(blocks(params, state, 1))

    def sample_keys(params, keys, labels=None):
        return image(blocks(params, _start(model, keys, labels, num_classes), 0))

    return Sampler(sample_keys=xla.jit(sample_keys), prefix=xla.jit(prefix), finish=xla.jit(finish),
                   passes={"mad_ar": model.num_blocks, "mad_diffusion": model.num_blocks * steps})


PROBE_FEATURES = (*("mad_" + n for n in features.A_PROBE), "mad_guess_gap", "mad_attn_entropy")


def make_probe(model: MADFormer, geometry: Geometry, patch: int, num_timesteps: int, steps: int,
               num_classes: int = 1) -> Callable:
    """jitted (params, keys [n][, labels]) -> (State after block 0 drawn with `steps` ancestral steps, features [n,
    len(PROBE_FEATURES)]): A's probe statistics of block 0's predicted clean block after each step (its image
    statistics, how far it still moves between steps), the mean squared gap between the drawn block and the clean
    stream's decoded guess of it, and the noisy stream's mean normalised attention entropy over the steps
    (`features.query_entropy`: spread over the cache and the block, or fixed on a few tokens). The state is
    `Sampler.prefix`'s at `steps`: any step count's `finish` continues it."""
    chain, mask = _chain(num_timesteps, steps), geometry_lib.block_masks(geometry)[0]
    as_image = jax.vmap(lambda block: unblock_tokens(
        jnp.pad(block, ((0, 0), (0, (model.num_blocks - 1) * model.block_len), (0, 0))), geometry, patch))

    def run(params, keys, labels=None):
        state, guess, x0s, entropy = _block(model, chain, num_timesteps, params,
                                            _start(model, keys, labels, num_classes), 0, trace=True)
        gap = jnp.mean(jnp.square(state.tokens[:, : model.block_len] - guess), axis=(1, 2))
        return state, jnp.concatenate([features.a_probe(as_image(x0s), mask), gap[:, None], entropy[:, None]], axis=1)

    return xla.jit(run)


# ----------------------------------------------------------------------------- the family (`Preset.madformer`)

NAME = "madformer"
STREAM = 3
PROBE = "MAD"  # its own probe's name (`Generator.probe` of the options continuing it)


def _model(cfg: Preset) -> MADFormer:
    n = cfg.madformer.network
    return make_model(n.model, cfg.geometry, n.patch_size, cfg.data.num_classes)


def option(cfg: Preset, steps: int) -> Generator:
    """MADFormer with `steps` ancestral (respaced DDPM) steps per block on its trained chain, as A's options (0: the
    decoded AR guess)."""
    n = cfg.madformer.network
    s = make_sampler(_model(cfg), cfg.geometry, n.patch_size, n.num_timesteps, steps, cfg.data.num_classes)
    return Generator(f"MAD/{steps} steps", NAME, s.sample_keys, s.passes, stream=STREAM)


def options(cfg: Preset) -> tuple[Generator, ...]:
    """An option per step count of `madformer.steps`, most expensive first."""
    return tuple(option(cfg, s) for s in sorted(set(cfg.madformer.steps), reverse=True))


def probe(cfg: Preset) -> Probe | None:
    """With `madformer.probe_steps`: block 0 drawn with that many steps and read (`make_probe`), and per step count
    of `madformer.steps` the option that continues it through blocks 1.. ("MAD/S steps after probe")."""
    m, n = cfg.madformer, cfg.madformer.network
    if m.probe_steps is None:
        return None
    model, args = _model(cfg), (cfg.geometry, n.patch_size, n.num_timesteps)
    run = make_probe(model, *args, m.probe_steps, cfg.data.num_classes)
    blocks = model.num_blocks

    def after(steps: int) -> Generator:
        finish = make_sampler(model, *args, steps, cfg.data.num_classes).finish
        sample = xla.jit(lambda params, keys, labels=None: finish(params, run(params, keys, labels)[0]))
        return Generator(f"MAD/{steps} steps after probe", NAME, sample,
                         {"mad_ar": blocks, "mad_diffusion": m.probe_steps + (blocks - 1) * steps}, stream=STREAM,
                         probe=PROBE, finish=finish)

    return Probe(PROBE, run, PROBE_FEATURES, tuple(after(s) for s in sorted(set(m.steps), reverse=True)))


def pass_flops(cfg: Preset, params) -> dict[str, float]:
    """FLOPs at batch 1 (XLA's cost analysis) of one clean-stream pass over a block (all layers, writing the cache)
    and one diffusion step on a block (the last layers, reading it): the units its options' pass counts name."""
    model = _model(cfg)
    block = jnp.zeros((1, model.block_len, model.token_dim))
    cache = init_cache(1, model.num_layers, model.width, model.num_heads, model.num_blocks * model.block_len)
    cond = jnp.zeros((1, model.block_len, model.width))
    t = jnp.zeros((1, model.block_len), jnp.int32)
    clean = lambda p, x, c: model.apply({"params": p}, x, 1, c, method=MADFormer.clean)
    denoise = lambda p, x, s, h, c: model.apply({"params": p}, x, s, h, c, 1, method=MADFormer.denoise)
    return {"mad_ar": timing.flops(clean, params, block, cache),
            "mad_diffusion": timing.flops(denoise, params, block, t, cond, cache)}


def _loss(cfg: Preset):
    n = cfg.madformer.network
    return make_loss(_model(cfg), cfg.geometry, n.patch_size, n.num_timesteps, n.ar_weight)


FAMILY = Family(NAME, STREAM, (Network(NAME, lambda cfg: cfg.madformer.network, _loss,
                                       lambda cfg, key: init_params(_model(cfg), key)),),
                settings=lambda cfg: cfg.madformer, assemble=lambda p: p[NAME], options=options,
                brief=lambda cfg: options(cfg)[0], pass_flops=pass_flops, probe=probe)
