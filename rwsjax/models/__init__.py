"""CIFAR model zoo (Flax Linen, NHWC, [0, 1] inputs normalized inside).

Layouts match the PyTorch reference repositories so checkpoints can be
imported 1:1 (see :func:`flax_path_to_torch_name`).
"""

from rwsjax.models.common import (CIFAR10_MEAN, CIFAR10_STD,
                                  flax_path_to_torch_name, scale_width)
from rwsjax.models.imagenet_resnet import (IMAGENET_MEAN, IMAGENET_STD,
                                           resnet18_imagenet,
                                           resnet50_imagenet)
from rwsjax.models.preact_resnet import PreActBlock, PreActResNet, preact_resnet18
from rwsjax.models.registry import MODELS, create_model
from rwsjax.models.resnet import (BasicBlock, Bottleneck, ResNet, resnet18,
                                  resnet34, resnet50)
from rwsjax.models.vgg import VGG, VGG16_CONFIG, vgg16
from rwsjax.models.wide_resnet import (NetworkBlock, WideBasicBlock, WideResNet,
                                       wrn34_10)

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "MODELS", "create_model",
    "flax_path_to_torch_name", "scale_width",
    "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50",
    "PreActBlock", "PreActResNet", "preact_resnet18",
    "NetworkBlock", "WideBasicBlock", "WideResNet", "wrn34_10",
    "VGG", "VGG16_CONFIG", "vgg16",
    "IMAGENET_MEAN", "IMAGENET_STD", "resnet18_imagenet",
    "resnet50_imagenet",
]
