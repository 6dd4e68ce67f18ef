"""DDPM-CIFAR U-Net (Ho et al. 2020) with an optional conditioning input, NHWC end to end.

One module serves Model A (128 channels, context canvas + masks concatenated to the noisy
input) and Model B's corrector (64 channels, no context). With `num_classes` > 1 a learned class
embedding is added to the time embedding; with one class the module has no class parameter at
all (and so today's parameters and outputs). Upsampling is nearest resize +
conv (transposed convs are slow in XLA on GPU). The output of each down level and of the
bottleneck are sown as `intermediates/features` (a tuple, finest first) so that other code
(the automated labeler) can read them with `mutable=["intermediates"]`.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding of integer timesteps [b] -> [b, dim] (f32)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def add_class_embedding(h: jax.Array, num_classes: int, labels, init=nn.initializers.normal(1.0)) -> jax.Array:
    """h [b, d] plus a learned embedding of class labels [b] (param `class_embedding`); h itself with one class.

    Called inside a compact module. With one class it creates no parameter, draws no RNG and adds
    nothing, so one-class models keep their parameter tree and outputs bit for bit.
    """
    if num_classes == 1:
        return h
    if labels is None:
        raise ValueError(f"a model over {num_classes} classes needs class labels [b]; got none")
    chex.assert_shape(labels, h.shape[:1])
    table = nn.Embed(num_classes, h.shape[-1], embedding_init=init, name="class_embedding")
    return h + table(jnp.asarray(labels, jnp.int32)).astype(h.dtype)


class ResBlock(nn.Module):
    out_channels: int
    dropout: float
    num_groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, temb, train: bool):
        conv = lambda ch, k=3: nn.Conv(ch, (k, k), padding="SAME" if k == 3 else "VALID", dtype=self.dtype)
        h = conv(self.out_channels)(nn.swish(nn.GroupNorm(self.num_groups, dtype=self.dtype)(x)))
        h = h + nn.Dense(self.out_channels, dtype=self.dtype)(nn.swish(temb))[:, None, None, :]
        h = nn.swish(nn.GroupNorm(self.num_groups, dtype=self.dtype)(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv(self.out_channels)(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1)(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention, as in DDPM."""

    num_groups: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        b, hgt, wid, ch = x.shape
        h = nn.GroupNorm(self.num_groups, dtype=self.dtype)(x).reshape(b, hgt * wid, ch)
        q, k, v = (nn.Dense(ch, dtype=self.dtype, name=n)(h) for n in ("q", "k", "v"))
        w = jax.nn.softmax((jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(ch)).astype(jnp.float32), axis=-1)
        h = jnp.einsum("bqk,bkc->bqc", w.astype(self.dtype), v)
        return x + nn.Dense(ch, dtype=self.dtype, name="proj")(h).reshape(b, hgt, wid, ch)


class UNet(nn.Module):
    """eps_theta(x_t, t, cond, labels): [b, H, W, 3] (+ cond channels), class labels [b] -> [b, H, W, 3] f32."""

    # Fields of `config.UNetConfig` (defaults live there; build with `models.build(UNet, cfg)`).
    base_channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    num_groups: int
    dtype: str
    out_channels: int = 3
    num_classes: int = 1  # > 1: class-conditional (labels required); 1: unconditional, labels ignored

    @nn.compact
    def __call__(self, x, t, cond=None, labels=None, *, train: bool = False):
        dtype = jnp.dtype(self.dtype)
        ch = self.base_channels
        temb = timestep_embedding(t, ch)
        temb = nn.Dense(4 * ch, dtype=dtype)(nn.swish(nn.Dense(4 * ch, dtype=dtype)(temb)))
        temb = add_class_embedding(temb, self.num_classes, labels)
        if cond is not None:
            x = jnp.concatenate([x, cond], axis=-1)
        res_block = lambda c: ResBlock(c, self.dropout, self.num_groups, dtype)
        attn = lambda: AttnBlock(self.num_groups, dtype)

        h = nn.Conv(ch, (3, 3), dtype=dtype)(x.astype(dtype))
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.num_res_blocks):
                h = res_block(ch * mult)(h, temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn()(h)
                skips.append(h)
            self.sow("intermediates", "features", h)
            if level != len(self.channel_mults) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=dtype)(h)
                skips.append(h)

        h = res_block(h.shape[-1])(h, temb, train)
        h = attn()(h)
        h = res_block(h.shape[-1])(h, temb, train)
        self.sow("intermediates", "features", h)

        for level, mult in reversed(list(enumerate(self.channel_mults))):
            for _ in range(self.num_res_blocks + 1):
                h = res_block(ch * mult)(jnp.concatenate([h, skips.pop()], axis=-1), temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn()(h)
            if level != 0:
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
                h = nn.Conv(c, (3, 3), dtype=dtype)(h)
        h = nn.swish(nn.GroupNorm(self.num_groups, dtype=dtype)(h))
        return nn.Conv(self.out_channels, (3, 3), dtype=dtype, kernel_init=nn.initializers.zeros)(h).astype(jnp.float32)

