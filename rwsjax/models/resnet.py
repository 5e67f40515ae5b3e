"""CIFAR ResNet-18 / 34 / 50 (He et al., 2016) in the kuangliu layout.

Follows ``models/resnet.py`` of https://github.com/kuangliu/pytorch-cifar:
3x3 stem conv (stride 1) + BN + ReLU, no max-pool, four stages of
``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50, expansion 4) with
``64w, 128w, 256w, 512w`` planes (strides 1, 2, 2, 2), global average pooling
and a linear head. The only deviation is that pooling
is global (``mean`` over H, W) rather than ``avg_pool2d(out, 4)``; the two are
identical for 32x32 inputs and the global version also accepts e.g. 64x64.

Module names map 1:1 to the PyTorch ``state_dict`` names via
:func:`rwsjax.models.common.flax_path_to_torch_name`: ``conv1``, ``bn1``,
``layer1_0`` ... ``layer4_1`` (``layer{i}.{j}``), ``linear``; inside a block
``conv1``, ``bn1``, ``conv2``, ``bn2`` (and ``conv3``, ``bn3`` in a
``Bottleneck``), ``shortcut_0`` (1x1 conv) and ``shortcut_1`` (BN).

Parameter counts (width multiplier 1.0, 10 classes; BN running statistics
are in ``batch_stats`` and not counted, as in PyTorch ``parameters()``):
ResNet-18 = 11,173,962, ResNet-34 = 21,282,122, ResNet-50 = 23,520,842.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rwsjax.models.common import (CIFAR10_MEAN, CIFAR10_STD, Array, Dtype,
                                  batch_norm, conv1x1, conv3x3, conv_kernel_init, dense,
                                  global_avg_pool, normalize, scale_width)


#: Values of :attr:`ResNet.layout`.
LAYOUTS = ("cifar", "torchvision")


def max_pool_3x3_s2_p1(x: Array) -> Array:
    """PyTorch ``MaxPool2d(kernel_size=3, stride=2, padding=1)`` on NHWC.

    The border is padded with ``-inf`` (PyTorch pads max-pooling implicitly
    with ``-inf``, never with zeros), then a 3x3 window slides with stride 2
    without further padding (floor mode): ``H -> floor((H - 1) / 2) + 1``.
    """
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU.

    Attributes:
      in_planes: input channels.
      planes: output channels.
      stride: stride of the first conv and of the projection shortcut.
      dtype: computation dtype.
      shortcut_name: name prefix of the projection shortcut's two modules,
        ``"<shortcut_name>_0"`` (1x1 conv) and ``"<shortcut_name>_1"`` (BN):
        ``"shortcut"`` (kuangliu, default) or ``"downsample"`` (torchvision).

    The shortcut is a 1x1 conv (stride ``stride``) + BN when
    ``stride != 1 or in_planes != planes``, identity otherwise.
    """

    #: output channels = ``expansion * planes``.
    expansion: ClassVar[int] = 1

    in_planes: int
    planes: int
    stride: int = 1
    dtype: Dtype = jnp.float32
    shortcut_name: str = "shortcut"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        out = conv3x3(self.planes, self.stride, dtype=self.dtype, name="conv1")(x)
        out = batch_norm(train, dtype=self.dtype, name="bn1")(out)
        out = nn.relu(out)
        out = conv3x3(self.planes, 1, dtype=self.dtype, name="conv2")(out)
        out = batch_norm(train, dtype=self.dtype, name="bn2")(out)
        if self.stride != 1 or self.in_planes != self.planes:
            sc = conv1x1(self.planes, self.stride, dtype=self.dtype, name=f"{self.shortcut_name}_0")(x)
            sc = batch_norm(train, dtype=self.dtype, name=f"{self.shortcut_name}_1")(sc)
        else:
            sc = x
        return nn.relu(out + sc)


class Bottleneck(nn.Module):
    """ResNet bottleneck block (kuangliu ``Bottleneck``, expansion 4).

    ``conv1`` 1x1 -> ``bn1`` -> ReLU -> ``conv2`` 3x3 (stride ``stride``) ->
    ``bn2`` -> ReLU -> ``conv3`` 1x1 (``4 * planes``) -> ``bn3``, + shortcut,
    ReLU. As in kuangliu (and torchvision v1.5) the stride sits on the 3x3 conv.

    Attributes:
      in_planes: input channels.
      planes: bottleneck channels; the block outputs ``4 * planes``.
      stride: stride of ``conv2`` and of the projection shortcut.
      dtype: computation dtype.
      shortcut_name: name prefix of the projection shortcut's modules
        (``"shortcut"``, default, or torchvision's ``"downsample"``).

    The shortcut is a 1x1 conv (stride ``stride``) + BN (``shortcut_0``,
    ``shortcut_1``; ``downsample_0``, ``downsample_1`` with
    ``shortcut_name="downsample"``) when ``stride != 1 or in_planes != 4 *
    planes``, identity otherwise.
    """

    #: output channels = ``expansion * planes``.
    expansion: ClassVar[int] = 4

    in_planes: int
    planes: int
    stride: int = 1
    dtype: Dtype = jnp.float32
    shortcut_name: str = "shortcut"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        out_planes = self.expansion * self.planes
        out = conv1x1(self.planes, 1, dtype=self.dtype, name="conv1")(x)
        out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(out))
        out = conv3x3(self.planes, self.stride, dtype=self.dtype, name="conv2")(out)
        out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn2")(out))
        out = conv1x1(out_planes, 1, dtype=self.dtype, name="conv3")(out)
        out = batch_norm(train, dtype=self.dtype, name="bn3")(out)
        if self.stride != 1 or self.in_planes != out_planes:
            sc = conv1x1(out_planes, self.stride, dtype=self.dtype, name=f"{self.shortcut_name}_0")(x)
            sc = batch_norm(train, dtype=self.dtype, name=f"{self.shortcut_name}_1")(sc)
        else:
            sc = x
        return nn.relu(out + sc)


class ResNet(nn.Module):
    """CIFAR ResNet (kuangliu/pytorch-cifar layout).

    Attributes:
      stage_sizes: number of blocks per stage, ``(2, 2, 2, 2)`` for ResNet-18,
        ``(3, 4, 6, 3)`` for ResNet-34 and ResNet-50.
      num_classes: number of output logits.
      width_multiplier: scales every channel count
        (``max(1, round(c * width_multiplier))``); 1.0 gives 64/128/256/512.
      mean, std: per-channel normalization constants in [0, 1] pixel scale.
      dtype: computation dtype (parameters are always float32).
      block_cls: :class:`BasicBlock` (default; ResNet-18/34) or
        :class:`Bottleneck` (ResNet-50); its ``expansion`` sets the block
        output width ``expansion * planes``.
      layout: ``"cifar"`` (kuangliu: 3x3 stride-1 stem, no max-pool, shortcut
        ``shortcut_0/1``, head ``linear``) or ``"torchvision"`` (ImageNet: 7x7
        stride-2 stem + 3x3 stride-2 max-pool, ``downsample_0/1``, head ``fc``;
        see :mod:`rwsjax.models.imagenet_resnet`).

    Call: ``model.apply(variables, x, train=...)`` with ``x`` float
    ``[B, H, W, 3]`` in [0, 1] (H, W >= 8 recommended; 32 for CIFAR) returns
    float32 logits ``[B, num_classes]``. With ``train=True`` pass
    ``mutable=["batch_stats"]``.

    Raises:
      ValueError: on non-4-D input, channel count != ``len(mean)``, or
        ``width_multiplier <= 0``.
      TypeError: on non-floating input.
    """

    stage_sizes: Sequence[int]
    num_classes: int = 10
    width_multiplier: float = 1.0
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    dtype: Dtype = jnp.float32
    block_cls: Any = BasicBlock
    layout: str = "cifar"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown ResNet layout {self.layout!r}; valid: {LAYOUTS}")
        torchvision = self.layout == "torchvision"
        x = normalize(x, self.mean, self.std, self.dtype)
        in_planes = scale_width(64, self.width_multiplier)
        if torchvision:  # 7x7 stride-2 stem and 3x3 stride-2 max-pool
            out = nn.Conv(in_planes, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                          dtype=self.dtype, param_dtype=jnp.float32, kernel_init=conv_kernel_init,
                          name="conv1")(x)
        else:
            out = conv3x3(in_planes, 1, dtype=self.dtype, name="conv1")(x)
        out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(out))
        if torchvision:
            out = max_pool_3x3_s2_p1(out)
        for i, n_blocks in enumerate(self.stage_sizes):
            planes = scale_width(64 * 2**i, self.width_multiplier)
            for j in range(n_blocks):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                out = self.block_cls(in_planes, planes, stride, dtype=self.dtype,
                                     shortcut_name="downsample" if torchvision else "shortcut",
                                     name=f"layer{i + 1}_{j}")(out, train)
                in_planes = self.block_cls.expansion * planes
        out = global_avg_pool(out)
        logits = dense(self.num_classes, dtype=self.dtype, name="fc" if torchvision else "linear")(out)
        return logits.astype(jnp.float32)


def resnet18(*, num_classes: int = 10, width_multiplier: float = 1.0,
             mean: tuple[float, ...] = CIFAR10_MEAN,
             std: tuple[float, ...] = CIFAR10_STD,
             dtype: Dtype = jnp.float32) -> ResNet:
    """CIFAR ResNet-18 (stages ``[2, 2, 2, 2]``); 11,173,962 params at w=1, K=10."""
    return ResNet(stage_sizes=(2, 2, 2, 2), num_classes=num_classes,
                  width_multiplier=width_multiplier, mean=tuple(mean),
                  std=tuple(std), dtype=dtype)


def resnet34(*, num_classes: int = 10, width_multiplier: float = 1.0,
             mean: tuple[float, ...] = CIFAR10_MEAN,
             std: tuple[float, ...] = CIFAR10_STD,
             dtype: Dtype = jnp.float32) -> ResNet:
    """CIFAR ResNet-34 (stages ``[3, 4, 6, 3]``); 21,282,122 params at w=1, K=10."""
    return ResNet(stage_sizes=(3, 4, 6, 3), num_classes=num_classes,
                  width_multiplier=width_multiplier, mean=tuple(mean),
                  std=tuple(std), dtype=dtype)


def resnet50(*, num_classes: int = 10, width_multiplier: float = 1.0,
             mean: tuple[float, ...] = CIFAR10_MEAN,
             std: tuple[float, ...] = CIFAR10_STD,
             dtype: Dtype = jnp.float32) -> ResNet:
    """CIFAR ResNet-50 (``Bottleneck``, stages ``[3, 4, 6, 3]``); 23,520,842
    params at w=1, K=10."""
    return ResNet(stage_sizes=(3, 4, 6, 3), num_classes=num_classes,
                  width_multiplier=width_multiplier, mean=tuple(mean),
                  std=tuple(std), dtype=dtype, block_cls=Bottleneck)
