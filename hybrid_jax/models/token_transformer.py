"""The hyperschedule family's network: a transformer over an image's patch tokens in which every token carries its
own timestep (`hybrid_jax.hyperschedule`), predicting each noisy token's eps.

Attention follows the settled/noisy split of the source's masks: a settled (clean) token reads only the settled
tokens at or before it in the unit order, so its keys and values never depend on the noisy tokens (a cache could
keep them); a noisy token reads every token. Sown intermediates (`mutable=["intermediates"]`): per layer `attn`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax.models.unet import timestep_embedding


def visibility(settled: jax.Array, rank: jax.Array) -> jax.Array:
    """[b, K, K] bool: query q reads key k where both are noisy, or k is settled and q is noisy or after k in the
    unit order (`rank` [K] or [b, K], each token's position in it); `settled` [b, K]."""
    rank = jnp.broadcast_to(rank, settled.shape)
    s_q, s_k = settled[:, :, None], settled[:, None, :]
    return jnp.where(s_k, ~s_q | (rank[:, None, :] <= rank[:, :, None]), ~s_q)


class TokenTransformer(nn.Module):
    """eps [b, K, token_dim] of tokens x [b, K, token_dim] at timesteps t [b, K] (-1: clean), `settled` [b, K] (the
    tokens a schedule has settled: clean, or lightly re-noised context), unit order `rank` [K] (or [b, K]), class
    labels [b]."""

    num_layers: int
    width: int
    num_heads: int
    mlp_ratio: int
    num_tokens: int
    token_dim: int
    num_classes: int = 1
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x, t, settled, rank, labels=None):
        dtype = jnp.dtype(self.dtype)
        b, k, _ = x.shape
        temb = timestep_embedding((t + 1).reshape(-1), self.width).reshape(b, k, self.width)  # clean -> 0
        temb = nn.Dense(self.width, dtype=dtype, name="time_out")(
            nn.swish(nn.Dense(4 * self.width, dtype=dtype, name="time_in")(temb)))
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (self.num_tokens, self.width))
        h = nn.Dense(self.width, dtype=dtype, name="embed")(x.astype(dtype)) + pos[None] + temb
        if self.num_classes > 1:
            labels = jnp.zeros((b,), jnp.int32) if labels is None else labels
            h = h + nn.Embed(self.num_classes, self.width, name="class_embedding")(labels)[:, None]
        mask = visibility(settled, rank)[:, None]  # [b, 1, K, K]
        for i in range(self.num_layers):
            y = nn.LayerNorm(dtype=dtype, name=f"norm_attn_{i}")(h)
            attn = nn.MultiHeadDotProductAttention(self.num_heads, dtype=dtype, name=f"attn_{i}")
            h = h + attn(y, y, mask=mask, sow_weights=True)
            y = nn.Dense(self.mlp_ratio * self.width, dtype=dtype, name=f"mlp_in_{i}")(
                nn.LayerNorm(dtype=dtype, name=f"norm_mlp_{i}")(h))
            h = h + nn.Dense(self.width, dtype=dtype, name=f"mlp_out_{i}")(nn.gelu(y))
        out = nn.Dense(self.token_dim, dtype=dtype, kernel_init=nn.initializers.zeros, name="eps")(
            nn.LayerNorm(dtype=dtype, name="norm_out")(h))
        # a linear path from each token's input to its eps: near pure noise eps is about the input itself, which a
        # width below token_dim could not pass through (an eps-MSE floor of the lost dimensions' share, 1/3 seen)
        skip = nn.Dense(self.token_dim, dtype=dtype, kernel_init=nn.initializers.zeros, use_bias=False, name="skip")
        return (out + skip(x.astype(dtype))).astype(jnp.float32)
