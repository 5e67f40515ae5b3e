"""Weight-space operations: the RiFT interpolation sweep (11 α, each evaluated clean + PGD-10) and RWS
signature extraction (projection, all conv layers), 8-bit quantization, patching and removal.

    python benchmarks/weights.py --width=0.25 --examples=512 --repeats=3

Random weights (timing only).  Prints wall time (median and best of ``repeats``), images/s for the sweep,
a DISTURBED note when other processes used the CPU meanwhile, and peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402  (first: it silences progress bars)

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.data.sources import Split
from rwsjax.models.registry import create_model
from rwsjax.rws import signatures as sig
from rwsjax.rws.patching import Patched
from rwsjax.train import sharding, steps
from rwsjax.train.evaluate import evaluate
from rwsjax.weights.modules import call_order
from rwsjax.weights.patch import interpolate

ATTACK = dict(eps=8 / 255, step_size=2 / 255, steps=10, norm="linf", random_init=True, unroll=True)


def _repeat(fn, repeats):
    m = common.measure(fn, repeats)  # a warm-up call (compiles), then the timed repeats
    return m["times"], m["others_cpu"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--examples", type=int, default=512, help="validation images per α")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    mesh = sharding.make_mesh()
    model = create_model("resnet18", num_classes=10, width_multiplier=a.width)
    example = jnp.zeros((1, 32, 32, 3))
    init = jax.jit(lambda k: model.init(k, example, train=False))
    at, ft, pre = (jax.device_get(init(jax.random.PRNGKey(i))) for i in range(3))
    rng = np.random.default_rng(0)
    split = Split(images=rng.integers(0, 256, (a.examples, 32, 32, 3), dtype=np.uint8),
                  labels=rng.integers(0, 10, a.examples).astype(np.int32))
    step = steps.make_eval_step(model, mesh, attack=ATTACK, restarts=1)
    a.batch = min(a.batch, a.examples)
    alphas = [round(0.1 * i, 1) for i in range(11)]
    print(f"resnet18 width x{a.width}; {common.banner()}")

    def sweep():
        return [evaluate(step, interpolate(at, ft, al), split, batch_size=a.batch, mesh=mesh, desc="sweep")
                for al in alphas]

    times, others = _repeat(sweep, a.repeats)
    n = a.examples * len(alphas)
    print(f"α sweep: {len(alphas)} α × {a.examples} images, clean + PGD-10: {statistics.median(times):.2f} s median, "
          f"{min(times):.2f} s best ({n / statistics.median(times):.1f} img/s)" + common.disturbed(others))

    modules = sig.conv_modules(at["params"], call_order(model, at, example))
    robust = ft

    def extract():
        return sig.extract(robust["params"], pre["params"], at["params"], modules=modules)

    tensors = extract()
    size = sum(t.size for t in tensors.values())

    def quantize():
        return sig.make_signature(tensors, architecture="resnet18", width_multiplier=a.width, num_classes=10, bits=8)

    signature = quantize()

    def patch_remove():
        patched = Patched(at, [(signature, 1.0)])
        return patched.remove(0).variables

    for name, fn in (("extract (project, all convs)", extract), ("quantize to 8 bits", quantize),
                     ("patch + remove", patch_remove)):
        times, others = _repeat(fn, 20 * a.repeats)
        print(f"RWS {name:30s} {len(modules)} layers, {size:,} weights: {1e3 * statistics.median(times):8.1f} ms "
              f"median, {1e3 * min(times):8.1f} ms best" + common.disturbed(others))
    print(f"peak RSS {common.peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
