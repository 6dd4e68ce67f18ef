"""Model B: causal patch transformer (16 AR steps, KV-cached) + shallow diffusion corrector (30 steps).

Params are `{"ar": decoder params, "corrector": U-Net params}`. The AR loop is a
`lax.scan` whose carry (`ARState`) can be returned after k steps (`ar_prefix`) and resumed
later (`finish`), so the router reads features off the first 12 steps and the seeds it keeps
continue from their cache instead of starting over. Each example's randomness comes from
its own key: `fold_in(key, 0)` drives the AR noise, `fold_in(key, 1)` the corrector.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import chex
import flax
import jax
import jax.numpy as jnp

from hybrid_jax import data as data_lib
from hybrid_jax import diffusion, xla
from hybrid_jax.config import CorrectorConfig, ModelBConfig
from hybrid_jax.models import build
from hybrid_jax.models.decoder import PATCH_DIM, SEQ_LEN, Decoder, KVCache, init_cache, shift_right
from hybrid_jax.models.unet import UNet

IMAGE_SHAPE = (32, 32, 3)


@flax.struct.dataclass
class ARState:
    """Carry of the AR scan."""

    cache: KVCache  # k, v: [layers, b, 16, heads, head_dim]
    patches: jax.Array  # [b, 16, 192] sampled patches, zeros beyond `step`
    prev: jax.Array  # [b, 192] input of the next step (the last sampled patch)
    step: jax.Array  # [] int32, AR steps done


@flax.struct.dataclass
class Prefix:
    """B after k AR steps: the carry to resume from, the example keys, and what the steps sowed."""

    state: ARState
    keys: jax.Array  # [b] per-example keys
    attn: jax.Array  # [k, layers, b, heads, 16] attention of each step's query
    hidden: jax.Array  # [k, layers, b, width] residual stream after each layer
    means: jax.Array  # [k, b, 192] predicted patch means
    tf_means: jax.Array  # [b, k, 192] predictions when re-reading the means instead of the samples

    def take(self, idx) -> "Prefix":
        """The examples at `idx` (each array indexed on its own batch axis)."""
        state = self.state
        return Prefix(ARState(KVCache(state.cache.k[:, idx], state.cache.v[:, idx]), state.patches[idx],
                              state.prev[idx], state.step),
                      self.keys[idx], self.attn[:, :, idx], self.hidden[:, :, idx], self.means[:, idx],
                      self.tf_means[idx])


def make_decoder(cfg: ModelBConfig) -> Decoder:
    return build(Decoder, cfg.decoder)


def make_corrector_unet(cfg: CorrectorConfig) -> UNet:
    return build(UNet, cfg.unet)


def init_params(cfg: ModelBConfig, ccfg: CorrectorConfig, key: jax.Array) -> dict:
    k_ar, k_c = jax.random.split(key)
    d = cfg.decoder
    ar = make_decoder(cfg).init(k_ar, jnp.zeros((1, SEQ_LEN, PATCH_DIM)), 0,
                                init_cache(1, d.num_layers, d.width, d.num_heads))["params"]
    corr = make_corrector_unet(ccfg).init(k_c, jnp.zeros((1, *IMAGE_SHAPE)), jnp.zeros((1,), jnp.int32))["params"]
    return {"ar": ar, "corrector": corr}


def teacher_forcing(decoder: Decoder, params, patches: jax.Array, train: bool = False, rngs=None) -> jax.Array:
    """Predicted means of every patch given the true earlier ones: [b, 16, 192] -> [b, 16, 192]."""
    b = patches.shape[0]
    cache = init_cache(b, decoder.num_layers, decoder.width, decoder.num_heads)
    means, _ = decoder.apply({"params": params}, shift_right(patches), 0, cache, train=train, rngs=rngs)
    return means


def make_ar_loss(cfg: ModelBConfig):
    """Brief's loss: sum over the 16 patches of ||p_hat_i - p_i||^2, averaged over the batch."""
    decoder = make_decoder(cfg)

    def loss(params, images, key):
        patches = data_lib.patchify(images)
        means = teacher_forcing(decoder, params, patches, train=True, rngs={"dropout": key})
        return jnp.mean(jnp.sum(jnp.square(means - patches), axis=(1, 2)))

    return loss


def make_corrector_loss(ccfg: CorrectorConfig):
    """Standard DDPM epsilon-MSE on whole images, `num_timesteps`-step schedule, no conditioning."""
    unet = make_corrector_unet(ccfg)
    sched = diffusion.linear_schedule(ccfg.num_timesteps)

    def loss(params, images, key):
        k_t, k_noise, k_drop = (jax.random.fold_in(key, i) for i in range(3))
        t = jax.random.randint(k_t, (images.shape[0],), 0, ccfg.num_timesteps)
        noise = jax.random.normal(k_noise, images.shape)
        x_t = diffusion.q_sample(sched, images, t, noise)
        return diffusion.eps_loss(unet.apply({"params": params}, x_t, t, train=True, rngs={"dropout": k_drop}), noise)

    return loss


def _collect(inter: dict, num_layers: int) -> tuple[jax.Array, jax.Array]:
    """Sown per-layer attention [layers, b, heads, 16] and hidden state [layers, b, width] of one step."""
    layers = [inter[f"layer_{i}"] for i in range(num_layers)]
    attn = jnp.stack([l["CachedSelfAttention_0"]["attn"][0][:, :, 0] for l in layers])
    hidden = jnp.stack([l["hidden"][0][:, 0] for l in layers])
    return attn, hidden


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Jitted pieces of Model B. All take per-example keys, so a key's image does not depend on
    its batch. `passes` counts network passes per image (16 AR + corrector steps)."""

    sample: Callable  # (params, key, n) -> images [n, 32, 32, 3]
    sample_keys: Callable  # (params, keys[n]) -> images
    ar_prefix: Callable  # (params, keys[n], k) -> Prefix
    finish: Callable  # (params, Prefix) -> images
    correct: Callable  # (corrector params, ar images, keys[n]) -> images
    passes: int


def make_sampler(cfg: ModelBConfig, ccfg: CorrectorConfig, depth: int | None = None) -> Sampler:
    """Model B whose corrector noises the AR image to step `depth` and runs `depth` denoising steps
    (default: ccfg.start_step, the brief's 30; 0 = the AR image as it is)."""
    depth = ccfg.start_step if depth is None else depth
    if not 0 <= depth <= ccfg.num_timesteps:
        raise ValueError(f"corrector depth must be in [0, {ccfg.num_timesteps}], got {depth}")
    decoder = make_decoder(cfg)
    d = cfg.decoder
    unet = make_corrector_unet(ccfg)
    sched = diffusion.linear_schedule(ccfg.num_timesteps)
    corr_eps = lambda p, x, t, _: unet.apply({"params": p}, x, t)

    def ar_steps(params, state: ARState, keys, num_steps: int):
        ar_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)

        def step(s: ARState, _):
            means, inter = decoder.apply({"params": params}, s.prev[:, None], s.step, s.cache,
                                         mutable=["intermediates"])
            means, cache = means
            noise = diffusion.per_example_normal(ar_keys, s.step, (PATCH_DIM,))
            patch = means[:, 0] + cfg.temperature * noise
            patches = jax.lax.dynamic_update_slice(s.patches, patch[:, None], (0, s.step, 0))
            attn, hidden = _collect(inter["intermediates"], d.num_layers)
            return ARState(cache, patches, patch, s.step + 1), (attn, hidden, means[:, 0])

        return jax.lax.scan(step, state, None, length=num_steps)

    def start(params, keys, num_steps: int):
        chex.assert_rank(keys, 1)
        if not 0 < num_steps <= SEQ_LEN:
            raise ValueError(f"the number of AR steps must be in [1, {SEQ_LEN}], got {num_steps}")
        n = keys.shape[0]
        state = ARState(init_cache(n, d.num_layers, d.width, d.num_heads), jnp.zeros((n, SEQ_LEN, PATCH_DIM)),
                        jnp.zeros((n, PATCH_DIM)), jnp.zeros((), jnp.int32))
        return ar_steps(params["ar"], state, keys, num_steps)

    def ar_prefix(params, keys, k: int) -> Prefix:
        state, (attn, hidden, means) = start(params, keys, k)
        mean_seq = jnp.zeros_like(state.patches).at[:, :k].set(jnp.swapaxes(means, 0, 1))
        tf_means = teacher_forcing(decoder, params["ar"], mean_seq)[:, :k]
        return Prefix(state, keys, attn, hidden, means, tf_means)

    def correct(cparams, ar_images, keys):
        if depth == 0:
            return ar_images
        c_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        t0 = jnp.full((ar_images.shape[0],), depth - 1)
        x = diffusion.q_sample(sched, ar_images, t0, diffusion.per_example_normal(c_keys, depth, IMAGE_SHAPE))
        x = diffusion.sample_loop(corr_eps, cparams, sched, x, c_keys, start=depth, num_steps=depth,
                                  unroll=ccfg.scan_unroll)
        return jnp.clip(x, -1.0, 1.0)

    def finish(params, prefix: Prefix):
        state = prefix.state
        remaining = SEQ_LEN - prefix.attn.shape[0]
        if remaining:
            state, _ = ar_steps(params["ar"], state, prefix.keys, remaining)
        return decode_and_correct(params, state, prefix.keys)

    def decode_and_correct(params, state: ARState, keys):
        ar_images = jnp.clip(data_lib.unpatchify(state.patches), -1.0, 1.0)
        return correct(params["corrector"], ar_images, keys)

    def sample_keys(params, keys):
        state, _ = start(params, keys, SEQ_LEN)
        return decode_and_correct(params, state, keys)

    def sample(params, key, num: int):
        return sample_keys(params, jax.random.split(key, num))

    return Sampler(sample=xla.jit(sample, static_argnums=2), sample_keys=xla.jit(sample_keys),
                   ar_prefix=xla.jit(ar_prefix, static_argnums=2), finish=xla.jit(finish),
                   correct=xla.jit(correct), passes=SEQ_LEN + depth)
