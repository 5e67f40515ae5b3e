"""WideResNet-34-10 (Zagoruyko & Komodakis, 2016) in the TRADES / RiFT layout.

Follows ``models/wideresnet.py`` of https://github.com/yaodongyu/TRADES (the
file RiFT reuses): ``conv1`` (3x3, 16 ch), ``block1``/``block2``/``block3``
(each a ``NetworkBlock`` whose ``layer`` holds ``n = (depth - 4) / 6``
pre-activation ``BasicBlock``s; widths ``16k, 32k, 64k``, first-block strides
1, 2, 2), final ``bn1`` + ReLU, global average pooling, ``fc``. With
``widen_factor=10`` the widths are 16, 160, 320, 640. Dropout is not
implemented (``dropRate=0`` as in TRADES/RiFT). TRADES also defines an
unused ``sub_block1``; it is never called in ``forward`` and is not built
here (drop its keys when importing a TRADES checkpoint).

Block: ``a = relu(bn1(x))``; ``out = conv2(relu(bn2(conv1(a))))``; result
``out + (convShortcut(a) if has_shortcut else x)``, where ``convShortcut`` is
a 1x1 conv (stride ``stride``, no BN). TRADES creates it when
``in_planes != out_planes``; here also when ``stride != 1`` (never the case
for the standard widths, but it keeps tiny width multipliers well-defined).

Names map to PyTorch via :func:`rwsjax.models.common.flax_path_to_torch_name`:
``block1.layer.0.bn1``, ``block2.layer.0.convShortcut``, ``bn1``, ``fc``.

Parameter count (width multiplier 1.0, 10 classes): 46,160,474.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from rwsjax.models.common import (CIFAR10_MEAN, CIFAR10_STD, Array, Dtype,
                                  batch_norm, conv1x1, conv3x3, dense,
                                  global_avg_pool, normalize, scale_width)


class WideBasicBlock(nn.Module):
    """TRADES ``BasicBlock``: bn1-relu-conv1-bn2-relu-conv2 + shortcut.

    Attributes:
      in_planes: input channels.
      out_planes: output channels.
      stride: stride of ``conv1`` and ``convShortcut``.
      dtype: computation dtype.
    """

    in_planes: int
    out_planes: int
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        has_shortcut = self.in_planes != self.out_planes or self.stride != 1
        a = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(x))
        out = conv3x3(self.out_planes, self.stride, dtype=self.dtype, name="conv1")(a)
        out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn2")(out))
        out = conv3x3(self.out_planes, 1, dtype=self.dtype, name="conv2")(out)
        if has_shortcut:
            shortcut = conv1x1(self.out_planes, self.stride, dtype=self.dtype,
                               name="convShortcut")(a)
        else:
            shortcut = x
        return out + shortcut


class NetworkBlock(nn.Module):
    """A stage of ``nb_layers`` :class:`WideBasicBlock`s named ``layer_{i}``.

    Only the first block changes width and uses ``stride``.
    """

    nb_layers: int
    in_planes: int
    out_planes: int
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        for i in range(self.nb_layers):
            x = WideBasicBlock(self.in_planes if i == 0 else self.out_planes,
                               self.out_planes, self.stride if i == 0 else 1,
                               dtype=self.dtype, name=f"layer_{i}")(x, train)
        return x


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen_factor`` (TRADES / RiFT layout).

    Attributes:
      depth: total depth; ``(depth - 4)`` must be divisible by 6.
      widen_factor: width factor ``k`` (10 for WRN-34-10).
      num_classes: number of output logits.
      width_multiplier: additionally scales every channel count
        (``max(1, round(c * width_multiplier))``, applied to
        16, 16k, 32k, 64k).
      mean, std: per-channel normalization constants in [0, 1] pixel scale.
      dtype: computation dtype (parameters are always float32).

    Call: ``x`` float ``[B, H, W, 3]`` in [0, 1] -> float32 logits
    ``[B, num_classes]``. With ``train=True`` pass ``mutable=["batch_stats"]``.

    Raises:
      ValueError: if ``(depth - 4) % 6 != 0``, on non-4-D input, channel
        count != ``len(mean)``, or ``width_multiplier <= 0``.
      TypeError: on non-floating input.
    """

    depth: int = 34
    widen_factor: int = 10
    num_classes: int = 10
    width_multiplier: float = 1.0
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if self.depth < 10 or (self.depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {self.depth}")
        n = (self.depth - 4) // 6
        k = self.widen_factor
        w = self.width_multiplier
        ch = [scale_width(c, w) for c in (16, 16 * k, 32 * k, 64 * k)]
        x = normalize(x, self.mean, self.std, self.dtype)
        out = conv3x3(ch[0], 1, dtype=self.dtype, name="conv1")(x)
        for i, stride in enumerate((1, 2, 2)):
            out = NetworkBlock(n, ch[i], ch[i + 1], stride, dtype=self.dtype,
                               name=f"block{i + 1}")(out, train)
        out = nn.relu(batch_norm(train, dtype=self.dtype, name="bn1")(out))
        out = global_avg_pool(out)
        logits = dense(self.num_classes, dtype=self.dtype, name="fc")(out)
        return logits.astype(jnp.float32)


def wrn34_10(*, num_classes: int = 10, width_multiplier: float = 1.0,
             mean: tuple[float, ...] = CIFAR10_MEAN,
             std: tuple[float, ...] = CIFAR10_STD,
             dtype: Dtype = jnp.float32) -> WideResNet:
    """WideResNet-34-10; 46,160,474 params at w=1, K=10."""
    return WideResNet(depth=34, widen_factor=10, num_classes=num_classes,
                      width_multiplier=width_multiplier, mean=tuple(mean),
                      std=tuple(std), dtype=dtype)
