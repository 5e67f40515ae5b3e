"""Shared building blocks for the CIFAR model zoo.

Everything here follows PyTorch conventions so that checkpoints from the
standard PyTorch CIFAR repositories can be imported 1:1:

* 3x3 convolutions use explicit ``((1, 1), (1, 1))`` padding (PyTorch
  ``padding=1``), 1x1 convolutions use no padding. ``"SAME"`` padding is *not*
  used because for stride 2 it pads asymmetrically, unlike PyTorch.
* BatchNorm uses ``momentum=0.9`` (Flax convention; equals PyTorch
  ``momentum=0.1``) and ``epsilon=1e-5``. Note that Flax updates the running
  variance with the *biased* batch variance, PyTorch with the unbiased one.
* Module names map to PyTorch ``state_dict`` names by
  :func:`flax_path_to_torch_name`.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rwsjax.models.batch_norm import BatchNorm

Array = Any
Dtype = Any

#: CIFAR-10 per-channel mean in [0, 1] pixel scale (RGB).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
#: CIFAR-10 per-channel standard deviation in [0, 1] pixel scale (RGB).
CIFAR10_STD: tuple[float, float, float] = (0.2471, 0.2435, 0.2616)

#: He/Kaiming normal init, ``mode="fan_out"``, ReLU gain (as torchvision and
#: the TRADES WideResNet, which uses ``normal(0, sqrt(2 / (k*k*out)))``).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
#: PyTorch ``nn.Linear`` default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

_INDEX_RE = re.compile(r"(?<!_)_(\d+)")


def scale_width(channels: int, width_multiplier: float) -> int:
    """Scale a channel count: ``max(1, round(channels * width_multiplier))``.

    Args:
      channels: nominal channel count at width multiplier 1.0.
      width_multiplier: positive multiplier.

    Returns:
      The scaled channel count as a Python ``int`` (at least 1).

    Raises:
      ValueError: if ``width_multiplier <= 0``.
    """
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier!r}")
    return max(1, int(round(channels * width_multiplier)))


def flax_path_to_torch_name(path: Sequence[str]) -> str:
    """Convert a Flax module/param path to the PyTorch dotted name.

    The rule is: join the path with ``"."`` and replace every ``_<digits>``
    with ``.<digits>``; e.g. ``("layer2_0", "shortcut_0", "kernel")`` ->
    ``"layer2.0.shortcut.0.kernel"``. A doubled underscore is a literal one
    (``"batchnorm__0"`` -> ``"batchnorm_0"``, the DeepMind WideResNet's names). The leaf name (``kernel``/``scale``/
    ``bias``/``mean``/``var``) is kept as is; mapping it to PyTorch's
    ``weight``/``bias``/``running_mean``/``running_var`` is up to the caller.
    """
    return _INDEX_RE.sub(r".\1", ".".join(str(p) for p in path)).replace("__", "_")


def conv3x3(features: int, stride: int = 1, *, dtype: Dtype = jnp.float32,
            name: str | None = None) -> nn.Conv:
    """3x3 conv, no bias, PyTorch ``padding=1`` (explicit symmetric padding)."""
    return nn.Conv(features, (3, 3), strides=(stride, stride),
                   padding=((1, 1), (1, 1)), use_bias=False, dtype=dtype,
                   param_dtype=jnp.float32, kernel_init=conv_kernel_init,
                   name=name)


def conv1x1(features: int, stride: int = 1, *, dtype: Dtype = jnp.float32,
            name: str | None = None) -> nn.Conv:
    """1x1 conv, no bias, no padding (PyTorch ``padding=0``)."""
    return nn.Conv(features, (1, 1), strides=(stride, stride),
                   padding=((0, 0), (0, 0)), use_bias=False, dtype=dtype,
                   param_dtype=jnp.float32, kernel_init=conv_kernel_init,
                   name=name)


#: Which BatchNorm :func:`batch_norm` builds: ``"rwsjax"`` (:class:`rwsjax.models.batch_norm.BatchNorm`,
#: hand-written backward pass) or ``"flax"`` (``flax.linen.BatchNorm``, autodiff backward). Both have the
#: same variables and results; benchmarks/train_steps.py switches it for its before/after line.
BATCH_NORM_IMPL = "rwsjax"


def batch_norm(train: bool, *, dtype: Dtype = jnp.float32,
               name: str | None = None) -> nn.Module:
    """BatchNorm equivalent to PyTorch ``nn.BatchNorm2d`` defaults.

    Uses batch statistics (and updates ``batch_stats``) when ``train`` is
    True, running averages otherwise.
    """
    cls = nn.BatchNorm if BATCH_NORM_IMPL == "flax" else BatchNorm
    return cls(use_running_average=not train, momentum=0.9, epsilon=1e-5,
               dtype=dtype, param_dtype=jnp.float32, name=name)


def dense(features: int, *, dtype: Dtype = jnp.float32,
          name: str | None = None) -> nn.Dense:
    """Linear head with bias (PyTorch ``nn.Linear`` weight init, zero bias)."""
    return nn.Dense(features, use_bias=True, dtype=dtype,
                    param_dtype=jnp.float32, kernel_init=dense_kernel_init,
                    bias_init=nn.initializers.zeros, name=name)


def normalize(x: Array, mean: Sequence[float], std: Sequence[float],
              dtype: Dtype = jnp.float32) -> Array:
    """Check an NHWC image batch and normalize it per channel.

    Args:
      x: float array ``[B, H, W, C]`` in [0, 1] pixel scale.
      mean: per-channel mean, length ``C``, in [0, 1] pixel scale.
      std: per-channel standard deviation, length ``C``.
      dtype: dtype of the returned array (the model's computation dtype).

    Returns:
      ``((x - mean) / std).astype(dtype)``, computed in float32.

    Raises:
      ValueError: if ``x`` is not 4-D, or ``C`` differs from ``len(mean)`` /
        ``len(std)``.
      TypeError: if ``x`` is not a floating-point array (e.g. uint8 pixels in
        [0, 255] must be converted to [0, 1] floats first).
    """
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected NHWC input [B, H, W, C], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"expected floating-point input in [0, 1], got dtype {x.dtype}")
    if not (len(mean) == len(std) == x.shape[-1]):
        raise ValueError(
            f"mean/std have lengths {len(mean)}/{len(std)} but input has "
            f"{x.shape[-1]} channels")
    m = jnp.asarray(mean, dtype=jnp.float32)
    s = jnp.asarray(std, dtype=jnp.float32)
    return ((x.astype(jnp.float32) - m) / s).astype(dtype)


def global_avg_pool(x: Array) -> Array:
    """Mean over the spatial axes: ``[B, H, W, C] -> [B, C]``."""
    return jnp.mean(x, axis=(1, 2))
