"""The hyperschedule family's network: a transformer over an image's patch tokens in which every token carries its
own timestep (`hybrid_jax.hyperschedule`), predicting each noisy token's eps.

Attention follows the source's masks: a settled (clean) token reads only the settled tokens at or before it in the
unit order, so its keys and values never depend on the noisy tokens (a cache keeps them: `window` evaluates a
window of tokens after a `Prefix` of committed ones, as the dense pass would); a noisy token reads the settled
tokens and the noisy ones that are not `hidden` (at pure noise: worthless, and outside a window). Sown
intermediates (`mutable=["intermediates"]`): per layer `attn` [b, heads, q, k].
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax.models.attention import attend
from hybrid_jax.models.unet import timestep_embedding


@flax.struct.dataclass
class Prefix:
    """Keys and values of committed tokens, every layer; every query of a window reads the `valid` ones."""

    k: jax.Array  # [layers, b, C, heads, head_dim]
    v: jax.Array  # [layers, b, C, heads, head_dim]
    valid: jax.Array  # [b, C] bool


def visibility(settled: jax.Array, rank: jax.Array, hidden: jax.Array | None = None) -> jax.Array:
    """[b, K, K] bool: query q reads key k where k is settled and q is noisy or after k in the unit order (`rank`
    [K] or [b, K], each token's position in it), or both are noisy and k is not `hidden`, or k is q; `settled`,
    `hidden` [b, K]."""
    rank = jnp.broadcast_to(rank, settled.shape)
    hidden = jnp.zeros_like(settled) if hidden is None else hidden
    s_q, s_k = settled[:, :, None], settled[:, None, :]
    see = jnp.where(s_k, ~s_q | (rank[:, None, :] <= rank[:, :, None]), ~s_q & ~hidden[:, None, :])
    return see | jnp.eye(settled.shape[1], dtype=bool)[None]


class TokenTransformer(nn.Module):
    """eps [b, K, token_dim] of tokens x [b, K, token_dim] at timesteps t [b, K] (-1: clean), `settled` [b, K] (the
    tokens a schedule has settled: clean, or lightly re-noised context), unit order `rank` [K] (or [b, K]), class
    labels [b], `hidden` [b, K] (tokens no other one reads; None: none)."""

    num_layers: int
    width: int
    num_heads: int
    mlp_ratio: int
    num_tokens: int
    token_dim: int
    num_classes: int = 1
    dtype: str = "float32"

    def __call__(self, x, t, settled, rank, labels=None, hidden=None):
        return self.window(x, t, settled, rank, labels, hidden)[0]

    @nn.compact
    def window(self, x, t, settled, rank, labels=None, hidden=None, ids=None, prefix: Prefix | None = None):
        """eps of the tokens x [b, W, token_dim] (token `ids` [W], default 0..W-1) read after the committed tokens of
        `prefix` (all before them in the unit order), and the window's keys and values [layers, b, W, heads,
        head_dim] for a cache: (eps, k, v)."""
        dtype = jnp.dtype(self.dtype)
        b, w, _ = x.shape
        heads, head_dim = self.num_heads, self.width // self.num_heads
        temb = timestep_embedding((t + 1).reshape(-1), self.width).reshape(b, w, self.width)  # clean -> 0
        temb = nn.Dense(self.width, dtype=dtype, name="time_out")(
            nn.swish(nn.Dense(4 * self.width, dtype=dtype, name="time_in")(temb)))
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (self.num_tokens, self.width))
        pos = pos[:w] if ids is None else pos[ids]
        h = nn.Dense(self.width, dtype=dtype, name="embed")(x.astype(dtype)) + pos[None] + temb
        if self.num_classes > 1:
            labels = jnp.zeros((b,), jnp.int32) if labels is None else labels
            h = h + nn.Embed(self.num_classes, self.width, name="class_embedding")(labels)[:, None]
        visible = visibility(settled, rank, hidden)  # [b, W, W]
        if prefix is not None:
            visible = jnp.concatenate([jnp.broadcast_to(prefix.valid[:, None], (b, w, prefix.valid.shape[1])),
                                       visible], axis=2)
        ks, vs = [], []
        for i in range(self.num_layers):
            y = nn.LayerNorm(dtype=dtype, name=f"norm_attn_{i}")(h)
            proj = lambda name: nn.DenseGeneral((heads, head_dim), dtype=dtype, name=f"{name}_{i}")(y)
            q, k, v = proj("query"), proj("key"), proj("value")
            ks.append(k)
            vs.append(v)
            if prefix is not None:
                k = jnp.concatenate([prefix.k[i].astype(dtype), k], axis=1)
                v = jnp.concatenate([prefix.v[i].astype(dtype), v], axis=1)
            out, weights = attend(q, k, v, visible[:, None])
            self.sow("intermediates", "attn", weights)
            h = h + nn.DenseGeneral(self.width, axis=(-2, -1), dtype=dtype, name=f"attn_out_{i}")(out)
            y = nn.Dense(self.mlp_ratio * self.width, dtype=dtype, name=f"mlp_in_{i}")(
                nn.LayerNorm(dtype=dtype, name=f"norm_mlp_{i}")(h))
            h = h + nn.Dense(self.width, dtype=dtype, name=f"mlp_out_{i}")(nn.gelu(y))
        out = nn.Dense(self.token_dim, dtype=dtype, kernel_init=nn.initializers.zeros, name="eps")(
            nn.LayerNorm(dtype=dtype, name="norm_out")(h))
        # a linear path from each token's input to its eps: near pure noise eps is about the input itself, which a
        # width below token_dim could not pass through (an eps-MSE floor of the lost dimensions' share, 1/3 seen)
        skip = nn.Dense(self.token_dim, dtype=dtype, kernel_init=nn.initializers.zeros, use_bias=False, name="skip")
        return (out + skip(x.astype(dtype))).astype(jnp.float32), jnp.stack(ks), jnp.stack(vs)
