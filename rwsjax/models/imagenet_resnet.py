"""ImageNet ResNet-18 / ResNet-50 (He et al., 2016) in the torchvision layout.

Robust Weight Signatures (Cai, Zhang & Wang, ICML 2023) trains the torchvision
ImageNet ResNet-50 on Tiny-ImageNet (their ``models/resnet.py`` is
torchvision's ``torchvision/models/resnet.py``, v1.5), behind an advertorch
``NormalizeByChannelMeanStd`` module named ``normalize``. This module is that
network:

* stem: ``conv1`` 7x7, stride 2, PyTorch ``padding=3`` (explicit symmetric
  padding), no bias -> ``bn1`` -> ReLU -> 3x3 max-pool, stride 2, PyTorch
  ``padding=1`` (the border is padded with ``-inf``, so it never wins the max;
  floor mode);
* ``layer1`` .. ``layer4``: ``[2, 2, 2, 2]`` :class:`~rwsjax.models.resnet.BasicBlock`
  (ResNet-18) or ``[3, 4, 6, 3]`` :class:`~rwsjax.models.resnet.Bottleneck`
  (ResNet-50, expansion 4, stride on the 3x3 ``conv2`` = torchvision v1.5)
  with ``64w, 128w, 256w, 512w`` planes and first-block strides 1, 2, 2, 2;
  the projection shortcut (1x1 conv + BN, when the stride or the width
  changes) is named ``downsample_0`` / ``downsample_1`` (PyTorch
  ``downsample.0`` / ``downsample.1``);
* global average pooling (``AdaptiveAvgPool2d(1)``) and the linear head ``fc``.

The spatial reduction is 32x: a 64x64 Tiny-ImageNet image ends as 2x2, a
32x32 CIFAR image as 1x1 (both work; the pooling is global).

Names map 1:1 to torchvision's ``state_dict`` names via
:func:`rwsjax.models.common.flax_path_to_torch_name`: ``conv1``, ``bn1``,
``layer1.0.conv1`` ... ``layer4.2.bn3``, ``layer2.0.downsample.0``,
``layer2.0.downsample.1``, ``fc``. The input normalization (``(x - mean) /
std`` with the ``mean``/``std`` attributes) has no parameters; the
advertorch buffers ``normalize.mean`` / ``normalize.std`` of an RWS
checkpoint are read by :func:`rwsjax.models.pytorch_io.import_variables` as
the constants to build this model with.

Parameter counts (width multiplier 1.0; running statistics are in
``batch_stats`` and not counted, as in PyTorch ``parameters()``):
ResNet-50: 25,557,032 with 1000 classes (= torchvision ``resnet50``),
23,528,522 with 10, 23,917,832 with 200 (Tiny-ImageNet); ResNet-18:
11,689,512 with 1000 classes (= torchvision ``resnet18``), 11,181,642 with
10, 11,279,112 with 200.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rwsjax.models.common import (Array, Dtype, batch_norm, conv_kernel_init,
                                  dense, global_avg_pool, normalize, scale_width)
from rwsjax.models.resnet import BasicBlock, Bottleneck

#: ImageNet per-channel mean in [0, 1] pixel scale (RGB), torchvision's.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: ImageNet per-channel standard deviation in [0, 1] pixel scale (RGB).
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def max_pool_3x3_s2_p1(x: Array) -> Array:
    """PyTorch ``MaxPool2d(kernel_size=3, stride=2, padding=1)`` on NHWC.

    The border is padded with ``-inf`` (PyTorch pads max-pooling implicitly
    with ``-inf``, never with zeros), then a 3x3 window slides with stride 2
    without further padding (floor mode): ``H -> floor((H - 1) / 2) + 1``.
    """
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class ImageNetResNet(nn.Module):
    """torchvision ImageNet ResNet (v1.5) with the input normalization inside.

    Attributes:
      stage_sizes: blocks per stage; ``(2, 2, 2, 2)`` for ResNet-18,
        ``(3, 4, 6, 3)`` for ResNet-50.
      num_classes: number of output logits.
      width_multiplier: scales every channel count
        (``max(1, round(c * width_multiplier))``; 1.0 gives 64/128/256/512
        planes and a 64-channel stem).
      mean, std: per-channel normalization constants in [0, 1] pixel scale.
      dtype: computation dtype (parameters are always float32).
      block_cls: :class:`~rwsjax.models.resnet.BasicBlock` (default) or
        :class:`~rwsjax.models.resnet.Bottleneck`; both are built with
        ``shortcut_name="downsample"``.

    Call: ``model.apply(variables, x, train=...)`` with ``x`` float
    ``[B, H, W, 3]`` in [0, 1] (H, W >= 32 recommended; 64 for Tiny-ImageNet)
    returns float32 logits ``[B, num_classes]``. With ``train=True`` pass
    ``mutable=["batch_stats"]``.

    Raises:
      ValueError: on non-4-D input, channel count != ``len(mean)``, or
        ``width_multiplier <= 0``.
      TypeError: on non-floating input.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    num_classes: int = 1000
    width_multiplier: float = 1.0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    dtype: Dtype = jnp.float32
    block_cls: Any = BasicBlock

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = normalize(x, self.mean, self.std, self.dtype)
        in_planes = scale_width(64, self.width_multiplier)
        out = nn.Conv(in_planes, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                      use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                      kernel_init=conv_kernel_init, name="conv1")(x)
        out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(out))
        out = max_pool_3x3_s2_p1(out)
        for i, n_blocks in enumerate(self.stage_sizes):
            planes = scale_width(64 * 2**i, self.width_multiplier)
            for j in range(n_blocks):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                out = self.block_cls(in_planes, planes, stride, dtype=self.dtype,
                                     shortcut_name="downsample",
                                     name=f"layer{i + 1}_{j}")(out, train)
                in_planes = self.block_cls.expansion * planes
        out = global_avg_pool(out)
        logits = dense(self.num_classes, dtype=self.dtype, name="fc")(out)
        return logits.astype(jnp.float32)


def resnet18_imagenet(*, num_classes: int = 1000, width_multiplier: float = 1.0,
                      mean: tuple[float, ...] = IMAGENET_MEAN,
                      std: tuple[float, ...] = IMAGENET_STD,
                      dtype: Dtype = jnp.float32) -> ImageNetResNet:
    """torchvision ResNet-18 (``BasicBlock``, ``[2, 2, 2, 2]``); 11,689,512
    params at w=1, K=1000."""
    return ImageNetResNet(stage_sizes=(2, 2, 2, 2), num_classes=num_classes,
                          width_multiplier=width_multiplier, mean=tuple(mean),
                          std=tuple(std), dtype=dtype, block_cls=BasicBlock)


def resnet50_imagenet(*, num_classes: int = 1000, width_multiplier: float = 1.0,
                      mean: tuple[float, ...] = IMAGENET_MEAN,
                      std: tuple[float, ...] = IMAGENET_STD,
                      dtype: Dtype = jnp.float32) -> ImageNetResNet:
    """torchvision ResNet-50 v1.5 (``Bottleneck``, ``[3, 4, 6, 3]``), the RWS
    Tiny-ImageNet model; 25,557,032 params at w=1, K=1000."""
    return ImageNetResNet(stage_sizes=(3, 4, 6, 3), num_classes=num_classes,
                          width_multiplier=width_multiplier, mean=tuple(mean),
                          std=tuple(std), dtype=dtype, block_cls=Bottleneck)
