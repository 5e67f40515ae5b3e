"""Training the RWS model zoo: θ_pre, θ_clean and one θ_c per corruption, all resumable.

Every model is a stage: its final variables go to ``WORKDIR/zoo/<name>/final``
(skipped when present) and its training checkpoints to
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
from rwsjax.train.evaluate import evaluate
from rwsjax.train.loop import fit
from rwsjax.train.state import TrainState, sgd


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


_EVAL_STEPS: dict = {}  # (model, mesh) → compiled clean evaluation step; models live for the whole run


def clean_accuracy(model, mesh, variables, split: Split, batch_size: int, desc: str) -> float:
    """Test/validation accuracy (%) with BN in evaluation mode."""
    key = (id(model), id(mesh))
    if key not in _EVAL_STEPS:
        _EVAL_STEPS[key] = (model, steps.make_eval_step(model, mesh))
    step = _EVAL_STEPS[key][1]
    return evaluate(step, variables, split, batch_size=batch_size, mesh=mesh, desc=desc)["clean_accuracy"]


def train(name: str, *, workdir: str, model, mesh, init: dict, train_split: Split, val_split: Split, cfg,
          seed: int, eval_batch_size: int, writer=None) -> dict:
    """Fine-tune (or pretrain) ``init`` on ``train_split`` with SGD; best epoch by ``val_split`` accuracy.

    ``cfg`` holds ``epochs, batch_size, learning_rate, momentum, weight_decay, decay_epochs,
    decay_factor`` (the RWS paper: lr 0.01, momentum 0.9, wd 5e-4).  Augmentation: pad-4
    reflect crop + flip.  Returns host variables of the best epoch.
    """
    base = os.path.join(workdir, "zoo", name)
    final = os.path.join(base, "final")
    if checkpoint.exists(final):
        print(f"[zoo] {name}: done, loading {final}")
        return jax.device_get(checkpoint.load_variables(final, like=init))
    spe = steps_per_epoch(len(train_split), cfg.batch_size)
    tx = sgd(cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay, steps_per_epoch=spe,
             decay_epochs=cfg.decay_epochs, decay_factor=cfg.decay_factor)
    step = steps.make_train_step(model, tx, mesh, regime="standard")
    best, history = fit(name=name, directory=os.path.join(base, "checkpoints"),
                        state=TrainState.create(init, tx), train_step=step, train=train_split,
                        batch_size=cfg.batch_size, epochs=cfg.epochs, seed=seed, mesh=mesh,
                        validate=lambda v: {"clean_accuracy": clean_accuracy(model, mesh, v, val_split,
                                                                             eval_batch_size, f"{name} val")},
                        select="clean_accuracy", writer=writer)
    write_json(os.path.join(base, "history.json"), history)
    checkpoint.save_variables(final, best)
    return jax.device_get(checkpoint.load_variables(final, like=init))

