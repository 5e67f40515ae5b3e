"""Adversarial weight perturbation (AWP; Wu, Xia & Wang, NeurIPS 2020, Algorithm 1 and the official code).

One ascent step on the training objective gives, per weight matrix/kernel ``w_l`` (every leaf with ≥ 2
dimensions: conv and dense kernels; biases and BatchNorm are not perturbed),

    v_l = γ · ‖w_l‖₂ · g_l / ‖g_l‖₂,      g_l = ∇_{w_l} L(w; x', y),

the layer-wise *relative* perturbation of size γ.  The training step then takes the gradient of the same
objective at ``w + v`` and applies it to ``w`` (the official code adds ``v``, steps, and subtracts ``v``
again).  Official defaults on CIFAR-10: γ = 1e-2 with PGD-AT (no warm-up), γ = 5e-3 with TRADES after a
10-epoch warm-up; every regime's γ and warm-up are in :data:`rwsjax.train.regimes.REGIMES`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

EPS = 1e-20  # the official code's guard in ‖g‖


def perturbation(params: PyTree, grads: PyTree, gamma: float | jax.Array) -> PyTree:
    """``v = γ‖w‖ g/‖g‖`` per leaf with ``ndim ≥ 2`` (Frobenius norms), zeros elsewhere.

    Args:
      params: the weights ``w`` (a Flax ``params`` pytree of float arrays).
      grads: ``∇_w L`` with the same structure (the ascent direction).
      gamma: relative size γ ≥ 0 (a scalar; 0 gives v = 0).

    Returns:
      ``v`` with the structure, shapes and dtypes of ``params``; ``‖v_l‖ = γ‖w_l‖`` for every
      kernel whose gradient is not zero.
    """
    def leaf(w, g):
        if w.ndim < 2:
            return jnp.zeros_like(w)
        g = g.astype(jnp.float32)
        scale = gamma * jnp.linalg.norm(w.astype(jnp.float32)) / (jnp.linalg.norm(g) + EPS)
        return (scale * g).astype(w.dtype)

    return jax.tree.map(leaf, params, grads)
