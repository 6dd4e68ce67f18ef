"""The routed and cost stages on an N-device mesh; run by tests/test_pipeline.py in a fresh process.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=N python tests/_routed_mesh_check.py WORKDIR N

WORKDIR is a finished `test`-preset work dir made on one device (it is changed: its routed stage
re-runs). The reference is what one device made: the seeds stage's images of A and B for every seed.
  1. the routed stage with `devices=N`: it records the mesh, its decisions are the one-device ones,
     and its routed images (deployed router, probe + finish from the prefix or A) equal the seeds
     stage's;
  2. a forced split with uneven halves (3 seeds to A: padding rounded up to the mesh): B finished
     from a sharded prefix and A on the mesh equal the one-device images; the work is laid over all
     devices.
A may round differently at another per-device batch size (tests/_sharding_check.py's 1e-3), and so may B: on
the two-class test run, B finished from a prefix sharded one seed per device came 1.3e-5 from the one-device
image (the class-conditional corrector's DDPM steps carry XLA CPU rounding), hence 1e-4.
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np

from hybrid_jax import io, labeling, routing, sharding
from hybrid_jax.study import cost, pipeline

TOL_A, TOL_B = 1e-3, 1e-4


def is_sharded(x) -> bool:
    return len(x.sharding.device_set) == jax.device_count() and not x.sharding.is_fully_replicated


def main(workdir: str, n_dev: int) -> None:
    N_DEV = n_dev
    assert jax.device_count() == N_DEV, f"expected {N_DEV} devices, got {jax.devices()}"
    run = dataclasses.replace(pipeline.load_run(workdir), devices=N_DEV)
    mesh = run.mesh

    # 1. the routed stage on the mesh
    before = io.read_npz(run.path("routed", "decisions.npz"))
    run.path("routed", "done.json").unlink()
    pipeline.run_stages(run, ("routed",))
    after = io.read_npz(run.path("routed", "decisions.npz"))
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    result = io.read_json(run.path("routed", "cost.json"))
    check = result["consistency"]
    print(f"routed stage on {result['mesh_devices']} devices: routed images vs one device's {check}")
    assert result["mesh_devices"] == N_DEV
    assert check["max_abs_diff_a"] <= TOL_A and check["max_abs_diff_b"] <= TOL_B
    assert all(row["seconds_per_image"] > 0 for row in result["timing"]["rows"].values())

    # 2. a forced split with halves of 3 and n - 3 seeds
    seeds = io.read_npz(run.path("seeds", "seeds.npz"))
    n = run.cfg.seeds.batch_size // N_DEV * N_DEV  # a batch the probe shards evenly
    keys_a, keys_b = routing.seed_keys(seeds["seeds"][:n], run.cfg.seeds.base_seed)
    routed = pipeline.make_routed_sampler(run)
    pa, pb = sharding.replicate((pipeline.restore_params(run, "model_a"), pipeline.restore_model_b(run)), mesh)
    labels = seeds["labels"][:n]  # each seed's class (the run may be class-conditional)
    prefix = routed.probe(pb, *sharding.shard_batch((keys_b, labels), mesh))[0]
    assert is_sharded(prefix.attn) and is_sharded(prefix.state.cache.k)
    to_a = np.zeros(n, bool)
    to_a[[1, 4, 7]] = True
    split = routing.generate_split(routed.sampler_a, routed.sampler_b, pa, pb, keys_a, keys_b, to_a, prefix, mesh,
                                   labels)
    images_a, images_b = labeling.seed_images(seeds).values()
    reference = np.where(to_a[:, None, None, None], images_a[:n], images_b[:n])
    diff = np.abs(split - reference).max(axis=(1, 2, 3))
    print(f"forced split: max |{N_DEV} devices - 1 device| A {diff[to_a].max():.2e}, B {diff[~to_a].max():.2e}")
    assert diff[to_a].max() <= TOL_A and diff[~to_a].max() <= TOL_B
    work = cost.make_work(routed, pa, pb, run.cfg.router.prefix_steps, mesh)
    assert is_sharded(work.finish(prefix, np.arange(n)))
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
