"""Data parallelism over a `jax.sharding.Mesh`: batch axis sharded, params replicated.

Computation follows data: callers place inputs with `replicate` / `shard_batch` and a plain
`jax.jit` partitions the program accordingly. With `mesh=None` both are the identity, so
one code path serves 1 or N devices.
On CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=8` gives 8 devices to test with.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Distributed:
    """How the processes of one multi-process run meet (`jax.distributed.initialize`'s arguments).
    None: JAX's own choice (`$JAX_COORDINATOR_ADDRESS`, or a cluster's scheduler: SLURM, Open MPI, TPU pods)."""

    coordinator_address: str | None = None  # host:port of process 0
    num_processes: int | None = None
    process_id: int | None = None


def initialize(dist: Distributed) -> None:
    """Join the run's processes, so that `jax.devices()` (and every mesh over it) spans them all.
    Call before anything else touches JAX's devices. On the CPU, collectives go over gloo (TCP)."""
    jax.distributed.initialize(coordinator_address=dist.coordinator_address, num_processes=dist.num_processes,
                               process_id=dist.process_id)


def multi_process() -> bool:
    """Whether this process is one of several joined by `initialize` (never starts a JAX backend otherwise)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes the run's files: the only process, or process 0 of several (the others
    compute alike and read what it wrote, so the work dir must be one shared folder)."""
    return not multi_process() or jax.process_index() == 0


def sync(tag: str) -> None:
    """Wait until every process reached `sync(tag)` (the same tags in the same order; a no-op in one process)."""
    if multi_process():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(tag)


def agree(value: Any) -> Any:
    """Process 0's `value` (a small array or number) in every process: one decision taken by all alike."""
    if not multi_process():
        return value
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(np.asarray(value))


def to_host(tree: Any) -> Any:
    """NumPy copies of every leaf; a leaf sharded across processes is gathered from all of them first."""
    from jax.experimental import multihost_utils

    gather = lambda x: (np.asarray(multihost_utils.process_allgather(x, tiled=True))
                        if isinstance(x, jax.Array) and not x.is_fully_addressable else np.asarray(x))
    return jax.tree.map(gather, tree)


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


def _put(x, where: NamedSharding):
    """`jax.device_put`, also onto a mesh that spans processes: each process holds the whole value
    (as the library's callers do: every process derives all seed keys and batches) and places its own part."""
    if where.is_fully_addressable:
        return jax.device_put(x, where)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_put(jax.random.key_data(x), where), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, where, lambda idx: host[idx])


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: _put(x, NamedSharding(mesh, P())), tree)


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Shard the leading (batch) axis of every leaf across the mesh."""
    if mesh is None:
        return tree
    n = mesh.shape[DATA_AXIS]
    for leaf in jax.tree.leaves(tree):
        if leaf.shape[0] % n:
            raise ValueError(f"batch size {leaf.shape[0]} is not divisible by the {n} devices of the mesh; "
                             f"choose a batch size that is a multiple of {n}")
    return jax.tree.map(lambda x: _put(x, NamedSharding(mesh, P(DATA_AXIS))), tree)


def pad_batch(tree: Any, mesh: Mesh | None) -> tuple[Any, int]:
    """(tree with its leading axis padded to a multiple of the mesh size by repeating row 0, the real size),
    so any batch can be sharded; callers keep the first `n` rows of the results."""
    n = jax.tree.leaves(tree)[0].shape[0]
    pad = 0 if mesh is None else -n % mesh.shape[DATA_AXIS]
    if not pad:
        return tree, n
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]), tree), n


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
