"""PyTorch twins of the rwsjax model zoo, in the layouts of their source repositories.

Used by tests/test_pytorch_io.py (checkpoint import/export, logits and PGD
equality) and benchmarks/pytorch_reference.py (the PyTorch eager baseline).
Imports torch at module import: import this file only where torch is wanted.

* :class:`ResNet` — kuangliu/pytorch-cifar ``models/resnet.py`` (``BasicBlock`` /
  ``Bottleneck`` with ``shortcut`` ``nn.Sequential``, ``linear`` head);
* :class:`PreActResNet` — kuangliu ``models/preact_resnet.py`` + the final ``bn``
  of "Bag of Tricks for AT" / "Overfitting in adversarially robust deep learning";
* :class:`WideResNet` — TRADES ``models/wideresnet.py`` (with its unused
  ``sub_block1``; ``sub_block1=False`` leaves it out);
* :class:`VGG` — torchvision ``features`` (config "D", no BN) + global average
  pooling + one ``nn.Linear`` ``classifier`` (Robust Weight Signatures);
* :class:`TVResNet` — torchvision ``models/resnet.py`` (v1.5: stride on the 3x3
  conv; ``downsample``, ``fc``), as in Robust Weight Signatures' Tiny-ImageNet models.

Every twin takes [0, 1] NCHW input. ``norm`` selects how it normalizes:
``"normalize"`` — an advertorch ``NormalizeByChannelMeanStd`` submodule
``normalize`` (buffers ``normalize.mean`` / ``normalize.std``, shape [3]);
``"mu_sigma"`` — RobustBench-style buffers ``mu`` / ``sigma`` ([1, 3, 1, 1]);
``None`` — no normalization inside (the caller normalizes, or nobody does).
Channel counts use the rwsjax rule ``max(1, round(c * width))``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def scale(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class NormalizeByChannelMeanStd(nn.Module):
    """advertorch's normalization module: buffers ``mean`` and ``std`` of shape [3]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]


class _Normalized(nn.Module):
    """Base class: the input normalization chosen by ``norm`` (see the module docstring)."""

    def _init_norm(self, norm, mean, std):
        self._norm_kind = norm
        if norm == "normalize":
            self.normalize = NormalizeByChannelMeanStd(mean, std)
        elif norm == "mu_sigma":
            self.register_buffer("mu", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        elif norm is not None:
            raise ValueError(f"unknown norm {norm!r}")

    def _norm(self, x):
        if self._norm_kind == "normalize":
            return self.normalize(x)
        if self._norm_kind == "mu_sigma":
            return (x - self.mu) / self.sigma
        return x


# ----------------------------------------------------------------- kuangliu ResNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != 4 * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, 4 * planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(_Normalized):
    def __init__(self, block, num_blocks, width=1.0, num_classes=10, norm=None, mean=None, std=None):
        super().__init__()
        self._init_norm(norm, mean, std)
        self.in_planes = scale(64, width)
        self.conv1 = nn.Conv2d(3, self.in_planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.in_planes)
        for i, n in enumerate(num_blocks):
            setattr(self, f"layer{i + 1}", self._make_layer(block, scale(64 * 2**i, width), n, 1 if i == 0 else 2))
        self.linear = nn.Linear(self.in_planes, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(self._norm(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet18(**kw):
    return ResNet(BasicBlock, [2, 2, 2, 2], **kw)


def resnet34(**kw):
    return ResNet(BasicBlock, [3, 4, 6, 3], **kw)


def resnet50(**kw):
    return ResNet(Bottleneck, [3, 4, 6, 3], **kw)


# ----------------------------------------------------------------- PreAct ResNet (kuangliu + final bn)


class PreActBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(_Normalized):
    def __init__(self, num_blocks=(2, 2, 2, 2), width=1.0, num_classes=10, norm=None, mean=None, std=None):
        super().__init__()
        self._init_norm(norm, mean, std)
        self.in_planes = scale(64, width)
        self.conv1 = nn.Conv2d(3, self.in_planes, 3, 1, 1, bias=False)
        for i, n in enumerate(num_blocks):
            planes, layers = scale(64 * 2**i, width), []
            for s in [1 if i == 0 else 2] + [1] * (n - 1):
                layers.append(PreActBlock(self.in_planes, planes, s))
                self.in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.bn = nn.BatchNorm2d(self.in_planes)
        self.linear = nn.Linear(self.in_planes, num_classes)

    def forward(self, x):
        out = self.conv1(self._norm(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def preact_resnet18(**kw):
    return PreActResNet((2, 2, 2, 2), **kw)


# ----------------------------------------------------------------- TRADES WideResNet


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (None if self.equalInOut else
                             nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False))

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBasicBlock(in_planes if i == 0 else out_planes, out_planes,
                                                    stride if i == 0 else 1) for i in range(nb_layers)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(_Normalized):
    def __init__(self, depth=34, widen_factor=10, width=1.0, num_classes=10, sub_block1=True,
                 norm=None, mean=None, std=None):
        super().__init__()
        self._init_norm(norm, mean, std)
        ch = [scale(c, width) for c in (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        if sub_block1:  # TRADES builds it and never calls it
            self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(self._norm(x)))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ----------------------------------------------------------------- VGG-16 (RWS)

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(_Normalized):
    def __init__(self, cfg=VGG16_CFG, width=1.0, num_classes=10, norm=None, mean=None, std=None):
        super().__init__()
        self._init_norm(norm, mean, std)
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, scale(v, width), 3, padding=1), nn.ReLU(inplace=True)]
                c = scale(v, width)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        out = self.features(self._norm(x))
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))


def vgg16(**kw):
    return VGG(VGG16_CFG, **kw)


# ----------------------------------------------------------------- torchvision ResNet (v1.5)


class TVBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TVBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class TVResNet(_Normalized):
    def __init__(self, block, layers, width=1.0, num_classes=1000, norm=None, mean=None, std=None):
        super().__init__()
        self._init_norm(norm, mean, std)
        self.inplanes = scale(64, width)
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, n in enumerate(layers):
            setattr(self, f"layer{i + 1}", self._make_layer(block, scale(64 * 2**i, width), n, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(self._norm(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tv_resnet18(**kw):
    return TVResNet(TVBasicBlock, [2, 2, 2, 2], **kw)


def tv_resnet50(**kw):
    return TVResNet(TVBottleneck, [3, 4, 6, 3], **kw)


# ----------------------------------------------------------------- helpers


@torch.no_grad()
def randomize(model: nn.Module, xs, seed: int = 0, preprocess=None) -> nn.Module:
    """Random weights *and* BatchNorm statistics that matter, with O(1) activations.

    Convs get He-normal (fan-in) weights, linears N(0, 1/fan_in), biases and BN
    affines random values; the running statistics are first measured on the
    batches ``xs`` (a tensor or a list of tensors, e.g. of two image sizes;
    train-mode passes with cumulative averaging) and then perturbed (mean
    shifted by 0.2 std, variance scaled by U(0.5, 2)), so eval-mode BN differs
    from batch statistics. The last ``nn.Linear`` (the head) gets random
    weights on its input standardized over ``xs``. ``preprocess`` (e.g. an
    outside normalization) is applied to each batch before ``model``. Returns ``model`` in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5 if isinstance(m, nn.Conv2d) else fan_in ** -0.5,
                             generator=g)
            if m.bias is not None:
                m.bias.normal_(0.0, 0.1, generator=g)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.normal_(0.0, 0.2, generator=g)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass = the batch statistics
    xs = [xs] if isinstance(xs, torch.Tensor) else list(xs)
    if preprocess is not None:
        xs = [preprocess(x) for x in xs]
    model.train()
    for x in xs:
        model(x)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
            sd = m.running_var.sqrt()
            m.running_mean.add_(0.2 * sd * torch.randn(sd.shape, generator=g))
            m.running_var.mul_(torch.empty(sd.shape).uniform_(0.5, 2.0, generator=g))
            m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (), generator=g)))
    # Random deep nets map all images to nearly the same features; standardize the head's input over `x`
    # (folded into the head) so logits ~ N(0, 1) vary with the image and many classes get predicted.
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    feats = []
    hook = head.register_forward_hook(lambda mod, inp, out: feats.append(inp[0]))
    for x in xs:
        model(x)
    hook.remove()
    f = torch.cat(feats)
    mu, sd = f.mean(0), f.std(0)
    sd = sd + 0.1 * sd.mean() + 1e-6  # dead features (always 0 on x) must not get huge weights
    w = torch.randn(head.weight.shape, generator=g) / head.in_features ** 0.5 / sd
    head.weight.copy_(w)
    head.bias.copy_(-(w @ mu) + 0.1 * torch.randn(head.bias.shape, generator=g))
    return model


def pgd(logits_fn, x, y, *, eps, step_size, steps, random_start=False, generator=None):
    """Plain ℓ∞ PGD on [0, 1] NCHW images maximizing the summed cross-entropy.

    Same arithmetic as :func:`rwsjax.attacks.pgd.pgd` (``z += step·sign(∇)``,
    then ``delta = clip(z - x, ±eps)``, ``z = clip(x + delta, 0, 1)``);
    ``random_start`` draws the start uniformly from the ε-ball.
    """
    x = x.detach()
    if random_start:
        z = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
    else:
        z = x.clone()
    for _ in range(steps):
        z.requires_grad_(True)
        loss = F.cross_entropy(logits_fn(z), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, z)
        z = z.detach() + step_size * grad.sign()
        z = (x + (z - x).clamp(-eps, eps)).clamp(0, 1)
    return z.detach()
