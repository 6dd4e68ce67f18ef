"""Mixed precision: bf16 compute (unet/decoder dtype="bfloat16", the same f32 params) stays close to f32.

Tolerances, and why they are meaningful:
- One U-Net pass: relative L2 error <= 5 %. bf16 keeps 8 significant bits (rounding ~0.4 %
  per op); through the network's ~20 layers the measured error is ~1.5 %. A real bug (a
  layer skipped or computed on wrongly cast data) gives an error of order 100 %.
- Whole samplers: the mean |bf16 image - f32 image| over all pixels must be <= 0.02 (1 % of
  the [-1, 1] image range) and <= 5 % of the mean distance between the f32 images of two
  different seeds (a sample-level scale: ~0.8-1.0 here). A max-abs bound would be
  meaningless: the ancestral sampler with an untrained (random) U-Net sits at the x0 clip
  for many pixels, so a bf16 rounding can move a rare pixel across the clip and send it
  elsewhere (about 1 % of Model A's pixels move by > 0.1). Measured: ~0.006 for A and B.
The samplers keep their schedule tables and arithmetic in f32, so the images stay f32.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax.generators import model_a, model_b

MEAN_ABS_TOL = 0.02  # 1 % of the image range [-1, 1]
SEED_DISTANCE_FRACTION = 0.05
UNET_REL_L2_TOL = 0.05


def bf16(cfg):
    return dataclasses.replace(cfg, dtype="bfloat16")


def assert_images_close(f32, bf, other_seeds):
    assert bf.dtype == np.float32 and bf.shape == f32.shape
    assert not np.array_equal(bf, f32), "bf16 run gave bitwise the f32 images: the dtype had no effect"
    mean_abs = float(np.mean(np.abs(bf - f32)))
    seed_distance = float(np.mean(np.abs(other_seeds - f32)))
    assert mean_abs <= MEAN_ABS_TOL, (mean_abs, seed_distance)
    assert mean_abs <= SEED_DISTANCE_FRACTION * seed_distance, (mean_abs, seed_distance)


@pytest.fixture(scope="module")
def keys():
    return jax.random.split(jax.random.key(3), 4), jax.random.split(jax.random.key(4), 4)


def test_unet_pass_bf16_close_to_f32(preset, model_a_params, perturb):
    params = perturb(model_a_params, 1)
    cfg16 = dataclasses.replace(preset.model_a, unet=bf16(preset.model_a.unet))
    x = jax.random.normal(jax.random.key(5), (4, 32, 32, 3))
    cond = model_a.block_condition(x, jnp.arange(4), preset.geometry)
    t = jnp.arange(4)
    out32 = jax.jit(model_a.make_unet(preset.model_a).apply)({"params": params}, x, t, cond)
    out16 = jax.jit(model_a.make_unet(cfg16).apply)({"params": params}, x, t, cond)
    assert out16.dtype == jnp.float32  # f32 output, whatever the compute dtype
    rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
    assert 0.0 < rel <= UNET_REL_L2_TOL, rel


def test_model_a_sampler_bf16_close_to_f32(preset, model_a_params, model_a_sampler, perturb, keys):
    params = perturb(model_a_params, 1)
    k, k_other = keys
    cfg16 = dataclasses.replace(preset.model_a, unet=bf16(preset.model_a.unet))
    f32 = np.asarray(model_a_sampler.sample_keys(params, k))
    bf = np.asarray(model_a.make_sampler(cfg16).sample_keys(params, k))
    assert_images_close(f32, bf, np.asarray(model_a_sampler.sample_keys(params, k_other)))


def test_model_b_sampler_bf16_close_to_f32(preset, model_b_params, model_b_sampler, perturb, keys):
    params = {"ar": perturb(model_b_params["ar"], 1), "corrector": perturb(model_b_params["corrector"], 2)}
    k, k_other = keys
    m16 = dataclasses.replace(preset.model_b, decoder=bf16(preset.model_b.decoder))
    c16 = dataclasses.replace(preset.corrector, unet=bf16(preset.corrector.unet))
    f32 = np.asarray(model_b_sampler.sample_keys(params, k))
    bf = np.asarray(model_b.make_sampler(m16, c16).sample_keys(params, k))
    assert_images_close(f32, bf, np.asarray(model_b_sampler.sample_keys(params, k_other)))
