"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples
with a fast adaptive boundary attack"), ℓ∞ and ℓ2, untargeted and targeted (FAB-T), in JAX — the reference
implementation step for step (fra31/auto-attack ``fab_base.py`` ``attack_single_run``, ``fab_pt.py`` gradients,
``fab_projections.py`` ``projection_linf`` / ``projection_l2``).

Each iteration linearizes the classifier at x⁽ᵏ⁾, takes the closest decision hyperplane (untargeted: over
every class; FAB-T: the target's), projects both x⁽ᵏ⁾ and the clean x onto it inside [0, 1] (the two
``projection_*`` solvers), and moves to a convex combination of the two projections (weight α ≤ α_max = 0.1,
overshoot η = 1.05); once the point is adversarial it is pulled back towards x by β = 0.9.  FAB minimizes the
perturbation: an example counts as broken only if its smallest adversarial perturbation found is ≤ ε.

Parts (pure; ``jax.jit`` them, :mod:`rwsjax.attacks.autoattack` runs them): :func:`init` (restart 0 starts at
x, later restarts at a random point of radius ε/2, as the reference), :func:`step`, :func:`result`;
:func:`projection_linf`, :func:`projection_l2`.  Randomness: one key per example (see
:mod:`rwsjax.attacks.apgd`).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from rwsjax.attacks.pgd import NORMS

LogitsFn = Callable[[jax.Array], jax.Array]


def _take(a, idx):
    return jnp.take_along_axis(a, idx, axis=1)


def projection_linf(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """δ of least ℓ∞ norm with ⟨w, t + δ⟩ = b and t + δ ∈ [0, 1], per row (reference ``projection_linf``).

    Args: ``t``, ``w`` float32 ``[N, D]``, ``b`` ``[N]``.  Returns ``δ`` ``[N, D]``.
    """
    n_feat = w.shape[1]
    sign = 2 * (jnp.sum(w * t, 1) - b >= 0).astype(t.dtype) - 1
    w, b = w * sign[:, None], b * sign
    a = (w < 0).astype(t.dtype)
    d = (a - t) * (w != 0)
    p = a - t * (2 * a - 1)
    indp = jnp.argsort(p, axis=1)
    b = b - jnp.sum(w * t, 1)
    b0 = jnp.sum(w * d, 1)
    indp2 = indp[:, ::-1]
    ws = _take(w, indp2)
    bs2 = -ws * _take(d, indp2)
    s = jnp.cumsum(jnp.abs(ws), axis=1)
    sb = jnp.cumsum(bs2, axis=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * _take(p, indp[:, :1])[:, 0]
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & ~c_l
    lb = jnp.zeros(w.shape[0], t.dtype)
    ub = jnp.full_like(lb, n_feat - 1)
    for _ in range(math.ceil(math.log2(n_feat))):
        counter4 = jnp.floor((lb + ub) / 2)
        counter2 = counter4.astype(jnp.int32)[:, None]
        indcurr = _take(indp, n_feat - 1 - counter2)
        b2 = (_take(sb, counter2) - _take(s, counter2) * _take(p, indcurr))[:, 0]
        c = b - b2 > 0
        lb, ub = jnp.where(c, counter4, lb), jnp.where(c, ub, counter4)
    lb = lb.astype(jnp.int32)[:, None]
    lmbd_l = jnp.maximum((b - sb[:, -1]) / (-s[:, -1]), 0)[:, None]
    d = jnp.where(c_l[:, None], (2 * a - 1) * lmbd_l, d)
    lmbd2 = jnp.maximum((b[:, None] - _take(sb, lb)) / (-_take(s, lb)), 0)
    d = jnp.where(c2[:, None], jnp.minimum(lmbd2, d) * a + jnp.maximum(-lmbd2, d) * (1 - a), d)
    return d * (w != 0)


def projection_l2(t: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """δ of least ℓ2 norm with ⟨w, t + δ⟩ = b and t + δ ∈ [0, 1], per row (reference ``projection_l2``).

    Args: ``t``, ``w`` float32 ``[N, D]``, ``b`` ``[N]``.  Returns ``δ`` ``[N, D]``.
    """
    n_feat = w.shape[1]
    c = jnp.sum(w * t, 1) - b
    ind2 = 2 * (c >= 0).astype(t.dtype) - 1
    w, c = w * ind2[:, None], c * ind2
    r = jnp.clip(jnp.maximum(t / w, (t - 1) / w), -1e12, 1e12)
    r = jnp.where(jnp.abs(w) < 1e-8, 1e12, r)
    r = jnp.where(r == -1e12, -r, r)
    indr = jnp.argsort(r, axis=1)
    rs = _take(r, indr)
    rs2 = jnp.pad(rs[:, 1:], ((0, 0), (0, 1)))
    rs, rs2 = jnp.where(rs == 1e12, 0, rs), jnp.where(rs2 == 1e12, 0, rs2)
    w3s = _take(w ** 2, indr)
    w5 = jnp.sum(w3s, 1, keepdims=True)
    ws = w5 - jnp.cumsum(w3s, 1)
    d = -(r * w) * (jnp.abs(w) > 1e-8)
    s = jnp.concatenate([-w5 * rs[:, :1], jnp.cumsum((-rs2 + rs) * ws, 1) - w5 * rs[:, :1]], 1)
    c4 = s[:, 0] + c < 0
    c3 = jnp.sum(d * w, 1) + c > 0
    c2 = ~(c4 | c3)
    lb = jnp.zeros(w.shape[0], t.dtype)
    ub = jnp.full_like(lb, n_feat - 1)
    for _ in range(math.ceil(math.log2(n_feat))):
        counter4 = jnp.floor((lb + ub) / 2)
        up = _take(s, counter4.astype(jnp.int32)[:, None])[:, 0] + c > 0
        lb, ub = jnp.where(up, counter4, lb), jnp.where(up, ub, counter4)
    lb = lb.astype(jnp.int32)[:, None]
    d = jnp.where(c4[:, None], -(c / w5[:, 0])[:, None] * w, d)
    ws_lb = _take(ws, lb)[:, 0]
    alpha = (_take(s, lb)[:, 0] + c) / ws_lb + _take(rs, lb)[:, 0]
    alpha = jnp.where(ws_lb == 0, 0, alpha)
    c5 = (alpha[:, None] > r).astype(t.dtype)
    d = jnp.where(c2[:, None], d * c5 - alpha[:, None] * w * (1 - c5), d)
    return d * (jnp.abs(w) > 1e-8)


def _norm(v, norm):
    flat = v.reshape(v.shape[0], -1)
    return jnp.max(jnp.abs(flat), -1) if norm == "linf" else jnp.sqrt(jnp.sum(flat * flat, -1))


def _bshape(x):
    return (-1,) + (1,) * (x.ndim - 1)


def init(x: jax.Array, keys: jax.Array, *, eps: float, norm: str = "linf", random_start: bool = False) -> dict:
    """The FAB state at the start of a restart: ``x1`` (current point; x, or for ``random_start`` the
    reference's random point at radius ε/2, clipped), ``adv`` (best adversarial point) ``[B, H, W, C]``,
    ``res2`` (its norm; 10¹⁰ = none yet) ``[B]``.

    Raises:
      ValueError: unknown ``norm``.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {NORMS}")
    x = x.astype(jnp.float32)
    x1 = x
    if random_start:
        if norm == "linf":
            t = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], jnp.float32, -1.0, 1.0))(keys)
        else:
            t = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], jnp.float32))(keys)
        x1 = jnp.clip(x + eps * t / _norm(t, norm).reshape(_bshape(x)) * 0.5, 0.0, 1.0)
    return dict(x1=x1, adv=x, res2=jnp.full((x.shape[0],), 1e10, jnp.float32))


def _diff_logits_grads(logits_fn, x1, labels, targets):
    """(df [B, K'], dg [B, K', H, W, C]): logit differences to the label and their input gradients
    (reference ``get_diff_logits_grads_batch[_targeted]``; K' = 1 for FAB-T)."""
    if targets is not None:
        def diff(u):
            z = logits_fn(u)
            zy = jnp.take_along_axis(z, labels[:, None], 1)[:, 0]
            zt = jnp.take_along_axis(z, targets[:, None], 1)[:, 0]
            d = -(zy - zt)
            return jnp.sum(d), d
        (_, df), dg = jax.value_and_grad(diff, has_aux=True)(x1)
        return df[:, None], dg[:, None]
    z, vjp = jax.vjp(logits_fn, x1)
    k = z.shape[-1]
    g = jax.vmap(lambda e: vjp(jnp.broadcast_to(e, z.shape))[0])(jnp.eye(k, dtype=z.dtype))  # [K, B, ...]
    g = jnp.moveaxis(g, 0, 1)
    rows = jnp.arange(z.shape[0])
    df = z - z[rows, labels][:, None]
    dg = g - g[rows, labels][:, None]
    df = df.at[rows, labels].set(1e10)
    return df, dg


def step(logits_fn: LogitsFn, state: dict, x: jax.Array, labels: jax.Array, *, norm: str = "linf",
         targets: jax.Array | None = None, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9) -> dict:
    """One FAB iteration (reference ``attack_single_run`` loop body); ``targets`` int ``[B]`` for FAB-T."""
    x1, adv, res2 = state["x1"], state["adv"], state["res2"]
    bsz = x.shape[0]
    df, dg = _diff_logits_grads(logits_fn, x1, labels, targets)
    dgf = dg.reshape(bsz, dg.shape[1], -1)
    dual = jnp.sum(jnp.abs(dgf), -1) if norm == "linf" else jnp.sqrt(jnp.sum(dgf * dgf, -1))
    ind = jnp.argmin(jnp.abs(df) / (1e-12 + dual), axis=1)
    rows = jnp.arange(bsz)
    w = dgf[rows, ind]
    b = -df[rows, ind] + jnp.sum(w * x1.reshape(bsz, -1), -1)
    project = projection_linf if norm == "linf" else projection_l2
    d3 = project(jnp.concatenate([x1.reshape(bsz, -1), x.reshape(bsz, -1)]), jnp.concatenate([w, w]),
                 jnp.concatenate([b, b]))
    d1, d2 = d3[:bsz].reshape(x.shape), d3[bsz:].reshape(x.shape)
    a0 = jnp.maximum(jnp.max(jnp.abs(d3), 1) if norm == "linf" else jnp.sqrt(jnp.sum(d3 * d3, 1)), 1e-8)
    a1, a2 = a0[:bsz], a0[bsz:]
    alpha = jnp.minimum(jnp.maximum(a1 / (a1 + a2), 0.0), alpha_max).reshape(_bshape(x))
    x1 = jnp.clip((x1 + eta * d1) * (1 - alpha) + (x + d2 * eta) * alpha, 0.0, 1.0)
    is_adv = jnp.argmax(logits_fn(x1), -1) != labels
    t = _norm(x1 - x, norm)
    better = is_adv & (t < res2)
    adv = jnp.where(better.reshape(_bshape(x)), x1, adv)
    res2 = jnp.where(better, t, res2)
    x1 = jnp.where(is_adv.reshape(_bshape(x)), x + (x1 - x) * beta, x1)
    return dict(x1=x1, adv=adv, res2=res2)


def result(state: dict, x: jax.Array) -> jax.Array:
    """The restart's output ``[B, H, W, C]`` (reference ``adv_c``): the smallest adversarial point found,
    else x.  (An example is broken only if that point is misclassified *and* within ε — the caller checks.)"""
    return jnp.where((state["res2"] < 1e10).reshape(_bshape(x)), state["adv"], x)


__all__ = ["init", "projection_l2", "projection_linf", "result", "step"]
