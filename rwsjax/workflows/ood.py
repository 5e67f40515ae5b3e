"""OOD accuracy on common corruptions (CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C), as both papers report it.

The corrupted test sets are read through TFDS as ``<data.name>_corrupted/<config>``
(``cifar10_corrupted``, ``cifar100_corrupted``, ``tiny_imagenet_corrupted``)
— for CIFAR-10 possibly a real CIFAR-10-C prepared by TFDS, otherwise one our
generator writes (:func:`rwsjax.corruptions.generate`, Hendrycks & Dietterich's
constants for the dataset's resolution: 32 px CIFAR, 64 px Tiny-ImageNet) from
exactly the images of the run's test split (``config.data.test_size`` subset or
all of it; for Tiny-ImageNet the test split is the official validation set).
The headline metric, ``ood.summary="mean_15"``, is the mean accuracy over the
15 benchmark corruptions × 5 severities.  One corrupted set is held in memory
at a time.
"""

from __future__ import annotations

import os

import numpy as np

from rwsjax.report.progress import bar

from rwsjax import corruptions as cc
from rwsjax import distributed
from rwsjax.report.writers import write_json

LISTS = {"all": cc.CORRUPTIONS, "benchmark": cc.BENCHMARK_CORRUPTIONS, "rift": cc.RIFT_CORRUPTIONS}
SUMMARIES = ("mean_15", "mean_rift18", "mean_19")
SOURCES = ("generate", "tfds")


def corruption_list(spec, field: str = "ood.corruptions") -> tuple[str, ...]:
    """``"all"`` (19), ``"benchmark"`` (15), ``"rift"`` (18) or a comma-separated / tuple list of names.

    Raises:
      ValueError: naming ``config.<field>``, every unknown name, and the valid choices.
    """
    if isinstance(spec, str) and spec in LISTS:
        return tuple(LISTS[spec])
    names = tuple(n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip())
    bad = [n for n in names if n not in cc.CORRUPTIONS]
    if bad:
        raise ValueError(f"config.{field} has unknown {bad}; valid: {sorted(LISTS)} or names from "
                         f"{list(cc.CORRUPTIONS)}")
    return names


def data_dir(config, workdir: str) -> str:
    """Where corrupted sets are read (and, with ``ood.source=generate``, written)."""
    return config.ood.data_dir or os.path.join(workdir, "corrupted_tfds")


def evaluate_ood(s, models: dict, path: str) -> dict:
    """Clean accuracy of every model in ``models`` on every corruption × severity of ``config.ood``.

    Args:
      s: the workflow's :class:`~rwsjax.workflows.common.Task`.
      models: ``{name: variables}``.
      path: JSON file the results are written to.

    Returns:
      ``{"per_set": {name: {"<corruption>_<severity>": accuracy %}}, "summary": {name: summarize(...)},
      "ood_accuracy": {name: summary[config.ood.summary]}, "per_image": {name: [N] ints}, "per_image_sets",
      ...}`` — ``per_image[name][i]``: of the ``per_image_sets`` corrupted versions of test image i that
      the summary averages, how many the model classifies correctly (None when the summary is incomplete).

    Raises:
      ValueError: bad ``ood.corruptions`` / ``ood.summary`` / ``ood.source``.
      DatasetNotFoundError: ``ood.source=tfds`` and the corrupted set is not in ``ood.data_dir``.
    """
    c = s.config
    if c.ood.summary not in SUMMARIES:
        raise ValueError(f"unknown ood.summary {c.ood.summary!r}; valid: {SUMMARIES}")
    if c.ood.source not in SOURCES:
        raise ValueError(f"unknown ood.source {c.ood.source!r}; valid: {SOURCES}")
    names = corruption_list(c.ood.corruptions)
    severities = tuple(int(v) for v in c.ood.severities)
    directory = data_dir(c, s.workdir)
    test = s.splits["test"]
    indices = test.source_indices
    step = s.eval_step(restarts=None)
    per_set = {m: {} for m in models}
    sets = [(n, v) for n in names for v in severities]
    # Per test image, how many of the summary's corrupted versions each model classifies correctly (the
    # paired intervals of the reports resample images): the summary is the mean of these over images / sets.
    summary_sets = [(n, v) for n, v in sets if n in cc.metrics.MEANS[c.ood.summary]]
    complete = len(summary_sets) == len(cc.metrics.MEANS[c.ood.summary]) * len(cc.metrics.SEVERITIES)
    per_image = {m: np.zeros(len(test), np.int64) for m in models}
    for name, severity in bar(sets, desc="OOD"):
        if c.ood.source == "generate":
            with distributed.main_first(f"ood {name}-{severity}"):  # process 0 writes, the others find it done
                cc.generate(c.data.name, name, severity, out_data_dir=directory, indices=indices, seed=c.seed,
                            source_data_dir=c.data.data_dir, progress=False)
        corrupted = cc.load_corrupted(c.data.name, name, severity, data_dir=directory, indices=indices,
                                      progress=False)
        for m, variables in models.items():
            out = s.evaluate(step, variables, corrupted, f"{m} {name}-{severity}", per_example=True)
            per_set[m][f"{name}_{severity}"] = out["clean_accuracy"]
            if (name, severity) in summary_sets:
                per_image[m] += out["per_example"]["clean"]
        print(f"[ood] {name}-{severity}: " + "  ".join(f"{m} {per_set[m][f'{name}_{severity}']:.2f}%"
                                                      for m in models))
    summary = {m: cc.summarize({(n, v): per_set[m][f"{n}_{v}"] for n, v in sets}) for m in models}
    out = {"data_dir": directory, "source": c.ood.source, "corruptions": list(names),
           "severities": list(severities), "n": len(test), "summary_key": c.ood.summary,
           "per_set": per_set, "summary": summary,
           "ood_accuracy": {m: summary[m][c.ood.summary] for m in models},
           "per_image": ({m: per_image[m].tolist() for m in models} if complete else None),
           "per_image_sets": len(summary_sets) if complete else None}
    write_json(path, out)
    return out
