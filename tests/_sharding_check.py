"""Data-parallel checks on 8 CPU devices; run by tests/test_train.py in a fresh process.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharding_check.py CKPT_A CKPT_B

CKPT_A / CKPT_B are `Checkpointer` folders holding (perturbed) Model A params and Model B
params of the `test` preset at step 1 (restored into `eval_shape` templates: no init here).
Checks, each sharded (batch axis over an 8-device mesh, params/state replicated) against
the same computation on one device:
  1. one train step of Model B's AR loss: same loss and updated params (atol 1e-5);
  2. Model A `sample_keys` and Model B `sample_keys`: same images (atol 1e-5).
Prints one line per check and exits non-zero (AssertionError) on any failure.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from hybrid_jax import config as config_lib
from hybrid_jax import data, model_a, model_b, sharding, train
from hybrid_jax.checkpoint import Checkpointer

N_DEV = 8


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
    d_params = max_diff(single.params, multi.params)
    print(f"train step: loss {loss_1:.6f} (1 device) vs {loss_8:.6f} (8 devices); max |d params| {d_params:.2e}")
    np.testing.assert_allclose(loss_8, loss_1, rtol=1e-6, atol=1e-5)
    assert d_params <= 1e-5
    assert abs(max_diff(single.params, params_b["ar"])) > 1e-4  # the step did update the params

    # 2. samplers: keys sharded on the batch axis, params replicated
    keys = jax.random.split(jax.random.key(4), N_DEV)
    sharded_keys = sharding.shard_batch(keys, mesh)
    assert is_sharded(sharded_keys)
    for name, sampler, params in (("Model A", model_a.make_sampler(preset.model_a), params_a),
                                  ("Model B", model_b.make_sampler(preset.model_b, preset.corrector), params_b)):
        ref = sampler.sample_keys(params, keys)
        out = sampler.sample_keys(sharding.replicate(params, mesh), sharded_keys)
        assert is_sharded(out), f"{name}: output not sharded over the mesh: {out.sharding}"
        assert out.sharding == NamedSharding(mesh, P(sharding.DATA_AXIS)) or out.sharding.spec[0] == sharding.DATA_AXIS
        d = max_diff(ref, out)
        print(f"{name} sample_keys: max |sharded - single| {d:.2e}; image std {float(np.std(ref)):.3f}")
        assert float(np.std(ref)) > 0.01
        assert d <= 1e-5, f"{name}: sharded samples differ from single-device ones by {d}"
    print("OK")


if __name__ == "__main__":
    main(*sys.argv[1:3])
