"""Training the RWS model zoo: θ_pre, θ_clean and one θ_c per corruption, all resumable.

Every model is a stage of the RWS workflow: its final variables go to
``WORKDIR/zoo/<name>/final`` and its training checkpoints to
``WORKDIR/zoo/<name>/checkpoints`` (resumed when present).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from rwsjax.data.batching import steps_per_epoch
from rwsjax.data.sources import Split
from rwsjax.report.writers import write_json
from rwsjax.train import checkpoint, steps
from rwsjax.train.loop import fit
from rwsjax.train.state import TrainState, lr_schedule, sgd


def transplant(source: dict, target: dict) -> tuple[dict, list[str]]:
    """Copy every leaf of ``source`` whose path and shape exist in ``target``; keep ``target``'s others.

    Used to start a model for a dataset with a different number of classes from θ_pre:
    everything but the classifier head is copied.

    Returns:
      ``(variables, kept)`` — the merged variables and the paths of the leaves kept from
      ``target`` (freshly initialized), e.g. ``["params/linear/kernel", "params/linear/bias"]``.
    """
    src = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(source)}
    kept = []

    def pick(path, leaf):
        key = jax.tree_util.keystr(path)
        if key in src and np.shape(src[key]) == np.shape(leaf):
            return np.asarray(src[key])
        kept.append("/".join(str(getattr(k, "key", k)) for k in path))
        return leaf

    return jax.tree_util.tree_map_with_path(pick, target), kept


def train(name: str, *, task, init: dict, train_split: Split, val_split: Split, cfg, seed: int) -> dict:
    """Fine-tune (or pretrain) ``init`` on ``train_split`` with SGD; best epoch by ``val_split`` accuracy.

    ``cfg`` holds ``epochs, batch_size, learning_rate, momentum, weight_decay, decay_epochs,
    decay_factor`` (the RWS paper: lr 0.01, momentum 0.9, wd 5e-4).  Augmentation: pad-4
    reflect crop + flip.  ``task`` (:class:`~rwsjax.workflows.common.Task`) gives the model, mesh,
    compiled evaluation and writer.  Writes ``WORKDIR/zoo/<name>/final``; returns host variables of the
    best epoch.
    """
    model, mesh = task.model, task.mesh
    base = os.path.join(task.workdir, "zoo", name)
    final = os.path.join(base, "final")
    spe = steps_per_epoch(len(train_split), cfg.batch_size)
    tx = sgd(cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay, steps_per_epoch=spe,
             decay_epochs=cfg.decay_epochs, decay_factor=cfg.decay_factor)
    step = steps.make_train_step(model, tx, mesh, regime="standard")
    best, history = fit(name=name, directory=os.path.join(base, "checkpoints"),
                        state=TrainState.create(init, tx), train_step=step, train=train_split,
                        batch_size=cfg.batch_size, epochs=cfg.epochs, seed=seed, mesh=mesh,
                        validate=lambda v: {"clean_accuracy": task.accuracy(v, val_split, f"{name} val")},
                        select="clean_accuracy", writer=task.writer,
                        learning_rate=lr_schedule(cfg.learning_rate, steps_per_epoch=spe,
                                                  decay_epochs=cfg.decay_epochs, decay_factor=cfg.decay_factor))
    write_json(os.path.join(base, "history.json"), history)
    checkpoint.save_variables(final, best, info=task.info)
    return jax.device_get(checkpoint.load_variables(final, like=init))

