"""RiFT's choice of the interpolation coefficient α* (Zhu et al. 2023, Sec. 3.3)."""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence


def _exact(x: float) -> Fraction:
    """The decimal a float accuracy was printed as, exactly (``64.1`` -> 641/10, not 64.09999…)."""
    return Fraction(repr(float(x)))


def select_alpha(alphas: Sequence[float], clean: Sequence[float], adversarial: Sequence[float],
                 *, reference_adversarial: float, tolerance: float = 0.1, n: int | None = None) -> int:
    """Index of α* = the α with the highest clean accuracy among those whose
    adversarial accuracy is ≥ ``reference_adversarial − tolerance``.

    All accuracies in percent, measured on the *validation* split;
    ``reference_adversarial`` is θ_AT's adversarial accuracy and ``tolerance``
    is in percentage points (paper: 0.1).  Ties go to the smaller α.  If no α
    qualifies (only possible when α = 0 is not in the grid), returns the α
    with the highest adversarial accuracy.

    The comparison is exact, never in floating point (``64.2 − 0.1`` is
    ``64.10000000000001`` in floats, which would reject an α that lost exactly
    the tolerated 0.1 points): with ``n``, the number of validation images the
    adversarial accuracies were measured on, they are turned back into image
    counts ``c = round(acc·n/100)`` and an α qualifies iff
    ``100·(c − c_ref) ≥ −tolerance·n`` in rationals (with n = 1,000 and
    tolerance 0.1: losing one image is allowed, two are not); without ``n``,
    each accuracy is taken as the exact decimal it prints as.

    Raises:
      ValueError: the three sequences differ in length or are empty; ``n < 1``.
    """
    if not (len(alphas) == len(clean) == len(adversarial)) or not alphas:
        raise ValueError(f"need equally long non-empty sequences, got {len(alphas)}, {len(clean)}, "
                         f"{len(adversarial)}")
    tol = _exact(tolerance)
    if n is not None:
        if n < 1:
            raise ValueError(f"n (validation images) must be >= 1, got {n}")
        count = [round(a * n / 100) for a in adversarial]
        ref = round(reference_adversarial * n / 100)
        ok = [i for i in range(len(alphas)) if 100 * (count[i] - ref) >= -tol * n]
    else:
        ok = [i for i in range(len(alphas)) if _exact(adversarial[i]) >= _exact(reference_adversarial) - tol]
    if not ok:
        return max(range(len(alphas)), key=lambda i: (adversarial[i], -alphas[i]))
    return max(ok, key=lambda i: (clean[i], -alphas[i]))
