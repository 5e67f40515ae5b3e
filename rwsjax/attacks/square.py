"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search"), ℓ∞, in JAX — the reference implementation's algorithm
(fra31/auto-attack ``square.py``, ``attack_single_run``, ``loss='margin'``, AutoAttack's ``p_init=0.8`` and
``resc_schedule=False``).

Random search on the margin z_y − max_{j≠y} z_j: start from vertical stripes x + ε·s (one sign per column and
channel); at query i draw a square of side ``max(round(√(p_i·H·W)), 1)`` (p_i from the reference's
schedule :func:`p_selection`) at a random position and set it, per channel, to ±2ε around the current best
point (projected to the ε-ball ∩ [0, 1]); keep it if the margin loss went down or the point is
misclassified.  An example stops once misclassified (margin ≤ 0); the budget is ``n_queries`` iterations.

Randomness: the reference draws one window position and one sign pattern per iteration for the whole batch
from PyTorch's generator; here every example draws its own from its own key (``fold_in(key, i)``), so an
example's attack does not depend on the rest of the batch (the same distribution per example).

Parts (pure; :mod:`rwsjax.attacks.autoattack` runs them): :func:`init`, :func:`step`, :func:`result`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LogitsFn = Callable[[jax.Array], jax.Array]

#: The reference ``p_selection`` thresholds (``resc_schedule=False``): p = p_init / divisor for it in (lo, hi].
_SCHEDULE = ((10, 50, 2), (50, 200, 4), (200, 500, 8), (500, 1000, 16), (1000, 2000, 32), (2000, 4000, 64),
             (4000, 6000, 128), (6000, 8000, 256))


def p_selection(it: jax.Array, p_init: float = 0.8) -> jax.Array:
    """The fraction of pixels the square covers at iteration ``it`` (reference ``p_selection``)."""
    p = jnp.full(jnp.shape(it), p_init, jnp.float32)
    for lo, hi, div in _SCHEDULE:
        p = jnp.where((it > lo) & (it <= hi), p_init / div, p)
    return jnp.where(it > 8000, p_init / 512, p)


def _margin(logits_fn, x, labels):
    z = logits_fn(x).astype(jnp.float32)
    zy = jnp.take_along_axis(z, labels[:, None], 1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(labels, z.shape[-1], dtype=bool), -jnp.inf, z), -1)
    return zy - other


def _signs(key, shape):
    return jnp.sign(2 * jax.random.uniform(key, shape) - 1)


def init(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, keys: jax.Array, *, eps: float,
         norm: str = "linf") -> dict:
    """The Square state after the first query: ``x_best`` ``[B, H, W, C]``, ``margin_min`` (= the margin loss)
    ``[B]``, ``n_queries`` int32 ``[B]`` (queries used), ``i`` int32 ``[B]`` (iterations done), ``keys``.

    Raises:
      NotImplementedError: ``norm`` other than ``"linf"``.
    """
    if norm != "linf":
        raise NotImplementedError(f"Square Attack is implemented for norm='linf' only, got {norm!r}; "
                                  "use the attacks list without 'square' for ℓ2")
    x = x.astype(jnp.float32)
    stripes = jax.vmap(lambda k: _signs(jax.random.fold_in(k, 2**31 - 1), (1, x.shape[2], x.shape[3])))(keys)
    x_best = jnp.clip(x + eps * stripes, 0.0, 1.0)
    margin = _margin(logits_fn, x_best, labels)
    b = x.shape[0]
    return dict(x_best=x_best, margin_min=margin, n_queries=jnp.ones((b,), jnp.int32),
                i=jnp.zeros((b,), jnp.int32), keys=keys)


def step(logits_fn: LogitsFn, state: dict, x: jax.Array, labels: jax.Array, *, eps: float,
         n_queries: int = 5000, p_init: float = 0.8) -> dict:
    """One Square iteration for every example still correctly classified and within its budget."""
    s = dict(state)
    h, w, c = x.shape[1:]
    i = s["i"]
    active = (s["margin_min"] > 0) & (i < n_queries)
    side = jnp.maximum(jnp.round(jnp.sqrt(p_selection(i, p_init) * h * w)).astype(jnp.int32), 1)
    side = jnp.minimum(side, min(h, w))

    def draw(key, it, sd):
        k = jax.random.fold_in(key, it)
        kh, kw, ks = jax.random.split(k, 3)
        vh = jnp.floor(jax.random.uniform(kh) * (h - sd)).astype(jnp.int32)  # reference random_int(0, h − s)
        vw = jnp.floor(jax.random.uniform(kw) * (w - sd)).astype(jnp.int32)
        return vh, vw, _signs(ks, (1, 1, c))

    vh, vw, sign = jax.vmap(draw)(s["keys"], i, side)
    rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    inside = ((rows >= vh[:, None, None]) & (rows < (vh + side)[:, None, None])
              & (cols >= vw[:, None, None]) & (cols < (vw + side)[:, None, None]))[..., None]
    x_new = jnp.where(inside, s["x_best"] + 2.0 * eps * sign, s["x_best"])
    x_new = jnp.clip(jnp.minimum(jnp.maximum(x_new, x - eps), x + eps), 0.0, 1.0)
    margin = _margin(logits_fn, x_new, labels)
    improved = active & ((margin < s["margin_min"]) | (margin <= 0))
    s.update(x_best=jnp.where(improved[:, None, None, None], x_new, s["x_best"]),
             margin_min=jnp.where(improved, margin, s["margin_min"]),
             n_queries=s["n_queries"] + active.astype(jnp.int32), i=i + active.astype(jnp.int32))
    return s


def done(state: dict, n_queries: int = 5000) -> jax.Array:
    """bool ``[B]``: misclassified (margin ≤ 0) or out of iterations."""
    return (state["margin_min"] <= 0) | (state["i"] >= n_queries)


def result(state: dict) -> jax.Array:
    """The best point found ``[B, H, W, C]`` (misclassified where the attack succeeded)."""
    return state["x_best"]


__all__ = ["done", "init", "p_selection", "result", "step"]
