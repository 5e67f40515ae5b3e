"""The PyTorch eager reference for benchmarks/train_steps.py: the same CIFAR ResNet-18 (kuangliu layout,
normalization inside, NCHW), batch, optimizer and PGD-10 — clean train step, PGD-10 attack, PGD-10 AT step.

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # optional: only this script needs it
    python benchmarks/pytorch_reference.py --width=0.25 --batch=128 --repeats=5

Prints images/s (median, best) with the same DISTURBED check as the JAX benchmarks.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
import common  # noqa: E402
import torch_models  # noqa: E402  (the kuangliu ResNet-18 twin also used by tests/test_pytorch_io.py)

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=10):
    """PGD-10 with a uniform random start (tests/torch_models.py, the PyTorch twin of rwsjax.attacks.pgd)."""
    return torch_models.pgd(model, x, y, eps=eps, step_size=step, steps=steps, random_start=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma list of benchmarks to run")
    ap.add_argument("--serve", action="store_true",
                    help="serve the first selected benchmark one step per stdin line (common.serve)")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = torch_models.resnet18(width=a.width, num_classes=10, norm="normalize", mean=MEAN, std=STD)
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
        if a.only and not any(o.strip() in name for o in a.only.split(",")):
            continue
        if a.serve:
            return common.serve(fn, block=lambda r: r)
        m = common.measure(fn, a.repeats, block=lambda r: r)  # eager: done when it returns
        m["compile_s"] = 0.0  # eager: the first call is a warm-up, nothing is compiled
        print(common.line("torch " + name, a.batch, m), flush=True)
    print(f"peak RSS {common.peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
