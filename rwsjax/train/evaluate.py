"""Accuracy of a model on a whole split, clean and under PGD, every example counted once."""

from __future__ import annotations

from typing import Callable

import jax

from rwsjax.data.batching import eval_batches
from rwsjax.data.sources import Split
from rwsjax.train import sharding
from tqdm.auto import tqdm


def evaluate(eval_step: Callable, variables: dict, split: Split, *, batch_size: int, mesh,
             seed: int = 0, desc: str = "eval") -> dict:
    """Run a step from :func:`rwsjax.train.steps.make_eval_step` over ``split``.

    The last batch is padded and masked, so each example counts exactly once.
    The attack's random starts depend only on ``seed`` and the batch index,
    so the numbers are reproducible.

    Returns:
      ``{"clean_accuracy": %, "robust_accuracy": %, "loss": mean clean CE, "n": examples}``
      with accuracies in percent; no ``robust_accuracy`` for a clean-only step.  Every other count the
      step returns (e.g. ``apgd_ce`` of :func:`~rwsjax.train.steps.make_autoattack_step`) becomes
      ``"<name>_accuracy"`` likewise.
    """
    if len(split) == 0:
        raise ValueError(f"{desc}: the split is empty; give it at least one example")
    variables = sharding.replicate(variables, mesh)
    base = jax.random.PRNGKey(seed)
    totals = {}
    n_batches = -(-len(split) // batch_size)
    rows = sharding.local_rows(mesh, batch_size)  # each process reads and feeds only its rows
    for i, batch in enumerate(tqdm(eval_batches(split, batch_size, rows), total=n_batches, desc=desc,
                                   leave=False)):
        out = jax.device_get(eval_step(variables, *sharding.shard_batch(batch, mesh),
                                       jax.random.fold_in(base, i)))
        for k, v in out.items():
            totals[k] = totals.get(k, 0) + v.item()
    n = len(split)
    result = {f"{k}_accuracy": 100.0 * v / n for k, v in totals.items() if k != "loss"}
    result.update(loss=totals["loss"] / n, n=n)
    return result
