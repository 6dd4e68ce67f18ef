"""Masked softmax attention shared by the transformers that keep their own key/value caches (MADFormer's and the
hyperschedule family's)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def attend(q, k, v, visible):
    """Softmax attention of q [b, q, h, d] over k, v [b, k, h, d] where `visible` (broadcast to [b, h, q, k]) holds;
    exact zero weights elsewhere. Returns (out [b, q, h, d], weights [b, h, q, k])."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])
    weights = jax.nn.softmax(jnp.where(visible, logits, -1e30), axis=-1) * visible
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(q.dtype), v), weights
