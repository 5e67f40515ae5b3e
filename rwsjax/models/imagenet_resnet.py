"""ImageNet ResNet-18 / ResNet-50 (He et al., 2016) in the torchvision layout.

Robust Weight Signatures (Cai, Zhang & Wang, ICML 2023) trains the torchvision
ImageNet ResNet-50 on Tiny-ImageNet (their ``models/resnet.py`` is
torchvision's ``torchvision/models/resnet.py``, v1.5), behind an advertorch
``NormalizeByChannelMeanStd`` module named ``normalize``. This module is that
network, built by :class:`rwsjax.models.resnet.ResNet` with ``layout="torchvision"``:

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

import jax.numpy as jnp

from rwsjax.models.common import Dtype
from rwsjax.models.resnet import BasicBlock, Bottleneck, ResNet

#: ImageNet per-channel mean in [0, 1] pixel scale (RGB), torchvision's.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: ImageNet per-channel standard deviation in [0, 1] pixel scale (RGB).
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def resnet18_imagenet(*, num_classes: int = 1000, width_multiplier: float = 1.0,
                      mean: tuple[float, ...] = IMAGENET_MEAN,
                      std: tuple[float, ...] = IMAGENET_STD,
                      dtype: Dtype = jnp.float32) -> ResNet:
    """torchvision ResNet-18 (``BasicBlock``, ``[2, 2, 2, 2]``); 11,689,512
    params at w=1, K=1000."""
    return ResNet(stage_sizes=(2, 2, 2, 2), num_classes=num_classes, width_multiplier=width_multiplier,
                  mean=tuple(mean), std=tuple(std), dtype=dtype, block_cls=BasicBlock, layout="torchvision")


def resnet50_imagenet(*, num_classes: int = 1000, width_multiplier: float = 1.0,
                      mean: tuple[float, ...] = IMAGENET_MEAN,
                      std: tuple[float, ...] = IMAGENET_STD,
                      dtype: Dtype = jnp.float32) -> ResNet:
    """torchvision ResNet-50 v1.5 (``Bottleneck``, ``[3, 4, 6, 3]``), the RWS
    Tiny-ImageNet model; 25,557,032 params at w=1, K=1000."""
    return ResNet(stage_sizes=(3, 4, 6, 3), num_classes=num_classes, width_multiplier=width_multiplier,
                  mean=tuple(mean), std=tuple(std), dtype=dtype, block_cls=Bottleneck, layout="torchvision")
