"""Data parallelism over a `jax.sharding.Mesh`: batch axis sharded, params replicated.

Computation follows data: callers place inputs with `replicate` / `shard_batch` and a plain
`jax.jit` partitions the program accordingly. With `mesh=None` both are the identity, so
one code path serves 1 or N devices.
On CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=8` gives 8 devices to test with.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


class MeshError(ValueError):
    """More devices were asked for than the processes can see; raised before any work starts."""


def check_devices(num_devices: int) -> None:
    """Refuse a mesh larger than the devices available (never a silent fallback to fewer)."""
    available = jax.devices()
    if num_devices < 0 or num_devices > len(available):
        kinds = ", ".join(sorted({f"{d.platform}" for d in available}))
        raise MeshError(f"--devices {num_devices} asks for {num_devices} devices but {len(available)} are available "
                        f"({kinds}, {jax.process_count()} process(es)); use --devices {len(available)} or fewer "
                        "(0: no mesh)")


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (all by default; in a multi-process run, the
    devices of every process)."""
    if num_devices:
        check_devices(num_devices)
    devices = jax.devices()[: num_devices or None]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Shard the leading (batch) axis of every leaf across the mesh."""
    if mesh is None:
        return tree
    n = mesh.shape[DATA_AXIS]
    for leaf in jax.tree.leaves(tree):
        if leaf.shape[0] % n:
            raise ValueError(f"batch size {leaf.shape[0]} is not divisible by the {n} devices of the mesh; "
                             f"choose a batch size that is a multiple of {n}")
    return jax.device_put(tree, NamedSharding(mesh, P(DATA_AXIS)))


def constrain_batch(tree: Any, mesh: Mesh | None, axes: Any = None) -> Any:
    """Lay the batch axis of every leaf over the mesh, inside `jax.jit` or eagerly: axis 0, or each
    leaf's own axis as given by `axes` (a tree of ints like `tree`; None: replicated). For values
    made by indexing sharded ones (a gather), whose layout XLA would otherwise choose."""
    if mesh is None:
        return tree
    if axes is None:
        axes = jax.tree.map(lambda _: 0, tree)
    spec = lambda a: NamedSharding(mesh, P() if a is None else P(*([None] * a), DATA_AXIS))
    return jax.lax.with_sharding_constraint(tree, jax.tree.map(spec, axes, is_leaf=lambda a: a is None))
