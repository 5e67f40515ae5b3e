"""Throughput of the hot training paths: clean train step, PGD-10 attack, PGD-10 AT step, and the
step of every adversarial-training regime (FGSM-RS, TRADES, MART, SCORE, AT-AWP, TRADES-AWP; PGD-10 inner loop).

    python benchmarks/train_steps.py --width=0.25 --batch=128 --repeats=5

Prints images/s (median and best of ``repeats`` timed calls after a warm-up
call that also measures compile time), achieved GFLOP/s against the machine's
peak, a DISTURBED note when other processes used the CPU meanwhile, and peak
resident memory, for the unrolled and the rolled (``lax.fori_loop``) PGD loop.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax import distributed
from rwsjax.attacks.pgd import pgd
from rwsjax.models import batch_norm
from rwsjax.models import common as model_common
from rwsjax.models.registry import create_model
from rwsjax.train import regimes, sharding, steps
from rwsjax.train.state import TrainState, sgd

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

ATTACK = dict(eps=8 / 255, step_size=2 / 255, steps=10, norm="linf", random_init=True)


def centered_bwd(epsilon, res, cotangents):
    """A BatchNorm backward pass that writes x − μ out as an array (``--batch_norm=centered``), for comparison."""
    x, scale, mean, inv = res
    dy, dmean, dvar = cotangents
    axes, n = tuple(range(x.ndim - 1)), x.size // x.shape[-1]
    xc = x - mean
    sum_dy, sum_dy_xc = jnp.sum(dy, axes), jnp.sum(dy * xc, axes)
    k = scale * inv
    dx = k * (dy - sum_dy / n - xc * (inv * inv) * (sum_dy_xc / n)) + dmean / n + xc * (2.0 * dvar / n)
    return dx, sum_dy_xc * inv, sum_dy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=float, default=0.25, help="width multiplier (0.25 = width 16)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma list of benchmarks to run")
    ap.add_argument("--serve", action="store_true",
                    help="serve the first selected benchmark one step per stdin line (common.serve)")
    ap.add_argument("--augment", type=int, default=1,
                    help="1: random crop + flip inside the step, as the training loop runs it; 0: none (as "
                         "pytorch_reference.py, whose loader would augment in worker processes)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="computation dtype (parameters and optimizer stay float32)")
    ap.add_argument("--batch_norm", default="rwsjax", choices=("rwsjax", "centered", "flax"),
                    help="rwsjax: BatchNorm with the hand-written backward pass (default); centered: the "
                         "same with x - mean written out as its own array; flax: flax.linen.BatchNorm, autodiff "
                         "backward")
    ap.add_argument("--cpu_devices", type=int, default=1,
                    help="split the CPU into this many JAX devices, batch sharded over them (rwsjax.main "
                         "--cpu_devices; 0 = one per core)")
    a = ap.parse_args()
    distributed.set_cpu_devices(a.cpu_devices)
    model_common.BATCH_NORM_IMPL = "flax" if a.batch_norm == "flax" else "rwsjax"
    if a.batch_norm == "centered":
        batch_norm.batch_norm_train.defvjp(batch_norm._forward, centered_bwd)
    mesh = sharding.make_mesh()
    model = create_model(a.model, num_classes=10, width_multiplier=a.width, dtype=jnp.dtype(a.dtype))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (a.batch,), dtype=np.int32)
    x, y = sharding.shard_batch((images, labels), mesh)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.PRNGKey(0))
    tx = sgd(0.1, momentum=0.9, weight_decay=5e-4, steps_per_epoch=100)
    key = jax.random.PRNGKey(1)
    print(f"{a.model} width x{a.width}, batch {a.batch}, compute {a.dtype}, augment {bool(a.augment)}, "
          f"{a.batch_norm} BatchNorm, {len(mesh.devices.ravel())} device(s); "
          f"{common.banner()}")
    print(common.HEADER)
    benches = {}

    def train_bench(regime, unroll, **kw):
        step = steps.make_train_step(model, tx, mesh, regime=regime, attack={**ATTACK, "unroll": unroll},
                                     augment=bool(a.augment), **kw)
        box = [sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)]

        def run():
            box[0], m = step(box[0], x, y, key)
            return m
        return run, lambda: common.flops(step, box[0], x, y, key)

    def attack_bench(unroll):
        fn = jax.jit(lambda v, xx, yy, k: pgd(steps.eval_logits_fn(model, v), xx.astype(jnp.float32) / 255, yy, k,
                                              unroll=unroll, **ATTACK))
        v = sharding.replicate(variables, mesh)
        return (lambda: fn(v, x, y, key)), lambda: common.flops(fn, v, x, y, key)

    benches["train step (clean)"] = lambda: train_bench("standard", True)
    benches["PGD-10 attack (unrolled)"] = lambda: attack_bench(True)
    benches["PGD-10 attack (fori_loop)"] = lambda: attack_bench(False)
    benches["PGD-10 AT step (unrolled)"] = lambda: train_bench("pgd_at", True)
    benches["PGD-10 AT step (fori_loop)"] = lambda: train_bench("pgd_at", False)
    benches["FGSM-RS AT step"] = lambda: train_bench("fgsm_rs", True)
    for r in regimes.REGIMES.values():  # the pair objectives
        if r.objective is not None:
            benches[f"{r.label} step (unrolled)"] = lambda r=r: train_bench(r.name, True, beta=r.default_beta)
    benches["AT-AWP step (unrolled)"] = lambda: train_bench("pgd_at", True, awp_gamma=1e-2)
    benches["TRADES-AWP step (unrolled)"] = lambda: train_bench("trades", True, beta=6.0, awp_gamma=5e-3)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    for name, make in benches.items():
        if only and not any(o in name for o in only):
            continue
        run, count = make()
        if a.serve:
            return common.serve(run)
        m = common.measure(run, a.repeats)
        print(common.line(name, a.batch, m, count()), flush=True)
    print(f"peak RSS {common.peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
