"""Causal patch transformer (Model B stage 1) with an explicit KV cache.

The same parameters serve two call modes: the whole sequence of `seq_len` patches (the
geometry's AR steps, each a flattened patch of `patch_dim` values) under a causal mask
(teacher forcing), and one position at a time against a cache (the AR sampler). Both go
through one attention code path: keys/values are written into the cache at `index` and
queries attend to cache positions <= their own, so the cached step equals the full pass.

Sequence layout: position 0 holds the learned start token (plus a learned class embedding when
`num_classes` > 1: a start token per class), position i > 0 holds patch i - 1; the output at
position i is the predicted mean of patch i. Sown intermediates
(`mutable=["intermediates"]`): per layer `attn` [b, heads, q, seq_len] (zero on future
positions), per layer `hidden` [b, q, width], and `means` [b, q, patch_dim].
"""

from __future__ import annotations


import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax.models.unet import add_class_embedding

@flax.struct.dataclass
class KVCache:
    k: jax.Array  # [layers, b, seq_len, heads, head_dim]
    v: jax.Array  # [layers, b, seq_len, heads, head_dim]


def init_cache(batch: int, num_layers: int, width: int, num_heads: int, dtype=jnp.float32, *,
               seq_len: int) -> KVCache:
    """An empty cache for `seq_len` positions (the geometry's AR steps)."""
    shape = (num_layers, batch, seq_len, num_heads, width // num_heads)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


class CachedSelfAttention(nn.Module):
    num_heads: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, k_cache, v_cache, index):
        b, q_len, width = x.shape
        head_dim = width // self.num_heads
        proj = lambda name: nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, name=name)(x)
        q, k, v = proj("query"), proj("key"), proj("value")  # [b, q, h, d]
        k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, index, 0, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, index, 0, 0))
        q_pos = index + jnp.arange(q_len)
        visible = jnp.arange(k_cache.shape[1])[None, :] <= q_pos[:, None]  # [q, seq_len]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k_cache.astype(self.dtype)).astype(jnp.float32)
        logits = jnp.where(visible, logits / jnp.sqrt(head_dim).astype(jnp.float32), -1e30)
        weights = jax.nn.softmax(logits, axis=-1) * visible  # exact zeros on future positions
        self.sow("intermediates", "attn", weights)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v_cache.astype(self.dtype))
        out = nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out")(out)
        return out, k_cache, v_cache


class DecoderBlock(nn.Module):
    num_heads: int
    mlp_ratio: int
    dropout: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, h, k_cache, v_cache, index, train: bool):
        a, k_cache, v_cache = CachedSelfAttention(self.num_heads, self.dtype)(
            nn.LayerNorm(dtype=self.dtype)(h), k_cache, v_cache, index)
        h = h + nn.Dropout(self.dropout, deterministic=not train)(a)
        m = nn.LayerNorm(dtype=self.dtype)(h)
        m = nn.Dense(self.mlp_ratio * h.shape[-1], dtype=self.dtype)(m)
        m = nn.Dense(h.shape[-1], dtype=self.dtype)(nn.gelu(m))
        h = h + nn.Dropout(self.dropout, deterministic=not train)(m)
        self.sow("intermediates", "hidden", h)
        return h, k_cache, v_cache


class Decoder(nn.Module):
    """(previous patches [b, q, patch_dim], start index, cache, class labels [b]) -> (patch means [b, q, patch_dim],
    cache)."""

    # Fields of `config.DecoderConfig` (defaults live there; build with `models.build(Decoder, cfg)`).
    num_layers: int
    width: int
    num_heads: int
    mlp_ratio: int
    dropout: float
    dtype: str
    seq_len: int  # from the geometry: AR steps (patches per image) ...
    patch_dim: int  # ... and values per flattened patch
    num_classes: int = 1  # > 1: a start token per class (labels required); 1: unconditional, labels ignored

    @nn.compact
    def __call__(self, prev_patches, index, cache: KVCache, labels=None, *, train: bool = False):
        dtype = jnp.dtype(self.dtype)
        b, q_len = prev_patches.shape[:2]
        pos = index + jnp.arange(q_len)
        start = self.param("start_token", nn.initializers.normal(0.02), (self.width,))
        start = add_class_embedding(jnp.broadcast_to(start, (b, self.width)), self.num_classes, labels,
                                    nn.initializers.normal(0.02))
        pos_emb = self.param("pos_embedding", nn.initializers.normal(0.02), (self.seq_len, self.width))
        h = nn.Dense(self.width, dtype=dtype, name="embed")(prev_patches.astype(dtype))
        h = jnp.where((pos == 0)[None, :, None], start[:, None].astype(dtype), h) + pos_emb[pos].astype(dtype)
        ks, vs = [], []
        for layer in range(self.num_layers):
            h, k, v = DecoderBlock(self.num_heads, self.mlp_ratio, self.dropout, dtype, name=f"layer_{layer}")(
                h, cache.k[layer], cache.v[layer], index, train)
            ks.append(k)
            vs.append(v)
        means = nn.Dense(self.patch_dim, dtype=dtype, name="head")(nn.LayerNorm(dtype=dtype)(h)).astype(jnp.float32)
        self.sow("intermediates", "means", means)
        return means, KVCache(jnp.stack(ks), jnp.stack(vs))


def shift_right(patches: jax.Array) -> jax.Array:
    """Teacher-forcing inputs: [b, seq_len, patch_dim] -> the sequence the model reads (start slot first)."""
    return jnp.pad(patches[:, :-1], ((0, 0), (1, 0), (0, 0)))

