"""Accuracy of a model on a whole split, clean and under PGD, every example counted once."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from rwsjax.data.batching import eval_batches
from rwsjax.data.sources import Split
from rwsjax.train import dispatch, sharding
from rwsjax.report.progress import bar


def evaluate(eval_step: Callable, variables: dict, split: Split, *, batch_size: int, mesh,
             seed: int = 0, desc: str = "eval", in_flight: int = 2, per_example: bool = False) -> dict:
    """Run a step from :func:`rwsjax.train.steps.make_eval_step` over ``split``.

    The last batch is padded and masked, so each example counts exactly once.
    The attack's random starts depend only on ``seed`` and the batch index
    (``fold_in(PRNGKey(seed), i)``), so the numbers are reproducible.
    ``in_flight`` batches are queued on the device ahead of the one being read
    back (:func:`rwsjax.train.dispatch.fetch_lagged`; ``0``: one at a time).

    Returns:
      ``{"clean_accuracy": %, "robust_accuracy": %, "loss": mean clean CE, "n": examples}``
      with accuracies in percent; no ``robust_accuracy`` for a clean-only step.  Every other count the
      step returns (e.g. one per PGD restart) becomes
      ``"<name>_accuracy"`` likewise; with several PGD restarts ``"robust_run{i}_accuracy"`` per run and
      ``"robust_worst_run_accuracy"``, the lowest of them (≥ ``robust_accuracy``, the per-example worst case).
      ``per_example=True`` adds ``"per_example": {"clean": bool [n], "robust": bool [n]}`` in the split's
      order (what the step returns per example; for paired intervals, :mod:`rwsjax.report.intervals`).

    Raises:
      ValueError: an empty split, or ``in_flight < 0``.
    """
    if len(split) == 0:
        raise ValueError(f"{desc}: the split is empty; give it at least one example")
    if in_flight < 0:
        raise ValueError(f"{desc}: in_flight must be >= 0 (0: one batch at a time), got {in_flight}")
    variables = sharding.replicate(variables, mesh)
    totals = {}
    n_batches = -(-len(split) // batch_size)
    keys = dispatch.fold_in_keys(jax.random.PRNGKey(seed), 0, n_batches, mesh)
    rows = sharding.local_rows(mesh, batch_size)  # each process reads and feeds only its rows

    def queued():
        for batch, key in zip(eval_batches(split, batch_size, rows), keys):
            batch = sharding.shard_batch(batch, mesh)
            with dispatch.guard():
                out = eval_step(variables, *batch, key)
            yield out

    examples = []
    for out in bar(dispatch.fetch_lagged(queued(), in_flight), total=n_batches, desc=desc):
        rows_out = out.pop("per_example", None)
        if per_example:
            if rows_out is None:
                raise ValueError(f"{desc}: per_example=True needs a step that returns per-example results")
            mask = np.asarray(rows_out.pop("mask"))
            examples.append({k: np.asarray(v)[mask] for k, v in rows_out.items()})
        for k, v in out.items():
            totals[k] = totals.get(k, 0) + v.item()
    n = len(split)
    result = {f"{k}_accuracy": 100.0 * v / n for k, v in totals.items() if k != "loss"}
    runs = [v for k, v in result.items() if k.startswith("robust_run")]
    if runs:  # the worst of the whole PGD runs (RiFT's paper), next to the per-example worst case
        result["robust_worst_run_accuracy"] = min(runs)
    result.update(loss=totals["loss"] / n, n=n)
    if per_example:
        result["per_example"] = {k: np.concatenate([e[k] for e in examples]) for k in examples[0]}
    return result
