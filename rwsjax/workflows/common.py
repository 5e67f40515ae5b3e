"""What every workflow needs: splits, model, initial variables, mesh, compiled evaluation."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax import distributed
from rwsjax.config_validation import resolve_defaults
from rwsjax.data.sources import DATASETS
from rwsjax.data.splits import load_splits
from rwsjax.models.registry import create_model
from rwsjax.train import checkpoint, sharding, steps
from rwsjax.train.evaluate import evaluate
from rwsjax.weights.modules import call_order, kernels


def summary_writer(config, workdir):
    """The run's :class:`~rwsjax.report.metrics.MetricWriter` (None when ``log.tensorboard`` and ``log.wandb``
    are off, and on every process but 0)."""
    wandb = bool(config.log.get("wandb", False))
    if not (config.log.tensorboard or wandb) or not distributed.is_main():
        return None
    from rwsjax.report.metrics import MetricWriter
    return MetricWriter(workdir, config, tensorboard=config.log.tensorboard, wandb=wandb,
                        wandb_project=config.log.get("wandb_project", "rwsjax"))


def subset(split, size, seed):
    """A seeded random subset of ``size`` examples (all when size is None or ≥ len)."""
    if size is None or size >= len(split):
        return split
    return split.subset(np.sort(np.random.default_rng(seed).permutation(len(split))[:size]))


def normalization(config, dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the model applies to its [0, 1] input: ``config.model.mean/std``, or ``dataset``'s."""
    info = DATASETS[dataset]
    mean, std = config.model.get("mean"), config.model.get("std")
    return (tuple(info.mean) if mean is None else tuple(mean)), (tuple(info.std) if std is None else tuple(std))


def build_model(config, dataset: str):
    """The configured architecture with ``dataset``'s class count and the configured normalization.

    Returns ``(model, example)``: an unbound Flax module and a zero float32 batch ``[1, H, W, 3]``.
    """
    info = DATASETS[dataset]
    mean, std = normalization(config, dataset)
    model = create_model(config.model.name, num_classes=info.num_classes,
                         width_multiplier=config.model.width_multiplier, mean=mean, std=std)
    return model, jnp.zeros((1,) + info.image_shape, jnp.float32)


def describe(config, dataset: str) -> dict:
    """What a saved model is, stored with its variables (:func:`rwsjax.train.checkpoint.save_variables`):
    ``{"architecture", "width_multiplier", "num_classes", "mean", "std", "dataset", "config", "rwsjax_version"}``
    — enough for :func:`rwsjax.load` and the evaluate config to rebuild the model without flags."""
    import rwsjax
    mean, std = normalization(config, dataset)
    return {"architecture": config.model.name, "width_multiplier": float(config.model.width_multiplier),
            "num_classes": DATASETS[dataset].num_classes, "mean": list(mean), "std": list(std), "dataset": dataset,
            "config": json.loads(config.to_json()), "rwsjax_version": rwsjax.__version__}


def prepare_missing(dataset: str, config) -> None:
    """`rwsjax.data.prepare.ensure` of `dataset` with the run's ``data`` settings (process 0 prepares, all wait).

    Raises:
      DatasetNotFoundError: it is missing and cannot be prepared (one line: the archive, its URL, the flag).
    """
    from rwsjax.data.prepare import ensure
    d = config.data
    kwargs = dict(manual_dir=d.get("manual_dir"), download=d.get("download", True), flag="--config.data.manual_dir")
    if jax.process_count() == 1:
        ensure(dataset, d.data_dir, **kwargs)
        return
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
        ensure(dataset, d.data_dir, **kwargs)
    multihost_utils.sync_global_devices(f"rwsjax prepared {dataset}")


def init_variables(model, example, seed: int) -> dict:
    """Host ``{"params", "batch_stats"}`` (``batch_stats`` empty for models without BatchNorm, e.g. VGG-16)."""
    v = dict(jax.device_get(jax.jit(lambda k: model.init(k, example, train=False))(jax.random.PRNGKey(seed))))
    v.setdefault("batch_stats", {})
    return v


def load_model(path: str, like: dict, model, *, partial: bool = False) -> dict:
    """Variables for ``model`` from an rwsjax (Orbax) variables directory or a PyTorch state_dict file.

    Args:
      path: an Orbax directory written by rwsjax (``WORKDIR/at/final``), a ``.pt``/``.pth``/``.safetensors``
        PyTorch ``state_dict`` of the same architecture (see :mod:`rwsjax.models.pytorch_io`), or a packaged
        model (:func:`rwsjax.train.checkpoint.checkpoint_path`: ``pyautoattack:model_test.pt``).
      like: the model's initial variables (names, shapes and dtypes to match).
      model: the Flax module; its ``mean``/``std`` are checked against normalization buffers in the file.
      partial: accept a file whose classifier head has another number of classes (the head is left as in
        ``like``); used for θ_pre in RWS.

    Returns:
      Host variables ``{"params", "batch_stats"}`` shaped like ``like``.

    Raises:
      CheckpointError (a ValueError): no such file or directory, an unreadable file or unknown format, torch
        missing for a ``.pt``/``.pth``, names/shapes that do not fit the model (listed by name), or a file that
        normalizes with other constants than the model (the message gives the ``--config.model.mean/std``
        to use).
    """
    path = checkpoint.checkpoint_path(path)
    if os.path.isdir(path):
        return checkpoint.load_variables(path, like=like)
    if not os.path.isfile(path):
        raise checkpoint.CheckpointError(
            f"checkpoint {path!r} does not exist: give an rwsjax variables directory (e.g. runs/rift_cpu/at/final) "
            "or a PyTorch state_dict file (.pt, .pth, .safetensors)")
    from rwsjax.models import pytorch_io
    try:
        result = pytorch_io.load_pytorch_checkpoint(path, like, partial=partial)
    except (ValueError, ImportError) as e:  # unreadable, torch missing for .pt, names/shapes that do not fit
        raise checkpoint.CheckpointError(" ".join(str(e).split())) from e
    if result.mean is not None:
        have = (tuple(model.mean), tuple(model.std))
        if not np.allclose(have, (result.mean, result.std), atol=1e-6):
            raise checkpoint.CheckpointError(
                f"{path} normalizes its input inside the model with mean={result.mean}, std={result.std}, but the "
                f"configured model uses mean={have[0]}, std={have[1]}: run with --config.model.mean="
                f"{','.join(f'{m:g}' for m in result.mean)} --config.model.std={','.join(f'{v:g}' for v in result.std)}")
    print(f"[import] {path}: {len(jax.tree_util.tree_leaves(result.variables))} arrays"
          + (f"; ignored {', '.join(result.ignored)}" if result.ignored else "")
          + (f"; kept from the initial model: {', '.join(result.kept)}" if result.kept else "")
          + ("" if result.mean is not None else _normalization_note(path, model)))
    return result.variables


def _normalization_note(path: str, model) -> str:
    """The import line's note on the input normalization of a file that does not store it."""
    from rwsjax.models import robustbench
    have = (tuple(model.mean), tuple(model.std))
    table = robustbench.normalization_of(path)
    if table is not None and np.allclose(have, table, atol=1e-6):
        return f"; input normalization mean={have[0]}, std={have[1]} from RobustBench's table"
    return (f"; the file does not state its input normalization: the model uses mean={have[0]}, std={have[1]} "
            "(set --config.model.mean/std if it was trained otherwise, 0,0,0 / 1,1,1 for none)")


def describe_autoattack(aa: dict) -> str:
    """One sentence for a report on a :meth:`Task.autoattack` result: version, attacks, norm, ε, images."""
    eps = f"{aa['eps'] * 255:g}/255" if aa["norm"] == "linf" else f"{aa['eps']:g}"
    return (f"AA = AutoAttack `{aa['version']}` ({', '.join(aa['attacks'])}), {aa['norm']} ε = {eps}, on "
            f"{aa['n']:,} test images")


def json_artifact(name: str) -> Callable:
    """A stage's ``load``: ``ctx -> the JSON file WORKDIR/name`` (``ctx.workdir``)."""
    from rwsjax.report.writers import read_json
    return lambda ctx: read_json(os.path.join(ctx.workdir, name))


class _Frozen(tuple):
    """A dict argument as a hashable tuple of items."""


@functools.lru_cache(maxsize=None)
def _compiled(make: Callable, model, mesh, frozen: tuple) -> Callable:
    return make(model, mesh, **{k: dict(v) if isinstance(v, _Frozen) else v for k, v in frozen})


def compiled(make: Callable, model, mesh, **kwargs) -> Callable:
    """``make(model, mesh, **kwargs)`` built once per distinct arguments for the whole process: the one cache of
    compiled evaluation steps (``steps.make_eval_step``, ``autoattack.make_autoattack``, ...).  Flax modules
    and meshes compare by value, so two tasks with the same architecture share their steps."""
    frozen = tuple(sorted((k, _Frozen(sorted(v.items())) if isinstance(v, dict) else v) for k, v in kwargs.items()))
    return _compiled(make, model, mesh, frozen)


class Task:
    """One dataset of a workflow: its splits, model, initial variables, mesh and compiled evaluation.

    Splits and variables are read on first use, so a run whose stages are all done reads no data.

    Args:
      config: the run's config (``data``, ``model``, ``eval`` blocks; ``resolve_defaults`` is applied).
      workdir: the run's directory (generated corrupted sets go to ``WORKDIR/corrupted_tfds``).
      dataset: a :data:`~rwsjax.data.sources.DATASETS` name; default ``config.data.name``.
      sizes: ``(val_size, train_size, test_size)``; default the ``config.data`` ones.
      mesh: the device mesh (default: every device); tasks of one run share it.
      seed: seed of the initial variables (default ``config.seed``).
    """

    def __init__(self, config, workdir: str, dataset: str | None = None, *, sizes=None, mesh=None,
                 seed: int | None = None):
        resolve_defaults(config)  # idempotent; main has done it already for command-line runs
        self.config, self.workdir = config, workdir
        self.dataset = dataset or config.data.name
        self.sizes = sizes or (config.data.val_size, config.data.train_size, config.data.test_size)
        self.mesh = mesh if mesh is not None else sharding.make_mesh()
        self.seed = config.seed if seed is None else seed
        self.model, self.example = build_model(config, self.dataset)
        self.eval_attack = steps.attack_kwargs(config.eval) if "steps" in config.eval else None
        self._corrupted = {}

    @functools.cached_property
    def writer(self):
        """The run's metric writer (:func:`summary_writer`)."""
        return summary_writer(self.config, self.workdir)

    def close(self) -> None:
        """Flush and close the writer, if one was opened."""
        if self.__dict__.get("writer") is not None:
            self.writer.close()

    @functools.cached_property
    def splits(self) -> dict:
        c = self.config
        val, train, test = self.sizes
        prepare_missing(self.dataset, c)
        splits = load_splits(self.dataset, data_dir=c.data.data_dir, val_size=val, train_size=train,
                             test_size=test, seed=c.seed, lazy=jax.process_count() > 1)  # per-host reading
        print(f"[data] {self.dataset}: train {len(splits['train'])}, val {len(splits['val'])}, test "
              f"{len(splits['test'])}; {len(jax.devices())} device(s): {jax.devices()[0].platform}"
              + (f" on {jax.process_count()} processes" if jax.process_count() > 1 else ""))
        cores = os.cpu_count() or 1
        if jax.devices()[0].platform == "cpu" and len(jax.devices()) == 1 and cores > 1:
            print(f"[data] hint: this CPU has {cores} cores; --cpu_devices=0 (one JAX device per core, batch sizes "
                  "divisible by it) runs the PGD-AT step ~20% faster (README, Benchmarks)")
        return splits

    @functools.cached_property
    def init_variables(self) -> dict:
        return init_variables(self.model, self.example, self.seed)

    @functools.cached_property
    def info(self) -> dict:
        """:func:`describe` of this task's model: saved with every variables directory it writes."""
        return describe(self.config, self.dataset)

    @functools.cached_property
    def kernels(self) -> list[str]:
        """Every conv/dense kernel in call order, in the papers' dotted names (``layer2.1.conv2``)."""
        return kernels(self.init_variables["params"], call_order(self.model, self.init_variables, self.example))

    @functools.cached_property
    def val_robust(self):
        """The validation images attacked during selection (``at.val_robust_size`` seeded subset)."""
        at = self.config.get("at") or {}
        return subset(self.splits["val"], at.get("val_robust_size"), self.config.seed + 1)

    def eval_step(self, restarts: int | None):
        """Clean-only (``restarts=None``) or PGD (``eval`` block) with ``restarts`` random restarts."""
        attack = None if restarts is None else self.eval_attack
        return compiled(steps.make_eval_step, self.model, self.mesh, attack=attack, restarts=restarts or 1)

    def evaluate(self, step, variables, split, desc, per_example: bool = False) -> dict:
        """:func:`rwsjax.train.evaluate.evaluate` with the run's batch size and seed."""
        return evaluate(step, variables, split, batch_size=self.config.eval.batch_size, mesh=self.mesh,
                        seed=self.config.seed, desc=desc, per_example=per_example)

    def correct(self, variables, split, desc) -> np.ndarray:
        """Per example of ``split``, in order: classified correctly (clean, BatchNorm in evaluation mode), bool ``[N]``."""
        return self.evaluate(self.eval_step(None), variables, split, desc, per_example=True)["per_example"]["clean"]

    def accuracy(self, variables, split, desc) -> float:
        """Clean accuracy (%) on ``split``, BatchNorm in evaluation mode."""
        return self.evaluate(self.eval_step(None), variables, split, desc)["clean_accuracy"]

    def autoattack(self, variables, name: str) -> dict:
        """AutoAttack (``eval.autoattack``: standard | plus | rand | lite | custom; :mod:`rwsjax.attacks.autoattack`)
        on the test split (or its seeded ``eval.autoattack_size`` subset).

        Resumable: the progress is kept in ``WORKDIR/autoattack_{name}.state.npz`` (removed when done); the
        adversarial examples go to ``WORKDIR/autoattack_{name}.npz`` (``x_adv`` float32 ``[N, H, W, C]``,
        ``y_adv``, ``robust``, ``clean``, ``indices``: positions in the TFDS test split).

        Returns:
          ``{"clean_accuracy", "autoattack_accuracy": %, "accuracy_after": {attack: %}, "version", "attacks",
          "settings", "n", "seconds", "warnings", "adversarial_examples": path}``.
        """
        from rwsjax.attacks import autoattack as aa_lib
        c = self.config.eval
        kwargs = aa_lib.config_kwargs(c)
        attack = compiled(aa_lib.make_autoattack, self.model, self.mesh, **kwargs)
        split = subset(self.splits["test"], c.autoattack_size, self.config.seed + 2)
        state = os.path.join(self.workdir, f"autoattack_{name}.state.npz")
        out = attack.run(variables, split.images, split.labels, batch_size=int(c.batch_size), seed=self.config.seed,
                         state_path=state if distributed.is_main() else None)
        path = os.path.join(self.workdir, f"autoattack_{name}.npz")
        if distributed.is_main():
            from rwsjax.atomic import atomic_path
            with atomic_path(path, suffix=".npz") as tmp:
                np.savez(tmp, x_adv=out["x_adv"], y_adv=out["y_adv"], robust=out["robust"], clean=out["clean"],
                         indices=split.source_indices)
            if os.path.exists(state):
                os.remove(state)
        return {"clean_accuracy": out["clean_accuracy"], "autoattack_accuracy": out["robust_accuracy"],
                "accuracy_after": out["accuracy_after"], "version": c.autoattack, "attacks": out["attacks"],
                "settings": dataclasses.asdict(attack.settings), "eps": out["eps"], "norm": out["norm"],
                "n": out["n"], "seconds": out["seconds"], "warnings": out["warnings"], "adversarial_examples": path}

    def corrupted(self, name: str, split: str, severity: int):
        """``split`` (train/val/test) of this task corrupted by ``name`` at ``severity``, generated once into
        ``config.corruptions.data_dir`` (default ``WORKDIR/corrupted_tfds``) from exactly the split's images."""
        from rwsjax import corruptions as cc
        key = (name, split, severity)
        if key not in self._corrupted:
            source = "test" if split == "test" else "train"
            if source == "train":  # the train and val images both come from the TFDS train split
                idx = np.sort(np.concatenate([self.splits["train"].source_indices,
                                              self.splits["val"].source_indices]))
            else:
                idx = self.splits["test"].source_indices
            corruptions = self.config.get("corruptions") or {}
            directory = corruptions.get("data_dir") or os.path.join(self.workdir, "corrupted_tfds")
            with distributed.main_first(f"corrupt {self.dataset} {name} {source}"):
                cc.generate(self.dataset, name, severity, out_data_dir=directory, split=source, indices=idx,
                            seed=self.config.seed, source_data_dir=self.config.data.data_dir, progress=False)
            self._corrupted[key] = cc.load_corrupted(self.dataset, name, severity, data_dir=directory,
                                                     split=source, indices=self.splits[split].source_indices,
                                                     progress=False)
        return self._corrupted[key]
