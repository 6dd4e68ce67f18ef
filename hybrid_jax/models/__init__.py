"""Flax Linen modules: the DDPM U-Net and the causal patch decoder."""

import dataclasses

import chex
import jax
import jax.numpy as jnp


def build(module_cls, cfg, **extra):
    """Instantiate `module_cls` from a config dataclass whose fields are the module's attributes (plus `extra`)."""
    return module_cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}, **extra)


def class_labels(labels, n: int, num_classes: int = 1) -> jax.Array:
    """int32 [n] class labels of n examples; None gives zeros (which one-class models ignore), and is
    refused for a model over `num_classes` > 1 classes."""
    if labels is None and num_classes > 1:
        raise ValueError(f"a model over {num_classes} classes needs class labels [n]; got none")
    labels = jnp.zeros((n,), jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
    chex.assert_shape(labels, (n,))
    return labels
