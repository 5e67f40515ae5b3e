"""Name -> model factory registry for the model zoo (CIFAR and torchvision layouts)."""

from __future__ import annotations

import operator
import re

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rwsjax.models.common import CIFAR10_MEAN, CIFAR10_STD, Dtype
from rwsjax.models.dm_wide_resnet import DMWideResNet, dm_preact_resnet18_swish
from rwsjax.models.imagenet_resnet import resnet18_imagenet, resnet50_imagenet
from rwsjax.models.preact_resnet import preact_resnet18, preact_resnet18_rb
from rwsjax.models.resnet import resnet18, resnet34, resnet50
from rwsjax.models.vgg import vgg16
from rwsjax.models.wide_resnet import WideResNet, wrn34_10

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "preact_resnet18": preact_resnet18,
    "preact_resnet18_rb": preact_resnet18_rb,
    "wrn34_10": wrn34_10,
    "dm_preact_resnet18_swish": dm_preact_resnet18_swish,
    "vgg16": vgg16,
    "resnet18_imagenet": resnet18_imagenet,
    "resnet50_imagenet": resnet50_imagenet,
}

#: The named architectures, each tested: the factories above and these members of the :data:`PATTERNS` families
#: (RobustBench's WRN-28-10, WRN-34-20, DeepMind WRN-28-10 and -70-16); :func:`create_model` accepts every member.
MODELS: frozenset[str] = frozenset(_FACTORIES) | {"wrn28_10", "wrn34_20", "dm_wrn28_10_swish", "dm_wrn70_16_swish"}

#: Depth/width families by name: ``wrn<depth>_<k>`` (TRADES WideResNet, e.g. ``wrn34_15``, ``wrn70_16``) and
#: ``dm_wrn<depth>_<k>_<relu|swish>`` (DeepMind WideResNet, e.g. ``dm_wrn106_16_swish``); depth = 6n + 4.
PATTERNS: tuple[str, ...] = ("wrn<depth>_<k>", "dm_wrn<depth>_<k>_<relu|swish>")


def _family(name: str):
    m = re.fullmatch(r"wrn(\d+)_(\d+)", name)
    if m and (int(m[1]) - 4) % 6 == 0 and int(m[1]) >= 10:
        return lambda **kw: WideResNet(depth=int(m[1]), widen_factor=int(m[2]), **kw)
    m = re.fullmatch(r"dm_wrn(\d+)_(\d+)_(relu|swish)", name)
    if m and (int(m[1]) - 4) % 6 == 0 and int(m[1]) >= 10:
        return lambda **kw: DMWideResNet(depth=int(m[1]), width=int(m[2]), activation=m[3], **kw)
    return None


def is_model(name: str) -> bool:
    """Whether :func:`create_model` builds ``name`` (:data:`MODELS` or a :data:`PATTERNS` family member)."""
    return name in _FACTORIES or _family(str(name)) is not None


def valid_names() -> str:
    """The valid names for messages: the sorted :data:`MODELS` and the families."""
    return f"{sorted(MODELS)} or {' / '.join(PATTERNS)}"


def create_model(name: str, *, num_classes: int, width_multiplier: float = 1.0,
                 mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD,
                 dtype: Dtype = jnp.float32) -> nn.Module:
    """Build a model by name.

    Args:
      name: one of :data:`MODELS`: ``"resnet18"``, ``"resnet34"``,
        ``"resnet50"`` (kuangliu CIFAR ResNets; ResNet-50 with bottleneck
        blocks), ``"preact_resnet18"`` (kuangliu PreAct ResNet-18 + final
        BN), ``"preact_resnet18_rb"`` (RobustBench's PreAct ResNet-18:
        shortcut convs on the block input, no final BN), ``"wrn28_10"``,
        ``"wrn34_10"``, ``"wrn34_20"`` (TRADES WideResNets),
        ``"dm_wrn28_10_swish"``, ``"dm_wrn70_16_swish"`` (DeepMind
        WideResNets with Swish, RobustBench ``DMWideResNet``; any depth/width
        as ``wrn<depth>_<k>`` / ``dm_wrn<depth>_<k>_<relu|swish>``),
        ``"dm_preact_resnet18_swish"`` (RobustBench ``DMPreActResNet``), ``"vgg16"`` (VGG-16
        conv features without BatchNorm + global average pooling + one
        linear layer, as in Robust Weight Signatures),
        ``"resnet50_imagenet"`` (torchvision ImageNet ResNet-50 v1.5: 7x7/2
        stem + 3x3/2 max-pool, ``downsample``/``fc`` names; the RWS
        Tiny-ImageNet model), ``"resnet18_imagenet"`` (torchvision
        ResNet-18).
      num_classes: number of output logits K (>= 1).
      width_multiplier: scales every channel count,
        ``max(1, round(c * width_multiplier))``; e.g. 0.25 gives ResNet-18
        base width 16.
      mean, std: 3 per-channel normalization constants in [0, 1] pixel scale
        (default CIFAR-10); the model computes ``(x - mean) / std`` itself.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters and
        returned logits are float32.

    Returns:
      An unbound Flax Linen module. ``model.init(key, x, train=False)``
      returns ``{"params", "batch_stats"}`` (only ``{"params"}`` for
      ``"vgg16"``, which has no BatchNorm); ``model.apply(variables, x,
      train=True, mutable=["batch_stats"])`` returns ``(logits, updates)``
      (for ``"vgg16"``, ``updates`` is ``{}``, or ``{"batch_stats": {}}`` when
      ``variables`` holds an empty ``"batch_stats"`` collection);
      ``model.apply(variables, x, train=False)`` returns logits. ``x`` is a
      float ``[B, H, W, 3]`` NHWC batch in [0, 1]; logits are float32
      ``[B, num_classes]``.

    Raises:
      ValueError: unknown ``name`` (the message lists valid names),
        ``num_classes < 1``, ``width_multiplier <= 0``, or ``mean``/``std``
        not of length 3 or ``std`` not all positive.
    """
    if not is_model(name):
        raise ValueError(f"unknown model {name!r}; valid names: {valid_names()}")
    try:
        num_classes = operator.index(num_classes)  # accepts numpy integers too
    except TypeError:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}") from None
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier!r}")
    mean = tuple(float(m) for m in mean)
    std = tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 entries, got {mean} and {std}")
    if not all(s > 0 for s in std):
        raise ValueError(f"std entries must be > 0, got {std}")
    return (_FACTORIES.get(name) or _family(name))(num_classes=num_classes,
                            width_multiplier=float(width_multiplier),
                            mean=mean, std=std, dtype=dtype)
