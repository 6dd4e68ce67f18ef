"""Model B's sampler and one train step sharded over two processes; run by tests/test_distributed.py.

Usage: python tests/_distributed_check.py OUT.npz [COORDINATOR_ADDRESS PROCESS_ID]

With a coordinator address, this is one of two processes (one CPU device each) joined by
`jax.distributed` into a 2-device mesh: seed keys and batches are sharded across the processes
(params replicated) and outputs are gathered back (`sharding.to_host`; gloo collectives). Without
one, the same computations run unsharded in one process: the reference. Both write OUT.npz with
Model B's images of 4 keys, and the loss, Adam's first moment (0.1 x the gradient) and updated params
after one data-parallel train step (the gradient is all-reduced across the processes).
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from hybrid_jax import config as config_lib
from hybrid_jax import data, sharding, train
from hybrid_jax.generators import model_b


def main(out: str, coordinator: str | None = None, process_id: str | None = None) -> None:
    mesh = None
    if coordinator:
        sharding.initialize(sharding.Distributed(coordinator, 2, int(process_id)))
        assert jax.process_count() == 2 and jax.device_count() == 2 and len(jax.local_devices()) == 1
        mesh = sharding.make_mesh(2)
    preset = config_lib.get_preset("test")
    params = model_b.init_params(preset.model_b, preset.corrector, jax.random.key(0))
    rng = np.random.default_rng(9)  # perturbed: a fresh corrector outputs exactly zero
    params = jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(x.dtype), params)

    sampler = model_b.make_sampler(preset.model_b, preset.corrector)
    keys = jax.random.split(jax.random.key(4), 4)
    images = sampler.sample_keys(sharding.replicate(params, mesh), sharding.shard_batch(keys, mesh))
    assert mesh is None or not images.is_fully_addressable  # half the batch was made in the other process

    cfg = preset.model_b.train
    batch = data._stand_in_crops()[:cfg.batch_size].astype(np.float32) / 127.5 - 1.0
    step = train.make_train_step(model_b.make_ar_loss(preset.model_b), cfg)
    state = step(sharding.replicate(train.init_state(params["ar"], cfg, 1), mesh), sharding.shard_batch(batch, mesh),
                 jax.random.key(3))
    mu = jax.tree.leaves(optax.tree_utils.tree_get(state.opt_state, "mu"))
    result = sharding.to_host({"images": images, "loss": state.losses[0], "mu": mu,
                               "params": jax.tree.leaves(state.params)})
    if jax.process_index() == 0:
        np.savez(out, images=result["images"], loss=result["loss"],
                 **{f"mu_{i}": m for i, m in enumerate(result["mu"])},
                 **{f"params_{i}": p for i, p in enumerate(result["params"])})
    print(f"process {jax.process_index()} of {jax.process_count()}: loss {float(result['loss']):.6f} OK", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
