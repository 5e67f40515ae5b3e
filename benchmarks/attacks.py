"""Throughput of the evaluation attacks: PGD-10, APGD-CE (100 iterations), APGD-T (9 targets × 100) and
AutoAttack-lite, on ResNet-18 (random weights are enough for timing).

    python benchmarks/attacks.py --width=0.25 --batch=128 --repeats=3 [--unroll]

Prints images/s (median and best of ``repeats`` after a warm-up call that also gives the compile time).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.attacks import apgd as ap
from rwsjax.attacks.pgd import robust_correct
from rwsjax.models.registry import create_model
from rwsjax.train import steps

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n_iter", type=int, default=100)
    parser.add_argument("--unroll", action="store_true", help="unroll the APGD iterations (XLA:CPU)")
    parser.add_argument("--only", default="", help="comma list of substrings of the attacks to run")
    a = parser.parse_args()
    model = create_model("resnet18", num_classes=10, width_multiplier=a.width)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (a.batch, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, a.batch), jnp.int32)
    eps = 8 / 255
    # Weights and data are arguments, not closed-over constants (XLA would constant-fold the first convs).
    fn = lambda v: steps.eval_logits_fn(model, v)  # noqa: E731
    targets = ap.top_targets(fn(variables)(x), y, 1)[0]
    benches = {
        "PGD-10 (unrolled)": jax.jit(lambda v, x, y, t, k: robust_correct(fn(v), x, y, k, eps=eps, step_size=2 / 255,
                                                                          steps=10, restarts=1)[1]),
        f"APGD-CE ({a.n_iter} it)": jax.jit(lambda v, x, y, t, k: ap.apgd(fn(v), x, y, k, eps=eps, n_iter=a.n_iter,
                                                                          unroll=a.unroll)[1]),
        f"APGD-T (1 target, {a.n_iter} it)": jax.jit(
            lambda v, x, y, t, k: ap.apgd(fn(v), x, y, k, eps=eps, n_iter=a.n_iter, loss="dlr_t", targets=t,
                                          unroll=a.unroll)[1]),
        "AutoAttack-lite (CE + 9 targets)": jax.jit(
            lambda v, x, y, t, k: ap.autoattack_lite(fn(v), x, y, k, eps=eps, n_iter=a.n_iter,
                                                     unroll=a.unroll)["combined"]),
    }
    print(f"resnet18 width x{a.width}, batch {a.batch}, APGD {'unrolled' if a.unroll else 'rolled (lax.scan)'}; "
          f"{common.banner()}")
    print(common.HEADER)
    key = jax.random.PRNGKey(1)
    only = [o.strip() for o in a.only.split(",") if o.strip()]
    for name, f in benches.items():
        if only and not any(o in name for o in only):
            continue
        keys = iter(range(10**6))
        m = common.measure(lambda: f(variables, x, y, targets, jax.random.fold_in(key, next(keys))), a.repeats)
        print(common.line(name, a.batch, m, common.flops(f, variables, x, y, targets, key)), flush=True)


if __name__ == "__main__":
    main()
