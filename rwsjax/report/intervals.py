"""Paired bootstrap confidence intervals for accuracy differences on the same test images.

Two models evaluated on the same ``N`` images give per-image scores ``a`` and ``b`` (1/0 correct, or the
fraction of an image's corrupted versions classified correctly); the difference of their accuracies is
``Δ = 100·(mean(b) − mean(a))`` points.  The paired bootstrap (Efron & Tibshirani 1993, ch. 13; the
percentile interval) resamples the *images* with replacement — both models' scores of an image move
together — ``resamples`` times and takes the 2.5 and 97.5 percentiles of the resampled Δ.  With the
seed fixed the interval is reproducible.

    >>> import numpy as np
    >>> a = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    >>> b = np.array([1, 1, 1, 0, 1, 0, 1, 1])
    >>> ci = paired_bootstrap(a, b, seed=0)
    >>> ci["delta"], ci["low"] <= ci["delta"] <= ci["high"], ci["contains_zero"]
    (25.0, True, True)
    >>> format_delta(ci)
    '+25.00 [+0.00, +50.31] (CI contains 0)'
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def paired_bootstrap(a, b, *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL,
                     chunk: int = 100) -> dict:
    """Δ = accuracy(b) − accuracy(a) in points, with its paired bootstrap percentile interval.

    Args:
      a, b: per-image scores of the two models on the same images, ``[N]`` bool or float in [0, 1]
        (image i is the same image in both).
      resamples: bootstrap resamples (1,000 in every rwsjax report).
      seed: ``numpy.random.default_rng`` seed; the same seed gives the same interval.
      level: the interval's coverage (0.95: the 2.5 and 97.5 percentiles).
      chunk: resamples drawn at once (memory ``chunk × N`` indices).

    Returns:
      ``{"delta": pts, "low": pts, "high": pts, "contains_zero": bool, "n": N, "resamples", "seed",
      "level"}`` — accuracies in percentage points.

    Raises:
      ValueError: ``a`` and ``b`` of different or zero length, not 1-D, or scores outside [0, 1];
        ``resamples < 1`` or ``level`` outside (0, 1).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired scores must be two 1-D arrays of the same non-zero length, got shapes "
                         f"{a.shape} and {b.shape}")
    if min(a.min(), b.min()) < 0 or max(a.max(), b.max()) > 1:
        raise ValueError("per-image scores must lie in [0, 1] (1 = correct)")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples} and {level}")
    n = a.size
    diff = b - a
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        deltas.append(diff[idx].mean(axis=1))
    deltas = 100.0 * np.concatenate(deltas)
    tail = 100.0 * (1 - level) / 2
    low, high = np.percentile(deltas, [tail, 100.0 - tail])
    delta = 100.0 * float(diff.mean())
    return {"delta": delta, "low": float(low), "high": float(high), "contains_zero": bool(low <= 0 <= high),
            "n": int(n), "resamples": int(resamples), "seed": int(seed), "level": float(level)}


def format_delta(ci: dict | None) -> str | None:
    """``"+0.85 [+0.20, +1.50]"`` (points), with ``" (CI contains 0)"`` when the interval does; None stays None."""
    if ci is None:
        return None
    text = f"{ci['delta']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}]"
    return text + " (CI contains 0)" if ci["contains_zero"] else text
