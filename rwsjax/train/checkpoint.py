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


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated/corrupt, or does not match the model it is loaded into."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint is readable but its tree, shapes or dtypes differ from the model's."""


def _leaves(tree) -> dict[str, Any]:
    return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def first_mismatch(saved: PyTree, like: PyTree) -> str | None:
    """The first difference in structure, shape or dtype between a checkpoint's tree and ``like``.

    ``saved`` holds anything with ``.shape``/``.dtype`` (Orbax ``ArrayMetadata`` or arrays).
    Returns e.g. ``"params/conv1/kernel: shape (3, 3, 3, 64) in the checkpoint, (3, 3, 3, 16)
    expected (and 20 more differences)"``, or None when they match.
    """
    a, b = _leaves(saved), _leaves(like)
    problems = []
    for key in sorted(set(a) | set(b), key=lambda k: ("params" not in k.split("/"), k)):  # weights first
        if key not in a:
            problems.append(f"{key}: missing from the checkpoint")
        elif key not in b:
            problems.append(f"{key}: in the checkpoint but not in the model")
        elif tuple(a[key].shape) != tuple(np.shape(b[key])):
            problems.append(f"{key}: shape {tuple(a[key].shape)} in the checkpoint, {tuple(np.shape(b[key]))} "
                            "expected")
        elif np.dtype(a[key].dtype) != np.dtype(getattr(b[key], "dtype", np.asarray(b[key]).dtype)):
            problems.append(f"{key}: dtype {np.dtype(a[key].dtype)} in the checkpoint, "
                            f"{np.dtype(getattr(b[key], 'dtype', np.asarray(b[key]).dtype))} expected")
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else "")


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
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler(), "best": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})  # known up front: metadata readable on resume

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
        where = os.path.join(self.directory, str(step))
        try:
            saved = self._manager.item_metadata(int(step))
            saved = saved.get("state") if saved is not None else None
            if saved is None or not jax.tree.leaves(saved):
                raise ValueError("Orbax finds no array metadata")
            problem = first_mismatch(saved, state)
        except Exception as e:  # noqa: BLE001 — unreadable metadata = damaged checkpoint
            raise CheckpointError(f"checkpoint {where} is unreadable ({type(e).__name__}: {e}); it is truncated "
                                  "or corrupt") from None
        if problem:
            raise CheckpointMismatchError(f"checkpoint {where} does not match this model: {problem}. It was written by "
                                  "another config (model, width, dataset); use a new --workdir or "
                                  "--config.redo for this stage")
        try:
            out = self._manager.restore(int(step), args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(state, sharding)),
                best=ocp.args.StandardRestore(_abstract(best, sharding)), meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {where} could not be read ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300]}); it is truncated or corrupt") from None
        return out.state, out.best, out.meta

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def close(self) -> None:
        self._manager.close()


def save_variables(path: str, variables: PyTree, info: dict | None = None) -> None:
    """Write final variables (``{"params", "batch_stats"}``) atomically to directory ``path``.

    ``info`` (JSON-able; :func:`rwsjax.workflows.common.describe`: architecture, width, classes,
    normalization, dataset, config, rwsjax version) is stored with them as the checkpoint's custom metadata,
    so the directory says what model it holds (:func:`read_info`, :func:`rwsjax.load`).
    """
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.abspath(path), variables, force=True,
               custom_metadata=None if info is None else {"rwsjax": info})
    ckptr.wait_until_finished()


def read_info(path: str) -> dict | None:
    """The ``info`` :func:`save_variables` stored in ``path``, or None (no such record: an older rwsjax wrote
    it, or it is not a completed checkpoint)."""
    if not exists(path):
        return None
    try:
        custom = ocp.StandardCheckpointer().metadata(os.path.abspath(path)).custom_metadata or {}
    except Exception:  # noqa: BLE001 — unreadable metadata: load_variables reports it
        return None
    return custom.get("rwsjax")


def load_variables(path: str, like: PyTree | None = None) -> PyTree:
    """Read variables saved by :func:`save_variables`; ``like`` fixes structure, shapes and dtypes.

    Returns host (NumPy) arrays when ``like`` is given (restored replicated, so
    this works on any device/process count).
    """
    path = os.path.abspath(path)
    if not exists(path):
        raise CheckpointError(f"no checkpoint at {path}: expected an Orbax variables directory (e.g. "
                              "WORKDIR/at/final) containing _CHECKPOINT_METADATA" +
                              ("; this one is incomplete (a killed write?)" if os.path.isdir(path) else ""))
    ckptr = ocp.StandardCheckpointer()
    try:
        saved = ckptr.metadata(path)
        saved = getattr(getattr(saved, "item_metadata", None), "tree", None)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); it is truncated or "
                              "corrupt") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {path} is unreadable (Orbax finds no array metadata); it is truncated "
                              "or corrupt")
    if like is not None:
        problem = first_mismatch(saved, like)
        if problem:
            raise CheckpointMismatchError(f"checkpoint {path} does not match the configured model: {problem}. Check "
                                  "--config.model.name / width_multiplier / data.name against the run that "
                                  "wrote it")
    try:
        if like is None:
            return ckptr.restore(path)
        return jax.device_get(ckptr.restore(path, _abstract(like)))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} could not be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300]}); it is truncated or corrupt") from None


def exists(path: str) -> bool:
    """True when ``path`` is a completed Orbax checkpoint directory."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))


#: Models shipped inside Python packages, by ``package:file``: the file's path in the installed package.
#: ``pyautoattack:model_test.pt``: the official AutoAttack code's CIFAR-10 ResNet-18 (inputs in [0, 1]).
PACKAGED = {"pyautoattack:model_test.pt": ("pyautoattack", ("examples", "model_test.pt"))}


def checkpoint_path(path: str) -> str:
    """``path``, or for a packaged model (`PACKAGED`, e.g. ``pyautoattack:model_test.pt``) its installed file.

    Raises:
      CheckpointError: an unknown ``package:`` name, or the package is not installed (the message names the
        pip command).
    """
    if path not in PACKAGED:
        if path and not os.path.exists(path) and path.split(":", 1)[0] in {p for p, _ in PACKAGED.values()}:
            raise CheckpointError(f"checkpoint {path!r}: unknown packaged model; known: {sorted(PACKAGED)}")
        return path
    package, parts = PACKAGED[path]
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"checkpoint {path!r} is shipped with the {package} package, which is not "
                              f"installed: pip install --no-deps {package}")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)
