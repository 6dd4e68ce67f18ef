"""MADFormer (arXiv 2506.07999): one transformer, autoregressive over blocks of the image in its first layers and
diffusion within the current block in its last ones.

Tokens are the image's patches, block by block (A's quadrants, raster within each; `block_tokens`). Two streams
share the layers' weights:
- the *clean* stream reads the blocks shifted by one (block 0's slot holds a learned start block, slot j > 0 the
  clean block j - 1) through all `num_layers` layers, block-causally, so slot j sees the clean blocks before j; its
  keys and values go into a cache (one pass per block when sampling). Its output at layer `num_layers -
  diffusion_layers` is the block's AR condition, which `decode` maps to a guess of the clean block;
- the *noisy* stream enters at that layer as condition + embedded noisy block + timestep embedding and runs the
  last `diffusion_layers` layers at every diffusion step, attending to the clean cache up to its own slot and to
  itself, to predict eps.
The parallel training pass (`__call__`, every block at once with its own timestep) and the cached block-by-block
sampler go through the same attention code (`clean`, `denoise`), so they agree to rounding. Sown intermediates
(`mutable=["intermediates"]`): per layer `attn` weights of each stream.
"""

from __future__ import annotations

import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax.config import Geometry
from hybrid_jax.geometry import block_order, patchify, unpatchify
from hybrid_jax.models.attention import attend
from hybrid_jax.models.unet import timestep_embedding


@flax.struct.dataclass
class Cache:
    """The clean stream's keys and values, every layer, every token slot."""

    k: jax.Array  # [layers, b, tokens, heads, head_dim]
    v: jax.Array  # [layers, b, tokens, heads, head_dim]


def init_cache(batch: int, num_layers: int, width: int, num_heads: int, tokens: int) -> Cache:
    shape = (num_layers, batch, tokens, num_heads, width // num_heads)
    return Cache(jnp.zeros(shape), jnp.zeros(shape))


def block_tokens(x: jax.Array, geometry: Geometry, patch: int) -> jax.Array:
    """[b, S, S, C] -> [b, blocks * per_block, patch * patch * C]: patches of side `patch`, block by block (raster
    order of blocks), raster within each block."""
    g = dataclasses.replace(geometry, patch_size=patch)
    return patchify(x, g)[:, block_order(g)]


def unblock_tokens(tokens: jax.Array, geometry: Geometry, patch: int) -> jax.Array:
    """Exact inverse of `block_tokens`."""
    g = dataclasses.replace(geometry, patch_size=patch)
    return unpatchify(tokens[:, np.argsort(block_order(g))], g)


class Layer(nn.Module):
    """Pre-LN transformer layer. Clean stream (`write_at` given): its keys and values are written into the cache at
    that token slot, and each query reads the cache up to its own block slot. Noisy stream (`self_block` given):
    each query reads the cache up to its block slot and the stream's own tokens of the same block."""

    num_heads: int
    mlp_ratio: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, h, k_cache, v_cache, q_block, key_block, *, write_at=None, self_block=None):
        """h [b, q, w]; q_block [q] each query's block slot; key_block [K] each cache slot's block slot.
        Returns (h, k_cache, v_cache)."""
        width = h.shape[-1]
        proj = lambda name, x: nn.DenseGeneral((self.num_heads, width // self.num_heads), dtype=self.dtype,
                                               name=name)(x)
        x = nn.LayerNorm(dtype=self.dtype, name="norm_attn")(h)
        q, k, v = proj("query", x), proj("key", x), proj("value", x)
        visible = key_block[None, :] <= q_block[:, None]  # [q, K]
        if write_at is not None:
            k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, write_at, 0, 0))
            v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, write_at, 0, 0))
            keys, values = k_cache, v_cache
        else:
            keys, values = jnp.concatenate([k_cache, k], 1), jnp.concatenate([v_cache, v], 1)
            visible = jnp.concatenate([visible, self_block[None, :] == q_block[:, None]], 1)
        out, weights = attend(q, keys.astype(self.dtype), values.astype(self.dtype), visible)
        self.sow("intermediates", "attn", weights)
        h = h + nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out")(out)
        m = nn.Dense(self.mlp_ratio * width, dtype=self.dtype, name="mlp_in")(
            nn.LayerNorm(dtype=self.dtype, name="norm_mlp")(h))
        return h + nn.Dense(width, dtype=self.dtype, name="mlp_out")(nn.gelu(m)), k_cache, v_cache


class MADFormer(nn.Module):
    """The clean stream (`clean`), the noisy stream (`denoise`), the AR guess (`decode`) and the parallel training
    pass (`__call__`); token slots are `num_blocks * block_len`, block by block."""

    num_layers: int
    diffusion_layers: int
    width: int
    num_heads: int
    mlp_ratio: int
    dtype: str
    num_blocks: int  # from the geometry and the patch size: blocks ...
    block_len: int  # ... tokens per block ...
    token_dim: int  # ... and values per token
    num_classes: int = 1  # > 1: a start block per class (labels required)

    def setup(self):
        dtype = jnp.dtype(self.dtype)
        self.layers = [Layer(self.num_heads, self.mlp_ratio, dtype, name=f"layer_{i}") for i in range(self.num_layers)]
        self.clean_embed = nn.Dense(self.width, dtype=dtype)
        self.noisy_embed = nn.Dense(self.width, dtype=dtype)
        self.time_in, self.time_out = nn.Dense(4 * self.width, dtype=dtype), nn.Dense(self.width, dtype=dtype)
        self.pos = self.param("pos_embedding", nn.initializers.normal(0.02), (self.num_blocks * self.block_len,
                                                                               self.width))
        self.start = self.param("start_block", nn.initializers.normal(0.02),
                                (self.num_classes, self.block_len, self.width))
        self.eps_norm, self.eps_head = nn.LayerNorm(dtype=dtype), nn.Dense(self.token_dim, dtype=dtype)
        self.ar_norm, self.ar_head = nn.LayerNorm(dtype=dtype), nn.Dense(self.token_dim, dtype=dtype)

    @property
    def ar_layers(self) -> int:
        return self.num_layers - self.diffusion_layers

    def _slots(self, first_block, n: int):
        """Token slots and their block slots of n tokens from block `first_block` on."""
        tokens = first_block * self.block_len + jnp.arange(n)
        return tokens, tokens // self.block_len

    def clean(self, prev, first_block, cache: Cache, labels=None):
        """The clean stream over block slots first_block.. (prev [b, q, token_dim]: clean blocks first_block - 1..;
        slot 0 reads the start block instead): (the AR condition at those slots [b, q, width], cache)."""
        b, n = prev.shape[:2]
        tokens, blocks = self._slots(first_block, n)
        labels = jnp.zeros((b,), jnp.int32) if labels is None else labels
        start = self.start[labels][:, tokens % self.block_len]  # [b, q, w]
        h = jnp.where((blocks == 0)[None, :, None], start, self.clean_embed(prev.astype(self.dtype)))
        h = h + self.pos[tokens]
        key_block = jnp.arange(cache.k.shape[2]) // self.block_len
        ks, vs, cond = [], [], None
        for i, layer in enumerate(self.layers):
            if i == self.ar_layers:
                cond = h
            h, k, v = layer(h, cache.k[i], cache.v[i], blocks, key_block, write_at=tokens[0])
            ks.append(k)
            vs.append(v)
        return cond, Cache(jnp.stack(ks), jnp.stack(vs))

    def denoise(self, x_t, t, cond, cache: Cache, first_block):
        """eps [b, q, token_dim] of the noisy blocks x_t [b, q, token_dim] at timesteps t [b, q] (one per token; a
        block shares its own), from their AR condition `cond` and the clean cache."""
        b, n = x_t.shape[:2]
        tokens, blocks = self._slots(first_block, n)
        temb = timestep_embedding(t.reshape(-1), self.width).reshape(b, n, self.width)
        h = cond + self.noisy_embed(x_t.astype(self.dtype)) + self.time_out(nn.swish(self.time_in(temb)))
        h = h + self.pos[tokens]
        key_block = jnp.arange(cache.k.shape[2]) // self.block_len
        for i in range(self.ar_layers, self.num_layers):
            h, _, _ = self.layers[i](h, cache.k[i], cache.v[i], blocks, key_block, self_block=blocks)
        return self.eps_head(self.eps_norm(h)).astype(jnp.float32)

    def decode(self, cond):
        """The AR guess of the clean blocks [b, q, token_dim] from their condition."""
        return self.ar_head(self.ar_norm(cond)).astype(jnp.float32)

    def __call__(self, clean, x_t, t, labels=None):
        """The parallel training pass over every block: clean [b, L, token_dim] (the real blocks), x_t its noisy
        version with t [b, L] (a timestep per block, repeated over its tokens) -> (eps [b, L, token_dim], the AR guess
        [b, L, token_dim])."""
        b, n = clean.shape[:2]
        cache = init_cache(b, self.num_layers, self.width, self.num_heads, n)
        prev = jnp.pad(clean[:, : n - self.block_len], ((0, 0), (self.block_len, 0), (0, 0)))  # shifted one block
        cond, cache = self.clean(prev, 0, cache, labels)
        return self.denoise(x_t, t, cond, cache, 0), self.decode(cond)
