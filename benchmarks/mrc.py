"""Wall time of a full MRC pass (every conv/dense kernel of the model) with the `cpu` preset's budget:
512 fixed examples, 5 ascent epochs, batch 128 — and how much of it is compilation.

    python benchmarks/mrc.py --width=0.25 [--modules=N] [--no-cache]

Random θ (timing only).  Prints total seconds, seconds spent compiling (jax.monitoring), the number of
compiled programs and the per-module mean; peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.models.registry import create_model
from rwsjax.rift.mrc import MRC
from rwsjax.weights.modules import call_order, kernels

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

_COMPILE = {"s": 0.0, "n": 0}


def _listener(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILE["s"] += duration
        _COMPILE["n"] += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--modules", type=int, default=0, help="only the first N modules (0: all)")
    ap.add_argument("--no-cache", dest="cache", action="store_false", help="full forward for every step")
    ap.add_argument("--threads", type=int, default=1, help="modules in flight per device")
    a = ap.parse_args()
    jax.monitoring.register_event_duration_secs_listener(_listener)
    model = create_model(a.model, num_classes=10, width_multiplier=a.width)
    example = jnp.zeros((1, 32, 32, 3))
    variables = jax.jit(lambda k: model.init(k, example, train=False))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (a.examples, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, a.examples).astype(np.int32)
    modules = kernels(variables["params"], call_order(model, variables, example))
    if a.modules:
        modules = dict(list(modules.items())[: a.modules])
    base = dict(_COMPILE)
    mrc = MRC(model, variables, x, y, eps=0.1, lr=1.0, epochs=a.epochs, batch_size=a.batch, cache=a.cache,
              threads=a.threads)
    rows, total, others = common.once(lambda: mrc.criticality(modules))
    print(f"{a.model} width x{a.width}, {len(modules)} modules, {a.examples} examples, {a.epochs} epochs, batch "
          f"{a.batch}, activation cache {'on' if a.cache else 'off'}, {a.threads} thread(s); {common.banner()}")
    print(f"MRC pass {total:.1f} s  (compiling {_COMPILE['s'] - base['s']:.1f} s in {_COMPILE['n'] - base['n']} "
          f"programs; {total / len(modules):.2f} s/module)  peak RSS "
          f"{common.peak_rss_gib():.2f} GiB" + common.disturbed(others))
    print("MRC " + " ".join(f"{r['module']}={r['mrc']:.4f}" for r in rows[:4]) + " …")


if __name__ == "__main__":
    main()
