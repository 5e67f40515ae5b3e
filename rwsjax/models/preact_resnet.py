"""CIFAR PreAct ResNet-18 (He et al., 2016b) in the kuangliu layout.

Follows ``models/preact_resnet.py`` of https://github.com/kuangliu/pytorch-cifar
with the final ``bn`` + ReLU before pooling that the "Bag of Tricks for
Adversarial Training" / "Overfitting in adversarially robust deep learning"
``PreActResNet18`` adds (without it the head would see un-normalized,
un-activated features of the last pre-activation block).

Layout: 3x3 stem conv ``conv1`` (64w, stride 1, no BN/ReLU after it), four
stages ``layer1``..``layer4`` of two ``PreActBlock`` each (64w, 128w, 256w,
512w; strides 1, 2, 2, 2), top-level ``bn`` + ReLU, global average pooling,
``linear``. Inside a block: ``bn1`` -> ReLU -> (``shortcut_0``, a 1x1 conv
without BN, applied to this pre-activated tensor when present) -> ``conv1``
-> ``bn2`` -> ReLU -> ``conv2`` -> + shortcut. Submodules are created in that
forward order. Names map to PyTorch via
:func:`rwsjax.models.common.flax_path_to_torch_name` (``layer1.0.bn1`` ...,
``layer2.0.shortcut.0``, ``bn``, ``linear``).

Parameter count (width multiplier 1.0, 10 classes): 11,172,170 =
11,171,146 (kuangliu PreActResNet18) + 1,024 for the final ``bn``
(scale + bias of 512 channels). Running statistics live in ``batch_stats``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rwsjax.models.common import (CIFAR10_MEAN, CIFAR10_STD, Array, Dtype,
                                  batch_norm, conv1x1, conv3x3, dense,
                                  global_avg_pool, normalize, scale_width)


class PreActBlock(nn.Module):
    """Pre-activation basic block (kuangliu ``PreActBlock``).

    Attributes:
      in_planes: input channels.
      planes: output channels.
      stride: stride of ``conv1`` and of the shortcut conv.
      dtype: computation dtype.

    The shortcut is a 1x1 conv (no BN) on ``relu(bn1(x))`` when
    ``stride != 1 or in_planes != planes``, else the identity on ``x``; with
    ``shortcut_from_input`` the conv takes ``x`` itself (RobustBench's
    ``PreActBlock`` with ``out_shortcut=False``: Wong2020Fast).
    """

    in_planes: int
    planes: int
    stride: int = 1
    shortcut_from_input: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(x))
        if self.stride != 1 or self.in_planes != self.planes:
            shortcut = conv1x1(self.planes, self.stride, dtype=self.dtype,
                               name="shortcut_0")(x if self.shortcut_from_input else out)
        else:
            shortcut = x
        out = conv3x3(self.planes, self.stride, dtype=self.dtype, name="conv1")(out)
        out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn2")(out))
        out = conv3x3(self.planes, 1, dtype=self.dtype, name="conv2")(out)
        return out + shortcut


class PreActResNet(nn.Module):
    """CIFAR PreAct ResNet with a final BN + ReLU (Bag-of-Tricks layout).

    Attributes:
      stage_sizes: blocks per stage; ``(2, 2, 2, 2)`` for PreAct ResNet-18.
      num_classes: number of output logits.
      width_multiplier: scales every channel count
        (``max(1, round(c * width_multiplier))``).
      mean, std: per-channel normalization constants in [0, 1] pixel scale.
      final_bn: the final ``bn`` + ReLU before pooling (False: RobustBench's
        ``PreActResNet`` with ``bn_before_fc=False``, the head on the last
        block's raw sum).
      shortcut_from_input: see :class:`PreActBlock`.
      dtype: computation dtype (parameters are always float32).

    Call: ``x`` float ``[B, H, W, 3]`` in [0, 1] -> float32 logits
    ``[B, num_classes]``. With ``train=True`` pass ``mutable=["batch_stats"]``.

    Raises:
      ValueError: on non-4-D input, channel count != ``len(mean)``, or
        ``width_multiplier <= 0``.
      TypeError: on non-floating input.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 10
    width_multiplier: float = 1.0
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    final_bn: bool = True
    shortcut_from_input: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = normalize(x, self.mean, self.std, self.dtype)
        in_planes = scale_width(64, self.width_multiplier)
        out = conv3x3(in_planes, 1, dtype=self.dtype, name="conv1")(x)
        for i, n_blocks in enumerate(self.stage_sizes):
            planes = scale_width(64 * 2**i, self.width_multiplier)
            for j in range(n_blocks):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                out = PreActBlock(in_planes, planes, stride, self.shortcut_from_input, dtype=self.dtype,
                                  name=f"layer{i + 1}_{j}")(out, train)
                in_planes = planes
        if self.final_bn:
            out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn")(out))
        out = global_avg_pool(out)
        logits = dense(self.num_classes, dtype=self.dtype, name="linear")(out)
        return logits.astype(jnp.float32)


def preact_resnet18(*, num_classes: int = 10, width_multiplier: float = 1.0,
                    mean: tuple[float, ...] = CIFAR10_MEAN,
                    std: tuple[float, ...] = CIFAR10_STD,
                    dtype: Dtype = jnp.float32) -> PreActResNet:
    """PreAct ResNet-18 with final BN; 11,172,170 params at w=1, K=10."""
    return PreActResNet(stage_sizes=(2, 2, 2, 2), num_classes=num_classes,
                        width_multiplier=width_multiplier, mean=tuple(mean),
                        std=tuple(std), dtype=dtype)


def preact_resnet18_rb(*, num_classes: int = 10, width_multiplier: float = 1.0,
                       mean: tuple[float, ...] = CIFAR10_MEAN,
                       std: tuple[float, ...] = CIFAR10_STD,
                       dtype: Dtype = jnp.float32) -> PreActResNet:
    """RobustBench's ``PreActResNet(PreActBlock, [2, 2, 2, 2])`` (Wong2020Fast): shortcut convs on the block
    input, no final BN; 11,171,146 params at w=1, K=10."""
    return PreActResNet(stage_sizes=(2, 2, 2, 2), num_classes=num_classes,
                        width_multiplier=width_multiplier, mean=tuple(mean),
                        std=tuple(std), final_bn=False, shortcut_from_input=True, dtype=dtype)
