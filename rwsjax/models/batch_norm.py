"""BatchNorm with a hand-written backward pass (the PyTorch ``nn.BatchNorm2d`` computation).

Same variables and results as ``flax.linen.BatchNorm`` (``params``: ``scale``, ``bias``; ``batch_stats``:
``mean``, ``var``; running averages updated with the biased batch variance) with PyTorch's defaults
(``momentum=0.9``, i.e. ``nn.BatchNorm2d(momentum=0.1)``; Flax's default is 0.99), but in
training mode the normalization is one :func:`jax.custom_vjp` whose backward pass is the closed form

    dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂)),   dγ = Σ dy · x̂,   dβ = Σ dy

(Ioffe & Szegedy 2015, Sec. 3), with σ = sqrt(var + ε) and x̂ = (x − μ)/σ.  Autodiff of the forward
formula reaches the same gradient through the mean and the variance separately, which XLA:CPU runs as
an extra multiply-and-add pass over the activations per layer (+5–11 % on the PGD-10 AT step,
``benchmarks/at_step_vs_pytorch.py``); under a sharded batch the two sums of each pass are
summed over devices in one cross-device reduction.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = Any


def _stats(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """Per-channel mean and biased variance, E[x²] − E[x]² clipped at 0 (Flax's fast variance)."""
    mean = jnp.mean(x, axes)
    var = jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)
    return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: Array, scale: Array, bias: Array, epsilon: float) -> tuple[Array, Array, Array]:
    """Training-mode batch normalization over every axis but the last.

    Args:
      x: float32 ``[..., C]`` (e.g. ``[B, H, W, C]``).
      scale, bias: float32 ``[C]`` (γ, β).
      epsilon: added to the variance (PyTorch/Flax default 1e-5); not differentiated.

    Returns:
      ``(y [..., C], mean [C], var [C])`` — the normalized output and the batch mean and biased
      variance (for the running averages).  All three are differentiable.
    """
    return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
    axes = tuple(range(x.ndim - 1))
    mean, var = _stats(x, axes)
    inv = jax.lax.rsqrt(var + epsilon)
    y = (x - mean) * (scale * inv) + bias
    return (y, mean, var), (x, scale, mean, inv)


def _bwd(epsilon, res, cotangents):
    del epsilon
    x, scale, mean, inv = res
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    # Σ dy·(x − μ) as Σ dy·x − μ·Σ dy, and dx as one affine map of (dy, x) per channel: x − μ is never
    # written out as its own array (one pass fewer per layer; the same cancellation as the E[x²] − E[x]²
    # variance of the forward pass).
    sum_dy = jnp.sum(dy, axes)
    sum_dy_xc = jnp.sum(dy * x, axes) - mean * sum_dy
    dbias = sum_dy
    dscale = sum_dy_xc * inv
    # dL/dx = k·(dy − Σdy/n − (x − μ)·c) + dmean/n + (x − μ)·2·dvar/n through the normalization and
    # through the returned mean and variance, with k = γ/σ, c = Σdy·(x − μ)/(n·σ²); = k·dy + a·x + b.
    k = scale * inv
    c = (inv * inv) * (sum_dy_xc / n)
    a = 2.0 * dvar / n - k * c
    b = dmean / n - k * (sum_dy / n) - a * mean
    dx = k * dy + a * x + b
    return dx, dscale, dbias


batch_norm_train.defvjp(_forward, _bwd)


class BatchNorm(nn.Module):
    """Drop-in ``flax.linen.BatchNorm`` (feature axis last) with :func:`batch_norm_train` in training.

    Attributes:
      use_running_average: True: normalize with the running averages (evaluation); False: with the
        batch statistics, and update the running averages (not while initializing).
      momentum: running-average decay (0.9 = PyTorch ``momentum=0.1``).
      epsilon: added to the variance.
      dtype: output dtype (statistics and normalization are computed in float32).
      param_dtype: dtype of ``scale``/``bias``.
    """

    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype).astype(jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype).astype(jnp.float32)
        x = x.astype(jnp.float32)
        if self.use_running_average:
            y = (x - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
        else:
            y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * jax.lax.stop_gradient(mean)
                ra_var.value = m * ra_var.value + (1.0 - m) * jax.lax.stop_gradient(var)
        return y.astype(self.dtype)
