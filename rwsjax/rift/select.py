"""RiFT's choice of the interpolation coefficient α* (Zhu et al. 2023, Sec. 3.3)."""

from __future__ import annotations

from typing import Sequence


def select_alpha(alphas: Sequence[float], clean: Sequence[float], adversarial: Sequence[float],
                 *, reference_adversarial: float, tolerance: float = 0.1) -> int:
    """Index of α* = the α with the highest clean accuracy among those whose
    adversarial accuracy is ≥ ``reference_adversarial − tolerance``.

    All accuracies in percent, measured on the *validation* split;
    ``reference_adversarial`` is θ_AT's adversarial accuracy and ``tolerance``
    is in percentage points (paper: 0.1).  Ties go to the smaller α.  If no α
    qualifies (only possible when α = 0 is not in the grid), returns the α
    with the highest adversarial accuracy.

    Raises:
      ValueError: the three sequences differ in length or are empty.
    """
    if not (len(alphas) == len(clean) == len(adversarial)) or not alphas:
        raise ValueError(f"need equally long non-empty sequences, got {len(alphas)}, {len(clean)}, "
                         f"{len(adversarial)}")
    ok = [i for i in range(len(alphas)) if adversarial[i] >= reference_adversarial - tolerance]
    if not ok:
        return max(range(len(alphas)), key=lambda i: (adversarial[i], -alphas[i]))
    return max(ok, key=lambda i: (clean[i], -alphas[i]))
