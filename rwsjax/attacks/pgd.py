"""Projected gradient descent (Madry et al., ICLR 2018), ℓ∞ and ℓ2.

All attacks work in [0, 1] pixel space (the models normalize inside), so
``eps`` and ``step_size`` are in pixel units: the PGD-AT default is
``eps=8/255, step_size=2/255, steps=10`` with a uniform random start.

The attack is a pure function of a ``logits_fn`` closure; the caller decides
how BatchNorm behaves inside it (running statistics for evaluation attacks,
batch statistics without updating the running averages while crafting
training attacks — see :mod:`rwsjax.train.steps`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LogitsFn = Callable[[jax.Array], jax.Array]

NORMS = ("linf", "l2")


def _per_example_l2(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)), keepdims=True))


def project(x_adv: jax.Array, x: jax.Array, eps: float, norm: str = "linf") -> jax.Array:
    """Project ``x_adv`` onto {‖x_adv − x‖ ≤ eps} ∩ [0, 1]^d, per example.

    Args:
      x_adv, x: float32 ``[B, H, W, C]`` in [0, 1].
      eps: radius in pixel units; ``norm`` is ``"linf"`` or ``"l2"``.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = jnp.clip(delta, -eps, eps)
    elif norm == "l2":
        n = _per_example_l2(delta)
        delta = delta * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))
    else:
        raise ValueError(f"unknown norm {norm!r}; valid: {NORMS}")
    return jnp.clip(x + delta, 0.0, 1.0)


def random_start(key: jax.Array, x: jax.Array, eps: float, norm: str = "linf") -> jax.Array:
    """Uniform sample from the ε-ball around ``x`` (ℓ∞: per pixel; ℓ2: uniform in the ball), clipped to [0,1]."""
    if norm == "linf":
        delta = jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
    elif norm == "l2":
        kd, kr = jax.random.split(key)
        d = jax.random.normal(kd, x.shape, x.dtype)
        d = d / jnp.maximum(_per_example_l2(d), 1e-12)
        dim = x[0].size
        r = jax.random.uniform(kr, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype) ** (1.0 / dim)
        delta = d * r * eps
    else:
        raise ValueError(f"unknown norm {norm!r}; valid: {NORMS}")
    return jnp.clip(x + delta, 0.0, 1.0)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy, ``[B, K]`` float logits, int ``[B]`` labels → ``[B]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def pgd(
    logits_fn: LogitsFn,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array | None,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_init: bool = True,
    unroll: bool = True,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    gaussian_start: float | None = None,
    clip_start: bool = True,
    iterates: bool = False,
    x_init: jax.Array | None = None,
):
    """Untargeted PGD maximizing the cross-entropy of ``logits_fn`` (or ``loss_fn``).

    Args:
      logits_fn: ``[B, H, W, C]`` float32 in [0,1] → logits ``[B, K]``.
      x: clean images, float32 ``[B, H, W, C]`` in [0, 1].
      labels: int32 ``[B]``.
      key: PRNG key for the random start (unused when ``random_init=False``).
      eps, step_size: pixel units (8/255 and 2/255 for the CIFAR ℓ∞ recipe).
      steps: number of gradient steps (0 returns the start point).
      norm: ``"linf"`` (signed gradient step) or ``"l2"`` (normalized step).
      unroll: Python-unrolled loop (fast on XLA:CPU, measured 6–8×) or a
        rolled ``lax.fori_loop`` (smaller program, faster compiles on GPU/TPU).
      loss_fn: ``(logits [B,K], labels [B]) -> [B]`` to maximize instead of the
        cross-entropy (TRADES: the KL to the clean prediction).
      gaussian_start: start from ``clip(x + σ·N(0, I), 0, 1)`` with this σ
        (TRADES/MART official code: 0.001) instead of the uniform ball sample.
      clip_start: ``False``: the Gaussian start is not clipped to [0, 1] before the first gradient
        (the official TRADES/MART code, ``trades.py:32``, ``mart.py:21``; every later iterate is).
      iterates: also return the points the gradients were taken at.
      x_init: start from this point (float32 ``[B, H, W, C]``, taken as given) instead of a random one;
        ``key`` is then unused (e.g. one step from another implementation's iterate).

    Returns:
      adversarial images, float32 ``[B, H, W, C]``, inside the ε-ball and [0, 1]; with ``iterates``
      ``(x_adv, z)``, ``z`` ``[steps, B, H, W, C]`` the start and each later iterate before its step.
      The results carry no gradient (``stop_gradient``).

    Raises:
      ValueError: unknown ``norm``.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {NORMS}")
    x = jax.lax.stop_gradient(x)
    per_example = cross_entropy if loss_fn is None else loss_fn
    loss = lambda z: jnp.sum(per_example(logits_fn(z), labels))
    grad = jax.grad(loss)

    def body(_, z):
        g = grad(z)
        if norm == "linf":
            z = z + step_size * jnp.sign(g)
        else:
            z = z + step_size * g / jnp.maximum(_per_example_l2(g), 1e-12)
        return project(z, x, eps, norm)

    if x_init is not None:
        z = jnp.asarray(x_init, x.dtype)
    elif gaussian_start is not None:
        z = x + gaussian_start * jax.random.normal(key, x.shape, x.dtype)
        z = jnp.clip(z, 0.0, 1.0) if clip_start else z
    else:
        z = random_start(key, x, eps, norm) if random_init else x
    seen = []
    if unroll:
        for i in range(steps):
            if iterates:
                seen.append(z)
            z = body(i, z)
        if iterates:
            seen = jnp.stack(seen) if seen else jnp.zeros((0,) + x.shape, x.dtype)
    elif iterates:
        def record(i, carry):
            z, buf = carry
            return body(i, z), buf.at[i].set(z)
        z, seen = jax.lax.fori_loop(0, steps, record, (z, jnp.zeros((steps,) + x.shape, x.dtype)))
    else:
        z = jax.lax.fori_loop(0, steps, body, z)
    if not clip_start:  # an unclipped start is clipped at the end (a no-op after a step), as the official code
        z = jnp.clip(z, 0.0, 1.0)
    z = jax.lax.stop_gradient(z)
    return (z, jax.lax.stop_gradient(seen)) if iterates else z


def robust_correct(
    logits_fn: LogitsFn,
    x: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    restarts: int = 1,
    per_run: bool = False,
    **pgd_kwargs,
):
    """Clean and worst-case robust correctness per example over ``restarts`` PGD runs.

    An example counts as robust only if it is classified correctly after
    every restart (per-example worst case, so the accuracy is ≤ the minimum
    of the per-run accuracies, which is how RiFT's paper takes "the worst of
    three runs").

    Returns:
      ``(clean_correct, robust_correct)``, bool ``[B]`` each; with ``per_run``
      also bool ``[restarts, B]``: correct after each run alone.
    """
    clean = jnp.argmax(logits_fn(x), -1) == labels
    robust, runs = clean, []
    for k in jax.random.split(key, restarts):
        x_adv = pgd(logits_fn, x, labels, k, **pgd_kwargs)
        runs.append(jnp.argmax(logits_fn(x_adv), -1) == labels)
        robust = robust & runs[-1]
    return (clean, robust, jnp.stack(runs)) if per_run else (clean, robust)
