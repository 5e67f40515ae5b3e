"""Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks"), ℓ∞ and ℓ2, in JAX.

APGD is PGD with momentum whose step size needs no tuning: it starts at 2ε and is halved at
checkpoints w_j when the last stretch of iterations was not going up (Algorithm 1, Eq. 2–3):

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06),   w_j = ⌈p_j · N_iter⌉

    condition 1:  #{i ∈ [w_{j−1}, w_j) : f(x^{(i+1)}) > f(x^{(i)})}  <  ρ · (w_j − w_{j−1}),   ρ = 0.75
    condition 2:  η^{(w_{j−1})} = η^{(w_j)}  and  f_max^{(w_{j−1})} = f_max^{(w_j)}

If either holds, η is halved and the next iterate restarts from the best point so far.  The update is

    z = P(x^{(k)} + η ∇̃f(x^{(k)})),   x^{(k+1)} = P(x^{(k)} + α(z − x^{(k)}) + (1 − α)(x^{(k)} − x^{(k−1)})),

α = 0.75 (1 at the first step), ∇̃ = sign(∇) for ℓ∞ and ∇/‖∇‖₂ for ℓ2, P the projection onto the
ε-ball ∩ [0, 1].  All bookkeeping is per example, as in the official implementation (the
checkpoint schedule is shared, step sizes and best points are not).  Losses: cross-entropy
(APGD-CE) and the targeted Difference of Logits Ratio (APGD-T, Eq. 6).

An example counts as robust only if no iterate of any run misclassified it.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.attacks.pgd import NORMS, cross_entropy, project

LogitsFn = Callable[[jax.Array], jax.Array]


def checkpoints(n_iter: int) -> list[int]:
    """The iterations ``w_j`` (paper Sec. 3.2) at which the step size may be halved, ``0 < w_j < n_iter``.

    Examples: ``checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]``.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1:
            break
        p.append(nxt)
    ws = sorted({math.ceil(q * n_iter - 1e-9) for q in p[1:]})
    return [w for w in ws if 0 < w < n_iter]


def dlr_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Untargeted DLR (Eq. 5): −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12), per example ``[B]``."""
    z = logits.astype(jnp.float32)
    srt = jnp.sort(z, axis=-1)[:, ::-1]
    zy = jnp.take_along_axis(z, labels[:, None], -1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(labels, z.shape[-1], dtype=bool), -jnp.inf, z), -1)
    return -(zy - other) / (srt[:, 0] - srt[:, 2] + 1e-12)


def dlr_targeted_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
    """Targeted DLR (Eq. 6): −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12), per example ``[B]``."""
    z = logits.astype(jnp.float32)
    srt = jnp.sort(z, axis=-1)[:, ::-1]
    zy = jnp.take_along_axis(z, labels[:, None], -1)[:, 0]
    zt = jnp.take_along_axis(z, targets[:, None], -1)[:, 0]
    return -(zy - zt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


def _direction(g, norm):
    if norm == "linf":
        return jnp.sign(g)
    flat = g.reshape(g.shape[0], -1)
    n = jnp.sqrt(jnp.sum(flat * flat, -1)).reshape((-1,) + (1,) * (g.ndim - 1))
    return g / (n + 1e-12)


def _start(key, x, eps, norm):
    """The official random start: a random direction scaled to the ε-sphere, clipped to [0, 1]."""
    t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    flat = t.reshape(t.shape[0], -1)
    if norm == "linf":
        scale = jnp.max(jnp.abs(flat), -1)
    else:
        scale = jnp.sqrt(jnp.sum(flat * flat, -1))
    return jnp.clip(x + eps * t / (scale.reshape((-1,) + (1,) * (x.ndim - 1)) + 1e-12), 0.0, 1.0)


def apgd(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, key: jax.Array, *, eps: float,
         n_iter: int = 100, norm: str = "linf", loss: str = "ce", targets: jax.Array | None = None,
         alpha: float = 0.75, rho: float = 0.75, random_start: bool = True, unroll: bool = False,
         return_trace: bool = False):
    """One APGD run from one (random) start.

    Args:
      logits_fn: ``[B, H, W, C] float in [0,1] -> [B, K]`` logits (e.g. BN in eval mode).
      x: clean images float32 ``[B, H, W, C]`` in [0, 1]; ``labels`` int ``[B]``.
      key: PRNG key for the random start.
      eps: radius in [0,1] pixel units (ℓ∞: 8/255; ℓ2: 0.5).
      n_iter: iterations N (AutoAttack: 100).
      norm: ``"linf"`` or ``"l2"``.
      loss: ``"ce"`` (cross-entropy, APGD-CE), ``"dlr"`` (untargeted DLR) or ``"dlr_t"`` (targeted DLR,
        APGD-T; needs ``targets`` int ``[B]``).
      alpha, rho: momentum and the condition-1 fraction (paper: 0.75, 0.75).
      unroll: unroll the N iterations (faster on XLA:CPU, much slower to compile) or keep a rolled
        ``lax.scan`` (GPU/TPU: same speed, fast compile).
      return_trace: also return per-iteration ``losses [n_iter+1, B]`` and ``steps [n_iter+1, B]``
        (the step size in force at each iterate) for inspection.

    Returns:
      ``(x_adv, robust)``: float32 ``[B, H, W, C]`` in the ε-ball ∩ [0,1] — the first misclassified
      iterate where there is one, else the highest-loss iterate — and bool ``[B]``, True where no
      iterate was misclassified.  With ``return_trace``, ``(x_adv, robust, trace)``.

    Raises:
      ValueError: unknown ``norm``/``loss``, ``dlr_t`` without ``targets``, or ``n_iter < 1``.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {NORMS}")
    if loss not in ("ce", "dlr", "dlr_t"):
        raise ValueError(f"unknown APGD loss {loss!r}; valid: ('ce', 'dlr', 'dlr_t')")
    if loss == "dlr_t" and targets is None:
        raise ValueError("loss='dlr_t' (APGD-T) needs targets")
    checks = checkpoints(n_iter)
    is_check, window = np.zeros(n_iter, bool), np.zeros(n_iter, np.int32)
    last = 0
    for w in checks:  # the checkpoint w_j is reached after iteration index w_j − 1
        is_check[w - 1], window[w - 1], last = True, w - last, w
    is_check, window = jnp.asarray(is_check), jnp.asarray(window)
    x = x.astype(jnp.float32)
    bshape = (-1,) + (1,) * (x.ndim - 1)

    def evaluate(z):
        def total(u):
            logits = logits_fn(u)
            if loss == "ce":
                value = cross_entropy(logits, labels)
            elif loss == "dlr":
                value = dlr_loss(logits, labels)
            else:
                value = dlr_targeted_loss(logits, labels, targets)
            return jnp.sum(value), (value, logits)
        (_, (value, logits)), g = jax.value_and_grad(total, has_aux=True)(z)
        return value, logits, g

    x0 = _start(key, x, eps, norm) if random_start else x
    f0, logits0, g0 = evaluate(x0)
    robust0 = jnp.argmax(logits0, -1) == labels
    # Per example: current/previous iterate, its loss and gradient; the best (max-loss) point and its
    # gradient; the best loss at the last checkpoint, whether the step was halved there, the number of
    # loss increases since it; the step size; robustness so far and the first misclassified iterate.
    init = dict(x=x0, x_prev=x0, f=f0, g=g0, x_max=x0, f_max=f0, g_max=g0, f_max_check=f0,
                reduced=jnp.zeros_like(robust0), ups=jnp.zeros(x.shape[0], jnp.int32),
                step=jnp.full((x.shape[0],), 2.0 * eps, jnp.float32), robust=robust0, x_adv=x0)

    def iteration(s, k):
        a = jnp.where(k == 0, 1.0, alpha)
        z = project(s["x"] + s["step"].reshape(bshape) * _direction(s["g"], norm), x, eps, norm)
        x_new = project(s["x"] + a * (z - s["x"]) + (1.0 - a) * (s["x"] - s["x_prev"]), x, eps, norm)
        f_new, logits, g_new = evaluate(x_new)
        wrong = jnp.argmax(logits, -1) != labels
        better = f_new > s["f_max"]
        s = dict(s, x_prev=s["x"], x=x_new, f=f_new, g=g_new, robust=s["robust"] & ~wrong,
                 x_adv=jnp.where((wrong & s["robust"]).reshape(bshape), x_new, s["x_adv"]),
                 ups=s["ups"] + (f_new > s["f"]).astype(jnp.int32),
                 x_max=jnp.where(better.reshape(bshape), x_new, s["x_max"]),
                 g_max=jnp.where(better.reshape(bshape), g_new, s["g_max"]),
                 f_max=jnp.where(better, f_new, s["f_max"]))
        # At a checkpoint: halve η where condition 1 (too few increases) or 2 (no progress of the best
        # loss and η not halved last time) holds, and restart those examples from their best point.
        check = is_check[k]
        cond1 = s["ups"] < rho * window[k]
        cond2 = ~s["reduced"] & (s["f_max_check"] >= s["f_max"])
        halve = check & (cond1 | cond2)
        s = dict(s, step=jnp.where(halve, s["step"] / 2.0, s["step"]),
                 x=jnp.where(halve.reshape(bshape), s["x_max"], s["x"]),
                 g=jnp.where(halve.reshape(bshape), s["g_max"], s["g"]),
                 reduced=jnp.where(check, halve, s["reduced"]),
                 f_max_check=jnp.where(check, s["f_max"], s["f_max_check"]),
                 ups=jnp.where(check, 0, s["ups"]))
        return s, (s["f"], s["step"])

    state, (losses, steps) = jax.lax.scan(iteration, init, jnp.arange(n_iter), unroll=n_iter if unroll else 1)
    x_out = jnp.where(state["robust"].reshape(bshape), state["x_max"], state["x_adv"])
    if return_trace:
        trace = {"losses": jnp.concatenate([f0[None], losses]), "steps": jnp.concatenate([init["step"][None], steps])}
        return x_out, state["robust"], trace
    return x_out, state["robust"]


def apgd_restarts(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, key: jax.Array, *, restarts: int = 1,
                  **apgd_kwargs) -> tuple[jax.Array, jax.Array]:
    """``restarts`` APGD runs from independent random starts (keys ``fold_in(key, r)``; restart 0 is
    :func:`apgd` with ``fold_in(key, 0)``); an example is robust only if it survives every run, and its
    ``x_adv`` comes from the first run that broke it (else from the last run).

    Returns:
      ``(x_adv [B, H, W, C], robust bool [B])`` as :func:`apgd`.

    Raises:
      ValueError: ``restarts < 1``, and whatever :func:`apgd` raises.
    """
    if restarts < 1:
        raise ValueError(f"APGD restarts must be >= 1, got {restarts}")
    bshape = (-1,) + (1,) * (x.ndim - 1)
    x_adv, robust = apgd(logits_fn, x, labels, jax.random.fold_in(key, 0), **apgd_kwargs)
    for r in range(1, restarts):
        x_r, robust_r = apgd(logits_fn, x, labels, jax.random.fold_in(key, r), **apgd_kwargs)
        x_adv = jnp.where(robust.reshape(bshape), x_r, x_adv)  # still robust before run r: take run r's point
        robust = robust & robust_r
    return x_adv, robust


def top_targets(logits: jax.Array, labels: jax.Array, n_targets: int) -> jax.Array:
    """The ``n_targets`` highest-scoring classes other than the label, per example: int ``[n_targets, B]``."""
    masked = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    order = jnp.argsort(-masked, axis=-1)
    return order[:, :n_targets].T


def autoattack_lite(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, key: jax.Array, *, eps: float,
                    norm: str = "linf", n_iter: int = 100, n_targets: int = 9,
                    unroll: bool = False, restarts: int = 1) -> dict[str, jax.Array]:
    """APGD-CE, then APGD-T against each of the ``n_targets`` most likely wrong classes (AutoAttack's
    "standard" first two attacks, one restart each there; ``restarts`` random restarts per attack and
    target otherwise, :func:`apgd_restarts`); an example is robust only if it survives all of them.

    Returns:
      bool ``[B]`` masks: ``"clean"`` (correct on x), ``"apgd_ce"``, ``"apgd_t"`` (robust to each alone)
      and ``"combined"`` (robust to both, i.e. AutoAttack-lite robust accuracy = mean of it).
    """
    x = x.astype(jnp.float32)
    logits = logits_fn(x)
    clean = jnp.argmax(logits, -1) == labels
    k_ce, k_t = jax.random.split(key)
    _, robust_ce = apgd_restarts(logits_fn, x, labels, k_ce, restarts=restarts, eps=eps, n_iter=n_iter, norm=norm,
                                 loss="ce", unroll=unroll)
    robust_t = clean
    for i, t in enumerate(top_targets(logits, labels, n_targets)):
        _, r = apgd_restarts(logits_fn, x, labels, jax.random.fold_in(k_t, i), restarts=restarts, eps=eps,
                             n_iter=n_iter, norm=norm, loss="dlr_t", targets=t, unroll=unroll)
        robust_t = robust_t & r
    return {"clean": clean, "apgd_ce": clean & robust_ce, "apgd_t": robust_t,
            "combined": clean & robust_ce & robust_t}


__all__ = ["apgd", "apgd_restarts", "autoattack_lite", "checkpoints", "dlr_loss", "dlr_targeted_loss", "top_targets"]
