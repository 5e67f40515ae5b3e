"""Train / val / test splits carved from the TFDS train and test splits.

The validation split is carved out of the TFDS *train* split, class-stratified
(exactly ``val_size / num_classes`` examples of every class), so the TFDS test
split stays untouched for final evaluation. "TFDS test split" means the
dataset's `DatasetInfo.test_split`: ``test`` for CIFAR, the official
``validation`` split for Tiny-ImageNet (what papers report as its test set). Selection only needs the labels,
which are read without decoding any image (`sources.load_labels`, ~0.7 s for
50k records); then only the selected records are decoded.

Determinism: every selection is a function of ``seed`` and the sizes only.
Independent random streams are used for val (``(seed, 0)``), train (``(seed,
1)``) and test (``(seed, 2)``), so e.g. the val split for a seed does not
change when ``train_size`` changes. Within each returned split the examples are
in increasing TFDS record order (shuffling is done per epoch by
`rwsjax.data.batching`).
"""

from __future__ import annotations

import os

import numpy as np

from rwsjax.data.sources import Split, dataset_info, load_labels, load_split

__all__ = ["load_splits", "stratified_sample", "stratified_val_indices"]

_VAL_STREAM, _TRAIN_STREAM, _TEST_STREAM = 0, 1, 2


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def stratified_val_indices(
    labels: np.ndarray, num_classes: int, val_size: int, rng: np.random.Generator,
    *, field: str = "data.val_size",
) -> np.ndarray:
    """Picks exactly ``val_size // num_classes`` positions of every class.

    Each class keeps at least one example outside the selection.

    Args:
      labels: int ``[N]`` labels in ``[0, num_classes)``.
      num_classes: number of classes.
      val_size: total number of positions to pick (>= 0, multiple of
        ``num_classes``).
      rng: NumPy generator (consumed deterministically).
      field: config field name used in error messages.

    Returns:
      int64 ``[val_size]`` sorted positions into `labels`.

    Raises:
      ValueError: if `val_size` is negative, not divisible by `num_classes`, or
        larger than ``num_classes * (smallest class count - 1)`` (message names
        `field` and the maximum).
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    max_size = num_classes * max(int(counts.min()) - 1, 0)
    if val_size < 0:
        raise ValueError(f"{field} must be >= 0, got {val_size}")
    if val_size % num_classes:
        raise ValueError(
            f"{field}={val_size} must be a multiple of num_classes={num_classes} "
            "(the val split is class-stratified)"
        )
    if val_size > max_size:
        raise ValueError(
            f"{field}={val_size} is too large: at most {max_size} "
            f"(= {num_classes} classes x (smallest class count {int(counts.min())} - 1), "
            "so that every class keeps a training example)"
        )
    per_class = val_size // num_classes
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        picked.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(picked).astype(np.int64)) if picked else np.zeros((0,), np.int64)


def stratified_sample(
    labels: np.ndarray, pool: np.ndarray, size: int, num_classes: int, rng: np.random.Generator,
    *, field: str,
) -> np.ndarray:
    """Picks `size` positions from `pool`, keeping the class proportions of the pool.

    Per-class quotas are ``floor(size * n_c / n)`` plus one for the classes
    with the largest remainders (ties broken by `rng`); with balanced classes
    and `size` divisible by `num_classes` this is exactly ``size / num_classes``
    per class.

    Args:
      labels: int ``[N]`` labels of all positions.
      pool: int ``[n]`` candidate positions into `labels`.
      size: number of positions to pick, in ``[1, n]``.
      num_classes: number of classes.
      rng: NumPy generator (consumed deterministically).
      field: config field name used in error messages.

    Returns:
      int64 ``[size]`` sorted positions (a subset of `pool`).

    Raises:
      ValueError: if `size` is < 1 or > ``len(pool)`` (names `field` and the
        maximum).
    """
    pool = np.asarray(pool, dtype=np.int64)
    n = pool.shape[0]
    if size < 1 or size > n:
        raise ValueError(f"{field}={size} is out of range: must be in [1, {n}] ({n} available)")
    pool_labels = np.asarray(labels)[pool]
    counts = np.bincount(pool_labels, minlength=num_classes).astype(np.int64)
    quota = (size * counts) // n
    remainder = (size * counts) % n
    short = size - int(quota.sum())
    if short:
        # Largest remainders first; random tie-break. Exactly `short` classes
        # have a nonzero remainder ranked on top (sum of remainders = short*n).
        order = np.lexsort((rng.permutation(num_classes), -remainder))
        quota[order[:short]] += 1
    picked = []
    for c in range(num_classes):
        if quota[c]:
            members = pool[pool_labels == c]
            picked.append(rng.permutation(members)[: quota[c]])
    return np.sort(np.concatenate(picked))


def load_splits(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    val_size: int,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    lazy: bool = False,
) -> dict[str, Split]:
    """Loads class-stratified, deterministic train / val / test splits.

    Args:
      name: a key of `rwsjax.data.sources.DATASETS` (``"cifar10"``,
        ``"cifar100"``, ``"tiny_imagenet"``).
      data_dir: TFDS data dir; None -> ``$TFDS_DATA_DIR`` or the TFDS default.
      val_size: examples carved from the TFDS train split for validation;
        exactly ``val_size / num_classes`` per class (0 gives an empty split).
      train_size: if set, a stratified subset of this many of the remaining
        TFDS-train examples; None keeps all of them.
      test_size: if set, a stratified subset of this many TFDS-test examples
        (the dataset's ``test_split``); None keeps the whole test split.
      seed: selects the subsets (same seed and sizes -> same arrays).
      progress: show progress while decoding (a bar on a terminal, log lines elsewhere).
      lazy: decode images only when indexed (see ``sources.RecordImages``);
        multi-process runs use it so each host decodes only what it feeds.

    Returns:
      ``{"train": Split, "val": Split, "test": Split}``; each `Split` has uint8
      ``[N, H, W, C]`` images (``DATASETS[name].image_shape``), int32 ``[N]``
      labels and ``source_indices`` (positions in the TFDS split: TFDS-train
      for train and val, the TFDS test split -- ``validation`` for
      Tiny-ImageNet -- for test). Train and val are disjoint.

    Raises:
      ValueError: unknown dataset; ``data.val_size`` negative, not a multiple of
        the number of classes or too large; ``data.train_size`` /
        ``data.test_size`` outside ``[1, available]``. Messages name the field
        and the maximum.
      DatasetNotFoundError: the dataset is not prepared in the data dir.
    """
    info = dataset_info(name)
    k = info.num_classes

    train_labels = load_labels(name, "train", data_dir)
    val_idx = stratified_val_indices(train_labels, k, val_size, _rng(seed, _VAL_STREAM))
    rest = np.setdiff1d(np.arange(train_labels.shape[0], dtype=np.int64), val_idx, assume_unique=True)
    if train_size is None:
        train_idx = rest
    else:
        train_idx = stratified_sample(
            train_labels, rest, train_size, k, _rng(seed, _TRAIN_STREAM), field="data.train_size"
        )

    if test_size is None:
        test_idx = None
    else:
        test_labels = load_labels(name, "test", data_dir)
        test_idx = stratified_sample(
            test_labels, np.arange(test_labels.shape[0], dtype=np.int64), test_size, k,
            _rng(seed, _TEST_STREAM), field="data.test_size",
        )

    train = load_split(name, "train", data_dir, train_idx, progress=progress, lazy=lazy)
    val = load_split(name, "train", data_dir, val_idx, progress=progress, lazy=lazy)
    test = load_split(name, "test", data_dir, test_idx, progress=progress, lazy=lazy)
    return {"train": train, "val": val, "test": test}
