"""Host loops that keep the device busy: per-step random keys made on the device, results fetched late.

A jitted step returns as soon as it is queued (JAX's asynchronous dispatch).  A loop that reads each
step's result before it builds the next batch leaves the device idle while the host slices, copies and
queues that batch; fetching results ``depth`` steps late overlaps the two.  A Python ``int`` handed to a
device computation (``jax.random.fold_in(key, i)``, ``array[i]``) is a host-to-device copy per step.  A
train step folds its own ``state.step`` into the run's key (no copy); loops without such a counter on the
device (evaluation batches, crafting MRC's examples) take their keys from :func:`fold_in_keys`, one
program for the whole loop.  Loops call their step (after the
batch's one explicit copy) under :func:`guard`, so ``RWSJAX_TRANSFER_GUARD=disallow`` (the tests) turns
any implicit copy left in them into an error (``jax.transfer_guard``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.train import sharding

GUARD_ENV = "RWSJAX_TRANSFER_GUARD"
LEVELS = ("allow", "log", "disallow", "log_explicit", "disallow_explicit")


def guard():
    """``jax.transfer_guard($RWSJAX_TRANSFER_GUARD)`` (``allow``/``log``/``disallow``...), else nothing.

    Raises:
      ValueError: the variable holds a level ``jax.transfer_guard`` does not know.
    """
    level = os.environ.get(GUARD_ENV)
    if not level:
        return contextlib.nullcontext()
    if level not in LEVELS:
        raise ValueError(f"{GUARD_ENV}={level!r} is not a jax.transfer_guard level; use one of {LEVELS} or unset it")
    return jax.transfer_guard(level)


@functools.lru_cache(maxsize=None)
def _keys_program(count: int, out_sharding):
    def keys(key, start):
        steps = start + jnp.arange(count, dtype=jnp.uint32)
        return tuple(jnp.unstack(jax.vmap(lambda s: jax.random.fold_in(key, s))(steps)))
    return jax.jit(keys, out_shardings=out_sharding)


def fold_in_keys(key: jax.Array, start: int, count: int, mesh=None) -> tuple[jax.Array, ...]:
    """``(fold_in(key, start), ..., fold_in(key, start + count - 1))`` from one device program.

    Bit-identical to calling ``jax.random.fold_in(key, i)`` per step (same ``uint32`` data), without a
    host-to-device copy per step.

    Args:
      key: a raw ``uint32[2]`` PRNG key (``jax.random.PRNGKey``), on the host or any device.
      start: first index, ``0 <= start``, ``start + count <= 2**32``.
      count: number of keys (one compiled program per distinct ``count``).
      mesh: place every key replicated on this ``Mesh`` (as the jitted steps take them); default: the
        default device.

    Returns:
      ``count`` keys, each ``uint32[2]``.
    """
    if count == 0:
        return ()
    out = sharding.replicated(mesh) if mesh is not None else None
    if mesh is not None:
        key, start = sharding.replicate((np.asarray(jax.device_get(key)), np.uint32(start)), mesh)
    else:
        key, start = jax.device_put((key, np.uint32(start)))
    return _keys_program(count, out)(key, start)


def fetch_lagged(results: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """``jax.device_get`` of each item of ``results``, in order, ``depth`` items behind the newest.

    Pulling item ``i + depth`` from ``results`` (which queues that step on the device) happens before item
    ``i`` is fetched, so the host prepares and queues the next steps while the device computes; ``depth=0``
    fetches each item as soon as it is produced (a synchronous loop).

    Args:
      results: an iterable (typically a generator) of pytrees of ``jax.Array`` from jitted calls.
      depth: how many items may be queued but not yet fetched (each holds its inputs' device memory).

    Raises:
      ValueError: ``depth < 0``.
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    pending = collections.deque()
    for item in results:
        pending.append(item)
        if len(pending) > depth:
            yield jax.device_get(pending.popleft())
    while pending:
        yield jax.device_get(pending.popleft())
