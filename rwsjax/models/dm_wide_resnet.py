"""The DeepMind WideResNet (Gowal et al. 2020; Rebuffi et al. 2021; Wang et al. 2023) in RobustBench's layout.

Follows ``robustbench/model_zoo/architectures/dm_wide_resnet.py`` (``DMWideResNet``, itself from
deepmind-research ``adversarial_robustness/pytorch/model_zoo.py``): the input normalized inside the model,
``init_conv`` (3x3, 16 ch), three groups ``layer.0``..``layer.2`` of ``(depth - 4) / 6`` pre-activation blocks
(widths ``16k, 32k, 64k``; first-block strides 1, 2, 2), final ``batchnorm`` + activation, global average
pooling, ``logits`` (with bias). The activation is ReLU or Swish/SiLU (``x·sigmoid(x)``; RobustBench's
``Swish`` and ``nn.SiLU`` are the same function).

Block (``layer.g.block.i``): ``a = act(batchnorm_0(x))``; ``out = conv_1(act(batchnorm_1(conv_0(pad(a)))))``;
result ``out + (shortcut(a) if has_shortcut else x)``. ``conv_0`` is padded as TensorFlow's ``SAME``: (1, 1)
at stride 1, (0, 1) — nothing above/left, one row/column below/right — at stride 2; ``shortcut`` is a 1x1 conv
(stride ``stride``, no BN), present when the width changes (and, here, when the stride is not 1: never the case
at the published widths, but it keeps tiny width multipliers well-defined).

Names map to PyTorch via :func:`rwsjax.models.common.flax_path_to_torch_name`, whose doubled underscore is a
literal one: ``layer_0/block_0/batchnorm__0`` → ``layer.0.block.0.batchnorm_0``.

Parameter counts (width multiplier 1.0, 10 classes): WRN-28-10 36,479,194; WRN-70-16 266,796,506. Built by
name as ``dm_wrn<depth>_<k>_<relu|swish>`` (:func:`rwsjax.models.registry.create_model`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from rwsjax.models.common import (CIFAR10_MEAN, CIFAR10_STD, Array, Dtype, batch_norm, conv1x1,
                                  conv_kernel_init, dense, global_avg_pool, normalize, scale_width)

#: Activations by name: ``"relu"``, ``"swish"`` (= SiLU).
ACTIVATIONS = {"relu": nn.relu, "swish": nn.swish}


def _conv3x3(features: int, stride: int, padding, dtype: Dtype, name: str) -> nn.Conv:
    return nn.Conv(features, (3, 3), strides=(stride, stride), padding=padding, use_bias=False, dtype=dtype,
                   param_dtype=jnp.float32, kernel_init=conv_kernel_init, name=name)


class DMBlock(nn.Module):
    """RobustBench ``_Block``: batchnorm_0-act-conv_0 (SAME) - batchnorm_1-act-conv_1 + shortcut."""

    in_planes: int
    out_planes: int
    stride: int = 1
    activation: str = "swish"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        act = ACTIVATIONS[self.activation]
        has_shortcut = self.in_planes != self.out_planes or self.stride != 1
        a = act(batch_norm(train, dtype=self.dtype, name="batchnorm__0")(x))
        pad = ((1, 1), (1, 1)) if self.stride == 1 else ((0, 1), (0, 1))
        out = _conv3x3(self.out_planes, self.stride, pad, self.dtype, "conv__0")(a)
        out = act(batch_norm(train, dtype=self.dtype, name="batchnorm__1")(out))
        out = _conv3x3(self.out_planes, 1, ((1, 1), (1, 1)), self.dtype, "conv__1")(out)
        shortcut = conv1x1(self.out_planes, self.stride, dtype=self.dtype, name="shortcut")(a) if has_shortcut else x
        return shortcut + out


class DMBlockGroup(nn.Module):
    """RobustBench ``_BlockGroup``: ``num_blocks`` :class:`DMBlock` named ``block_{i}``; the first changes the
    width and uses ``stride``."""

    num_blocks: int
    in_planes: int
    out_planes: int
    stride: int = 1
    activation: str = "swish"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        for i in range(self.num_blocks):
            x = DMBlock(self.in_planes if i == 0 else self.out_planes, self.out_planes, self.stride if i == 0 else 1,
                        self.activation, dtype=self.dtype, name=f"block_{i}")(x, train)
        return x


class DMWideResNet(nn.Module):
    """DeepMind WideResNet-``depth``-``width`` (RobustBench ``DMWideResNet``).

    Attributes:
      depth: total depth; ``(depth - 4)`` must be divisible by 6 (28, 70, 106).
      width: width factor ``k`` (10, 16).
      activation: ``"relu"`` or ``"swish"`` (:data:`ACTIVATIONS`).
      num_classes: number of output logits.
      width_multiplier: additionally scales every channel count (``max(1, round(c * width_multiplier))``).
      mean, std: per-channel normalization constants in [0, 1] pixel scale (RobustBench: CIFAR-10
        (0.4914, 0.4822, 0.4465) / (0.2471, 0.2435, 0.2616), CIFAR-100 (0.5071, 0.4865, 0.4409) /
        (0.2673, 0.2564, 0.2762)).
      dtype: computation dtype (parameters are always float32).

    Call: ``x`` float ``[B, H, W, 3]`` in [0, 1] -> float32 logits ``[B, num_classes]``. With ``train=True``
    pass ``mutable=["batch_stats"]``.

    Raises:
      ValueError: ``(depth - 4) % 6 != 0``, an unknown activation, non-4-D input or a channel count other than
        ``len(mean)``.
      TypeError: non-floating input.
    """

    depth: int = 28
    width: int = 10
    activation: str = "swish"
    num_classes: int = 10
    width_multiplier: float = 1.0
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.depth < 10 or (self.depth - 4) % 6 != 0:
            raise ValueError(f"DMWideResNet depth must be 6n+4 with n >= 1, got {self.depth}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {sorted(ACTIVATIONS)}")
        n = (self.depth - 4) // 6
        ch = [scale_width(c, self.width_multiplier) for c in (16, 16 * self.width, 32 * self.width, 64 * self.width)]
        out = normalize(x, self.mean, self.std, self.dtype)
        out = _conv3x3(ch[0], 1, ((1, 1), (1, 1)), self.dtype, "init_conv")(out)
        for g, stride in enumerate((1, 2, 2)):
            out = DMBlockGroup(n, ch[g], ch[g + 1], stride, self.activation, dtype=self.dtype,
                               name=f"layer_{g}")(out, train)
        out = ACTIVATIONS[self.activation](batch_norm(train, dtype=self.dtype, name="batchnorm")(out))
        logits = dense(self.num_classes, dtype=self.dtype, name="logits")(global_avg_pool(out))
        return logits.astype(jnp.float32)


class DMPreActBlock(nn.Module):
    """RobustBench ``_PreActBlock``: ``a = act(batchnorm_0(x))``; ``conv_2d_2(act(batchnorm_1(conv_2d_1(pad(a)))))``
    + (``shortcut(pad(x))``, a 3x3 conv of the block *input*, when the stride or width changes; else ``x``)."""

    in_planes: int
    out_planes: int
    stride: int = 1
    activation: str = "swish"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        act = ACTIVATIONS[self.activation]
        pad = ((1, 1), (1, 1)) if self.stride == 1 else ((0, 1), (0, 1))
        a = act(batch_norm(train, dtype=self.dtype, name="batchnorm__0")(x))
        shortcut = x
        if self.stride != 1 or self.in_planes != self.out_planes:
            shortcut = _conv3x3(self.out_planes, self.stride, pad, self.dtype, "shortcut")(x)
        out = _conv3x3(self.out_planes, self.stride, pad, self.dtype, "conv__2d__1")(a)
        out = act(batch_norm(train, dtype=self.dtype, name="batchnorm__1")(out))
        out = _conv3x3(self.out_planes, 1, ((1, 1), (1, 1)), self.dtype, "conv__2d__2")(out)
        return out + shortcut


class DMPreActResNet(nn.Module):
    """DeepMind PreAct ResNet-18/34 (RobustBench ``DMPreActResNet``; Rebuffi2021Fixing_R18, Gowal2021Improving_R18).

    ``conv_2d`` (3x3, 64) → ``layer_0``..``layer_3`` (64, 128, 256, 512 wide; strides 1, 2, 2, 2) → ``batchnorm`` +
    activation → global average pooling → ``logits``. Attributes, call and errors as :class:`DMWideResNet`
    (``stage_sizes`` (2, 2, 2, 2) for depth 18, (3, 4, 6, 3) for 34).  12,548,426 params at w=1, K=10
    (depth 18; its shortcuts are 3x3).
    """

    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    activation: str = "swish"
    num_classes: int = 10
    width_multiplier: float = 1.0
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {sorted(ACTIVATIONS)}")
        out = normalize(x, self.mean, self.std, self.dtype)
        in_planes = scale_width(64, self.width_multiplier)
        out = _conv3x3(in_planes, 1, ((1, 1), (1, 1)), self.dtype, "conv__2d")(out)
        for g, n in enumerate(self.stage_sizes):
            planes = scale_width(64 * 2**g, self.width_multiplier)
            for i in range(n):
                out = DMPreActBlock(in_planes, planes, (1 if g == 0 else 2) if i == 0 else 1, self.activation,
                                    dtype=self.dtype, name=f"layer__{g}_{i}")(out, train)
                in_planes = planes
        out = ACTIVATIONS[self.activation](batch_norm(train, dtype=self.dtype, name="batchnorm")(out))
        logits = dense(self.num_classes, dtype=self.dtype, name="logits")(global_avg_pool(out))
        return logits.astype(jnp.float32)


def dm_preact_resnet18_swish(*, num_classes: int = 10, width_multiplier: float = 1.0,
                             mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD,
                             dtype: Dtype = jnp.float32) -> DMPreActResNet:
    """DeepMind PreAct ResNet-18 with Swish; 12,548,426 params at w=1, K=10."""
    return DMPreActResNet((2, 2, 2, 2), "swish", num_classes, width_multiplier, tuple(mean), tuple(std), dtype)
