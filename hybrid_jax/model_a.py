"""Model A: blockwise conditional DDPM over four 16x16 blocks (brief: 4 x 200 = 800 passes).

The U-Net sees the noisy target block (zeros elsewhere), the context canvas (earlier
blocks, zeros elsewhere), the context mask and the target mask, concatenated on channels.
Training noises only the target block and takes the epsilon-MSE on its pixels; sampling
generates the blocks in raster order, each conditioned on those before it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from hybrid_jax import data as data_lib
from hybrid_jax import diffusion, xla
from hybrid_jax.config import ModelAConfig
from hybrid_jax.models import build
from hybrid_jax.models.unet import UNet

COND_CHANNELS = 5  # context canvas (3), context mask (1), target mask (1)
IMAGE_SHAPE = (32, 32, 3)


def make_unet(cfg: ModelAConfig) -> UNet:
    return build(UNet, cfg.unet)


def init_params(cfg: ModelAConfig, key: jax.Array):
    x = jnp.zeros((1, *IMAGE_SHAPE))
    cond = jnp.zeros((1, *IMAGE_SHAPE[:2], COND_CHANNELS))
    return make_unet(cfg).init(key, x, jnp.zeros((1,), jnp.int32), cond)["params"]


def block_condition(canvas: jax.Array, block: jax.Array) -> jax.Array:
    """Conditioning channels for generating `block` [b] given `canvas` [b, 32, 32, 3]."""
    ctx = jnp.asarray(data_lib.context_masks())[block]  # [b, 32, 32, 1]
    tgt = jnp.asarray(data_lib.block_masks())[block]
    return jnp.concatenate([canvas * ctx, ctx, tgt], axis=-1)


def make_eps_fn(cfg: ModelAConfig, train: bool = False):
    """eps_fn(params, x_t, t, cond) for the diffusion core; the noisy input is masked to the target."""
    unet = make_unet(cfg)

    def eps_fn(params, x_t, t, cond, rngs=None):
        return unet.apply({"params": params}, x_t * cond[..., -1:], t, cond, train=train, rngs=rngs)

    return eps_fn


def make_loss(cfg: ModelAConfig) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """loss(params, images [b,32,32,3], key) -> epsilon-MSE on a random target block."""
    sched = diffusion.linear_schedule(cfg.steps_per_block)
    eps_fn = make_eps_fn(cfg, train=True)

    def loss(params, images, key):
        b = images.shape[0]
        k_block, k_t, k_noise, k_drop = (jax.random.fold_in(key, i) for i in range(4))
        block = jax.random.randint(k_block, (b,), 0, data_lib.NUM_BLOCKS)
        t = jax.random.randint(k_t, (b,), 0, cfg.steps_per_block)
        noise = jax.random.normal(k_noise, images.shape)
        cond = block_condition(images, block)
        x_t = diffusion.q_sample(sched, images, t, noise)
        eps = eps_fn(params, x_t, t, cond, rngs={"dropout": k_drop})
        return diffusion.eps_loss(eps, noise, cond[..., -1:])

    return loss


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Jitted samplers. `sample(params, key, n)`; `sample_keys(params, keys[n])` gives each key's image
    independently of the batch it is in. `passes` is the number of U-Net passes per image."""

    sample: Callable
    sample_keys: Callable
    passes: int


def make_sampler(cfg: ModelAConfig, budget: int | None = None, eta: float | None = None) -> Sampler:
    """Model A sampling `budget` steps per block (default: every trained step) of the trained chain:
    ancestral DDPM respaced to those steps, or DDIM with `eta` when given. Same network, any budget."""
    steps = cfg.steps_per_block
    budget = steps if budget is None else budget
    visit = diffusion.respace(steps, budget)
    chain = diffusion.ddpm_chain(steps, visit) if eta is None else diffusion.ddim_chain(steps, visit, eta)
    eps_fn = make_eps_fn(cfg)

    def sample_keys(params, keys):
        chex.assert_rank(keys, 1)
        n = keys.shape[0]

        def gen_block(canvas, block):
            block_keys = jax.vmap(lambda k: jax.random.fold_in(k, block))(keys)
            x_init = diffusion.per_example_normal(block_keys, steps, IMAGE_SHAPE)
            cond = block_condition(canvas, jnp.full((n,), block))
            x = diffusion.sample_chain(eps_fn, params, chain, x_init, block_keys, cond=cond, unroll=cfg.scan_unroll)
            return jnp.where(cond[..., -1:] > 0, x, canvas), None

        canvas, _ = jax.lax.scan(gen_block, jnp.zeros((n, *IMAGE_SHAPE)), jnp.arange(data_lib.NUM_BLOCKS))
        return jnp.clip(canvas, -1.0, 1.0)

    def sample(params, key, num: int):
        return sample_keys(params, jax.random.split(key, num))

    return Sampler(sample=xla.jit(sample, static_argnums=2), sample_keys=xla.jit(sample_keys),
                   passes=data_lib.NUM_BLOCKS * budget)


def passes(cfg: ModelAConfig) -> int:
    """U-Net passes per image at the full budget: steps_per_block for each of the 4 blocks."""
    return data_lib.NUM_BLOCKS * cfg.steps_per_block
