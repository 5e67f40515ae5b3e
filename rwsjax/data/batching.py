"""Deterministic, resumable host-side batching of in-memory `Split`s.

Batches are NumPy arrays (uint8 images, int32 labels) to be moved to device
by the caller; conversion to float (`to_float`) and normalization
(`normalize`) are jnp functions meant to run inside the jitted step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax.numpy as jnp
import numpy as np

from rwsjax.data.sources import Split

__all__ = [
    "epoch_permutation",
    "eval_batches",
    "normalize",
    "steps_per_epoch",
    "to_float",
    "train_batches",
]


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order for one training epoch.

    Args:
      n: number of examples (>= 0).
      seed: non-negative int.
      epoch: non-negative int (0-based).

    Returns:
      int64 ``[n]`` permutation of ``range(n)``; a pure function of
      ``(n, seed, epoch)`` (``np.random.default_rng((seed, epoch))``).

    Raises:
      ValueError: if `seed` or `epoch` is negative.
    """
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    return np.random.default_rng((int(seed), int(epoch))).permutation(int(n)).astype(np.int64)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of full batches per epoch, ``n // batch_size`` (the remainder is dropped).

    Raises:
      ValueError: if ``batch_size < 1`` or ``n < batch_size`` (an epoch would
        have no step).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the split ({n} examples): "
            "an epoch would have no full batch"
        )
    return n // batch_size


def train_batches(
    split: Split, batch_size: int, *, seed: int, epoch: int, start_step: int = 0, rows: slice = slice(None)
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields the shuffled full batches of one epoch, from batch `start_step` on.

    Batch ``s`` holds examples ``epoch_permutation(N, seed, epoch)[s*B:(s+1)*B]``,
    so resuming with ``start_step=s`` yields exactly the batches an
    uninterrupted epoch would yield from step ``s``. The last ``N % B``
    examples of the permutation are dropped.

    Args:
      split: the examples.
      batch_size: B.
      seed, epoch: select the permutation (see `epoch_permutation`).
      start_step: first batch to yield, in ``[0, steps_per_epoch]`` (equal to
        the number of steps yields nothing).
      rows: the rows of every global batch to read and yield (a process's
        share in a multi-process run, see ``train.sharding.local_rows``);
        only those examples are read.

    Yields:
      ``(images, labels)``: uint8 ``[b, H, W, C]``, int32 ``[b]`` (fresh arrays;
      ``b = B`` unless ``rows`` selects fewer).

    Raises:
      ValueError: bad `batch_size` (see `steps_per_epoch`) or `start_step` out
        of range (raised when called, not on the first ``next()``).
    """
    n = len(split)
    steps = steps_per_epoch(n, batch_size)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step={start_step} must be in [0, {steps}] (steps per epoch)")
    perm = epoch_permutation(n, seed, epoch)

    def gen():
        for s in range(start_step, steps):
            idx = perm[s * batch_size : (s + 1) * batch_size][rows]
            yield split.images[idx], split.labels[idx]

    return gen()


def eval_batches(split: Split, batch_size: int, rows: slice = slice(None)
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yields every example exactly once, in order, in fixed-size batches.

    The last batch is padded to `batch_size` by repeating the split's last
    example; padded rows have ``mask == False``. So ``sum(mask)`` over all
    batches is ``len(split)``; weight per-example metrics by `mask`.

    Args:
      split: the examples (an empty split yields nothing).
      batch_size: B >= 1.
      rows: the rows of every batch to read and yield (a process's share, see
        ``train.sharding.local_rows``); masks are cut the same way, so the
        processes together still count every example once.

    Yields:
      ``(images, labels, mask)``: uint8 ``[b, H, W, C]``, int32 ``[b]``, bool ``[b]``.

    Raises:
      ValueError: if ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)

    def gen():
        for start in range(0, n, batch_size):
            real = min(batch_size, n - start)
            idx = np.arange(start, start + batch_size, dtype=np.int64)
            idx[real:] = n - 1
            mask = np.zeros((batch_size,), dtype=bool)
            mask[:real] = True
            idx, mask = idx[rows], mask[rows]
            yield split.images[idx], split.labels[idx], mask

    return gen()


def to_float(images_uint8) -> jnp.ndarray:
    """uint8 pixels -> float32 in [0, 1] (``x / 255``). Works on NumPy or jax arrays, inside jit."""
    return jnp.asarray(images_uint8).astype(jnp.float32) / 255.0


def normalize(images, mean: Sequence[float], std: Sequence[float]) -> jnp.ndarray:
    """Per-channel standardization ``(x - mean) / std`` of float images in [0, 1].

    Args:
      images: float ``[..., C]`` in [0, 1] (e.g. from `to_float`).
      mean, std: length-C per-channel statistics in [0, 1] units (e.g.
        ``DATASETS[name].mean`` / ``.std``).

    Returns:
      float32 array of the same shape. jit-compatible.
    """
    x = jnp.asarray(images, dtype=jnp.float32)
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
