"""Data parallelism: ``jax.jit`` over a device ``Mesh`` with ``NamedSharding``.

The batch axis is sharded over the ``"data"`` mesh axis and weights are
replicated — what ``pmap`` data parallelism became in current JAX.  The same
code runs on 1 CPU device, N GPUs or a TPU slice; BatchNorm statistics are
computed over the global batch (XLA inserts the cross-device reductions), so a
sharded step equals the single-device step up to float reassociation.
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
    """Place every leaf of ``tree`` fully replicated on ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Place host arrays with leading batch dim ``B`` sharded over ``"data"``.

    Raises:
      ValueError: ``B`` is not divisible by the number of devices.
    """
    n = mesh.devices.size
    for x in jax.tree.leaves(tree):
        if x.shape[0] % n:
            raise ValueError(
                f"batch of {x.shape[0]} examples cannot be split over {n} devices; "
                f"choose a batch size divisible by {n}")
    return jax.device_put(tree, batch_sharded(mesh))
