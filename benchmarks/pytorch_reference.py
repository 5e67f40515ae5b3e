"""The PyTorch eager reference for benchmarks/train_steps.py: the same CIFAR ResNet-18 (kuangliu layout,
normalization inside, NCHW), batch, optimizer and PGD-10 — clean train step, PGD-10 attack, PGD-10 AT step.

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # optional: only this script needs it
    python benchmarks/pytorch_reference.py --width=0.25 --batch=128 --repeats=5

Prints images/s (median, best) with the same DISTURBED check as the JAX benchmarks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, width=1.0, num_classes=10):
        super().__init__()
        w = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        layers, cin = [], w[0]
        for i, c in enumerate(w):
            for j in range(2):
                layers.append(BasicBlock(cin, c, (1 if i == 0 else 2) if j == 0 else 1))
                cin = c
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1((x - self.mean) / self.std)))
        out = self.layers(out)
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=10):
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = ResNet18(a.width)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.integers(0, 256, (a.batch, 3, 32, 32)), dtype=torch.float32) / 255
    y = torch.tensor(rng.integers(0, 10, a.batch))

    def train_step(inputs):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inputs), y)
        loss.backward()
        opt.step()
        return loss.detach()

    def attack():
        model.eval()
        return pgd(model, x, y)

    def at_step():
        model.train()  # Madry/official PGD-AT code: the attack runs in train mode
        return train_step(pgd(model, x, y))

    print(f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads, resnet18 width x{a.width}, "
          f"batch {a.batch}, NCHW; {common.banner()}")
    print(common.HEADER)
    for name, fn in (("train step (clean)", lambda: train_step(x)), ("PGD-10 attack", attack),
                     ("PGD-10 AT step", at_step)):
        m = common.measure(fn, a.repeats, block=lambda r: r)  # eager: done when it returns
        m["compile_s"] = 0.0  # eager: the first call is a warm-up, nothing is compiled
        print(common.line("torch " + name, a.batch, m), flush=True)
    print(f"peak RSS {common.peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
