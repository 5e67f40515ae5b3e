"""Orbax checkpoints: resumable training state plus JSON metadata, and final variables.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a killed run never leaves a half-written checkpoint that looks
finished; on restart the latest complete step is restored.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


def _abstract(tree: PyTree, sharding=None) -> PyTree:
    """Shapes/dtypes of ``tree`` placed with ``sharding`` (default: replicated over all devices).

    Restoring into the *current* mesh is what lets a checkpoint written on N
    devices (or hosts) continue on M.
    """
    if sharding is None:
        from rwsjax.train.sharding import make_mesh, replicated
        sharding = replicated(make_mesh())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), getattr(x, "dtype", None) or np.asarray(x).dtype,
                                                     sharding=sharding), tree)


class Checkpoints:
    """Rolling checkpoints of ``{"state": pytree, "best": pytree, "meta": json}`` in ``directory``.

    ``state`` is the full training state (weights, BN statistics, optimizer
    state, step); ``best`` the variables of the best epoch so far; ``meta`` a
    JSON dict (epoch history, best metric).  Keeps the ``max_to_keep`` latest.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, *, state: PyTree, best: PyTree, meta: dict) -> None:
        self._manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), best=ocp.args.StandardSave(best),
            meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, *, state: PyTree, best: PyTree, sharding=None) -> tuple[PyTree, PyTree, dict]:
        """Restore ``step`` into the structure/shapes/dtypes of the templates, replicated with ``sharding``.

        The checkpoint may come from any number of devices or processes.
        """
        out = self._manager.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(state, sharding)),
            best=ocp.args.StandardRestore(_abstract(best, sharding)), meta=ocp.args.JsonRestore()))
        return out.state, out.best, out.meta

    def close(self) -> None:
        self._manager.close()


def save_variables(path: str, variables: PyTree) -> None:
    """Write final variables (``{"params", "batch_stats"}``) atomically to directory ``path``."""
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.abspath(path), variables, force=True)
    ckptr.wait_until_finished()


def load_variables(path: str, like: PyTree | None = None) -> PyTree:
    """Read variables saved by :func:`save_variables`; ``like`` fixes structure, shapes and dtypes.

    Returns host (NumPy) arrays when ``like`` is given (restored replicated, so
    this works on any device/process count).
    """
    ckptr = ocp.StandardCheckpointer()
    if like is None:
        return ckptr.restore(os.path.abspath(path))
    return jax.device_get(ckptr.restore(os.path.abspath(path), _abstract(like)))


def exists(path: str) -> bool:
    """True when ``path`` is a completed Orbax checkpoint directory."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))
