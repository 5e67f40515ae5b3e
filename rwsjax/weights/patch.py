"""Weight arithmetic on variable pytrees: interpolation between two models.

RiFT's final model is θ_α = (1 − α)·θ_AT + α·θ_FT (Zhu et al. 2023, Eq. 5),
applied to every leaf (parameters and BatchNorm statistics alike).
"""

from __future__ import annotations

from typing import Any

import chex
import jax

PyTree = Any


def interpolate(at_variables: PyTree, ft_variables: PyTree, alpha: float) -> PyTree:
    """θ_α = (1 − α)·θ_AT + α·θ_FT, leaf by leaf.

    Written in this form (not θ_AT + α(θ_FT − θ_AT)) so that α = 0 returns
    θ_AT and α = 1 returns θ_FT bit for bit.

    Args:
      at_variables, ft_variables: pytrees of float arrays with identical structure and shapes.
      alpha: interpolation coefficient, usually in [0, 1].

    Raises:
      AssertionError (chex): structures or shapes differ.
    """
    chex.assert_trees_all_equal_shapes(at_variables, ft_variables)
    a = float(alpha)
    return jax.tree.map(lambda x, y: (1.0 - a) * x + a * y, at_variables, ft_variables)
