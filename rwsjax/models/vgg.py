"""CIFAR VGG-16 without BatchNorm (Simonyan & Zisserman, 2015).

The VGG-16 used by Robust Weight Signatures (Cai, Zhang & Wang, ICML 2023):
torchvision's ``vgg16`` convolutional ``features`` (configuration "D", *no*
BatchNorm) followed by global average pooling and a single linear head.

``features`` configuration ``[64, 64, M, 128, 128, M, 256, 256, 256, M,
512, 512, 512, M, 512, 512, 512, M]``: every number is a 3x3 conv (PyTorch
``padding=1``, i.e. explicit symmetric padding, with bias) followed by ReLU,
every ``M`` a 2x2 max-pool with stride 2 (PyTorch ``MaxPool2d(2, 2)``, floor
mode; ``"VALID"`` padding). With 32x32 inputs the five pools leave 1x1 maps,
so the global average pooling is the identity there; it also makes 64x64 (or
any size >= 32) inputs work.

Names follow torchvision's ``features`` ``nn.Sequential`` indices: the conv
at position ``i`` is ``features_<i>`` (PyTorch ``features.<i>``); the ReLUs
and max-pools occupy indices but have no parameters. The 13 convs are thus
``features.0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28``. The head is
``classifier`` (a single ``nn.Linear``; note torchvision's ``classifier`` is a
3-layer MLP on 7x7 maps, which CIFAR VGGs replace by this one layer).

There is no BatchNorm, so ``model.init`` returns only ``{"params"}``; ``train``
is accepted (and ignored) for interface compatibility, and
``model.apply(v, x, train=True, mutable=["batch_stats"])`` returns
``(logits, {})`` — or ``(logits, {"batch_stats": {}})`` when ``v`` carries an
empty ``"batch_stats"`` collection, as :class:`rwsjax.train.state.TrainState`
variables do.

Parameter count (width multiplier 1.0, 10 classes): 14,719,818 =
14,714,688 (conv ``features``) + 5,130 (``classifier``).
"""

from __future__ import annotations

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from rwsjax.models.common import (CIFAR10_MEAN, CIFAR10_STD, Array, Dtype,
                                  conv_kernel_init, dense, global_avg_pool,
                                  normalize, scale_width)

#: torchvision VGG configuration "D" (VGG-16): conv widths and ``"M"`` pools.
VGG16_CONFIG: tuple[Union[int, str], ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
    512, 512, 512, "M", 512, 512, 512, "M")


def conv3x3_bias(features: int, *, dtype: Dtype = jnp.float32,
                 name: str | None = None) -> nn.Conv:
    """3x3 conv with bias, stride 1, PyTorch ``padding=1`` (torchvision VGG:
    Kaiming-normal ``fan_out`` kernel init, zero bias)."""
    return nn.Conv(features, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                   use_bias=True, dtype=dtype, param_dtype=jnp.float32,
                   kernel_init=conv_kernel_init, bias_init=nn.initializers.zeros,
                   name=name)


class VGG(nn.Module):
    """VGG conv features (no BN) + global average pooling + linear head.

    Attributes:
      config: conv widths (ints) and ``"M"`` (2x2/2 max-pool) entries, in
        torchvision ``cfgs`` format; default VGG-16 ("D").
      num_classes: number of output logits.
      width_multiplier: scales every conv width
        (``max(1, round(c * width_multiplier))``).
      mean, std: per-channel normalization constants in [0, 1] pixel scale.
      dtype: computation dtype (parameters are always float32).

    Call: ``x`` float ``[B, H, W, 3]`` in [0, 1] -> float32 logits
    ``[B, num_classes]``. ``train`` has no effect (no BatchNorm / dropout).

    Raises:
      ValueError: on non-4-D input, channel count != ``len(mean)``, or
        ``width_multiplier <= 0``.
      TypeError: on non-floating input.
    """

    config: Sequence[Union[int, str]] = VGG16_CONFIG
    num_classes: int = 10
    width_multiplier: float = 1.0
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train  # no BatchNorm / dropout
        out = normalize(x, self.mean, self.std, self.dtype)
        idx = 0  # index in torchvision's `features` nn.Sequential
        for v in self.config:
            if v == "M":
                out = nn.max_pool(out, (2, 2), strides=(2, 2), padding="VALID")
                idx += 1
            else:
                out = conv3x3_bias(scale_width(int(v), self.width_multiplier),
                                   dtype=self.dtype, name=f"features_{idx}")(out)
                out = nn.relu(out)
                idx += 2  # Conv2d, ReLU
        out = global_avg_pool(out)
        logits = dense(self.num_classes, dtype=self.dtype, name="classifier")(out)
        return logits.astype(jnp.float32)


def vgg16(*, num_classes: int = 10, width_multiplier: float = 1.0,
          mean: tuple[float, ...] = CIFAR10_MEAN,
          std: tuple[float, ...] = CIFAR10_STD,
          dtype: Dtype = jnp.float32) -> VGG:
    """VGG-16 (no BN) + GAP + linear head; 14,719,818 params at w=1, K=10."""
    return VGG(config=VGG16_CONFIG, num_classes=num_classes,
               width_multiplier=width_multiplier, mean=tuple(mean),
               std=tuple(std), dtype=dtype)
