"""Data-parallel checks on 8 CPU devices; run by tests/test_train.py in a fresh process.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharding_check.py CKPT_A CKPT_B

CKPT_A / CKPT_B are `Checkpointer` folders holding (perturbed) Model A params and Model B
params of the `test` preset at step 1 (restored into `eval_shape` templates: no init here).
Checks, each sharded (batch axis over an 8-device mesh, params/state replicated) against
the same computation on one device:
  1. one train step of Model B's AR loss: same loss, gradients and updated params (atol 1e-5;
     see the comment there on parameters whose gradient is pure round-off);
  2. Model A `sample_keys` and Model B `sample_keys`: the same images as unsharded calls on one
     key at a time (atol 1e-5; in fact bitwise), and for B as one unsharded call on the whole
     batch (atol 1e-5; see BATCH_TOL for A).
Prints one line per check and exits non-zero (AssertionError) on any failure.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from hybrid_jax import config as config_lib
from hybrid_jax import data, sharding, train
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.generators import model_a, model_b

N_DEV = 8
# Sharded sampling runs each device's share of the batch (here one key) as its own program, which
# is bitwise the single-device program for that batch: the reference is one key at a time. Model
# B is also compared with one single-device call on the whole batch of 8. Model A is not: for
# another batch size XLA picks other kernels (other rounding), and Model A's test preset (4 DDPM
# steps per block: the 1000/T-rescaled betas hit their 0.999 cap, alpha-bar falls to 1e-9)
# amplifies that rounding to ~2e-4 (~5e-6 with 40 steps per block), on one device just the same
# (see test_model_a.test_image_of_a_key_is_independent_of_its_batch).
BATCH_TOL = {"Model B": 1e-5}


def restore(directory: str, cfg_dict: dict, init_fn):
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(init_fn, jax.random.key(0)))
    params, step = Checkpointer(directory, cfg_dict).restore(template)
    assert step == 1, f"no checkpoint in {directory}"
    return params


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def is_sharded(x) -> bool:
    return len(x.sharding.device_set) == N_DEV and not x.sharding.is_fully_replicated


def main(ckpt_a: str, ckpt_b: str) -> None:
    assert jax.device_count() == N_DEV, f"expected {N_DEV} devices, got {jax.devices()}"
    preset = config_lib.get_preset("test")
    mesh = sharding.make_mesh(N_DEV)
    params_a = restore(ckpt_a, config_lib.to_dict(preset.model_a), lambda k: model_a.init_params(preset.model_a, k))
    params_b = restore(ckpt_b, {"model_b": config_lib.to_dict(preset.model_b),
                                "corrector": config_lib.to_dict(preset.corrector)},
                       lambda k: model_b.init_params(preset.model_b, preset.corrector, k))

    # 1. one data-parallel train step == one single-device step
    cfg = preset.model_b.train
    images = data._stand_in_crops()[:cfg.batch_size].astype(np.float32) / 127.5 - 1.0
    step_fn = train.make_train_step(model_b.make_ar_loss(preset.model_b), cfg)
    key = jax.random.key(3)
    fresh = lambda: train.init_state(jax.tree.map(jnp.array, params_b["ar"]), cfg, 1)  # the step donates
    single = step_fn(fresh(), jnp.asarray(images), key)
    batch = sharding.shard_batch(jnp.asarray(images), mesh)
    assert is_sharded(batch) and batch.sharding.spec == P(sharding.DATA_AXIS)
    state = sharding.replicate(fresh(), mesh)
    assert all(x.sharding.is_fully_replicated and len(x.sharding.device_set) == N_DEV
               for x in jax.tree.leaves(state))
    multi = step_fn(state, batch, key)
    loss_1, loss_8 = float(single.losses[0]), float(multi.losses[0])
    print(f"train step: loss {loss_1:.6f} (1 device) vs {loss_8:.6f} (8 devices)")
    np.testing.assert_allclose(loss_8, loss_1, rtol=1e-6, atol=1e-5)
    # Adam's first moment after one step is 0.1 x the (norm-clipped) gradient: compare gradients
    g_1 = jax.tree.map(lambda m: m / 0.1, optax.tree_utils.tree_get(single.opt_state, "mu"))
    g_8 = jax.tree.map(lambda m: m / 0.1, optax.tree_utils.tree_get(multi.opt_state, "mu"))
    g_scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g_1))
    d_grads = max_diff(g_1, g_8)
    print(f"train step: max |d grad| {d_grads:.2e} (max |grad| {g_scale:.2e})")
    assert d_grads <= 1e-5 * g_scale
    # Updated params agree to 1e-5 wherever the gradient is more than round-off. Where it is
    # round-off (|g| < 1e-6: the attention key biases, whose exact gradient is 0 because softmax
    # ignores a shift shared by all keys), Adam's first step lr * g / (|g| + 1e-8) turns that
    # noise into a step of up to lr in either direction, on one device as on eight.
    d_params, d_noise = 0.0, 0.0
    for g, a, b, p0 in zip(jax.tree.leaves(g_1), jax.tree.leaves(single.params), jax.tree.leaves(multi.params),
                           jax.tree.leaves(params_b["ar"])):
        g, d = np.abs(np.asarray(g)), np.abs(np.asarray(a) - np.asarray(b))
        d_params = max(d_params, float(d[g >= 1e-6].max(initial=0.0)))
        d_noise = max(d_noise, float(d[g < 1e-6].max(initial=0.0)))
        assert np.all(np.abs(np.asarray(a) - np.asarray(p0)) <= 1.001 * cfg.lr)  # Adam's step is <= lr
    print(f"train step: max |d params| {d_params:.2e} (|g| >= 1e-6), {d_noise:.2e} (round-off gradients)")
    assert d_params <= 1e-5
    assert d_noise <= 2 * cfg.lr
    assert max_diff(single.params, params_b["ar"]) > 1e-4  # the step did update the params

    # 2. samplers: keys sharded on the batch axis, params replicated
    keys = jax.random.split(jax.random.key(4), N_DEV)
    sharded_keys = sharding.shard_batch(keys, mesh)
    assert is_sharded(sharded_keys)
    for name, sampler, params in (("Model A", model_a.make_sampler(preset.model_a), params_a),
                                  ("Model B", model_b.make_sampler(preset.model_b, preset.corrector), params_b)):
        out = sampler.sample_keys(sharding.replicate(params, mesh), sharded_keys)
        assert is_sharded(out), f"{name}: output not sharded over the mesh: {out.sharding}"
        one_by_one = np.concatenate([sampler.sample_keys(params, keys[i:i + 1]) for i in range(N_DEV)])
        d_single = max_diff(one_by_one, out)
        print(f"{name} sample_keys: max |8 devices - 1 device| {d_single:.2e} (one key at a time); "
              f"image std {float(np.std(one_by_one)):.3f}")
        assert float(np.std(one_by_one)) > 0.01
        assert d_single <= 1e-5, f"{name}: sharded samples differ from single-device ones by {d_single}"
        if name in BATCH_TOL:
            d_batch = max_diff(sampler.sample_keys(params, keys), out)
            print(f"{name} sample_keys: max |8 devices - 1 device| {d_batch:.2e} (batch of 8)")
            assert d_batch <= BATCH_TOL[name], f"{name}: sharded samples differ from the batched call by {d_batch}"
    print("OK")


if __name__ == "__main__":
    main(*sys.argv[1:3])
