"""Data parallelism: ``jax.jit`` over a device ``Mesh`` with ``NamedSharding``.

The batch axis is sharded over the ``"data"`` mesh axis and weights are
replicated — what ``pmap`` data parallelism became in current JAX.  The same
code runs on 1 CPU device, N GPUs or a TPU slice; BatchNorm statistics are
computed over the global batch (XLA inserts the cross-device reductions), so a
sharded step equals the single-device step up to float reassociation.

Multi-process (multi-host) runs use the same mesh over ``jax.devices()`` of
every process: each process feeds only its own rows of a global batch
(:func:`local_rows`), and :func:`shard_batch` assembles the global array with
``jax.make_array_from_process_local_data``; nothing else changes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """1-D mesh over ``devices`` (default: all local devices) with axis ``"data"``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` fully replicated on ``mesh`` (every process passes the same values)."""
    if jax.process_count() > 1:  # arrays committed to one local device cannot move to other hosts' devices
        tree = jax.device_get(tree)
    return jax.device_put(tree, replicated(mesh))


def local_rows(mesh: Mesh, global_batch: int) -> slice:
    """The rows ``[start, stop)`` of a global batch of ``global_batch`` examples this process feeds.

    ``slice(0, global_batch)`` in a single process; in a multi-process run the
    contiguous block held by this process's devices of the ``"data"`` axis.

    Raises:
      ValueError: ``global_batch`` is not divisible by the number of devices.
    """
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(f"batch of {global_batch} examples cannot be split over {n} devices; "
                         f"choose a batch size divisible by {n}")
    if jax.process_count() == 1:
        return slice(0, global_batch)
    index = batch_sharded(mesh).addressable_devices_indices_map((global_batch,))
    starts = sorted(i[0].start or 0 for i in index.values())
    size = global_batch // n
    if starts != list(range(starts[0], starts[0] + size * len(starts), size)):
        raise ValueError("this process's devices do not hold a contiguous block of the batch; "
                         "build the mesh with sharding.make_mesh() (devices in process order)")
    return slice(starts[0], starts[0] + size * len(starts))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Global arrays, sharded over ``"data"``, from this process's rows (leading batch dim).

    In a single process the rows are the whole batch ``[B, ...]``; with P
    processes each passes its ``local_rows`` block ``[B/P, ...]``.

    Raises:
      ValueError: the global batch is not divisible by the number of devices.
    """
    n = mesh.devices.size
    for x in jax.tree.leaves(tree):
        b = x.shape[0] * jax.process_count()
        if b % n:
            raise ValueError(
                f"batch of {b} examples cannot be split over {n} devices; "
                f"choose a batch size divisible by {n}")
    data = batch_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, data)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(data, x), tree)
