"""Weak scaling of the PGD-10 AT step over 1, 2 and 4 forced CPU devices (fixed per-device batch).

    python benchmarks/scaling.py --per_device_batch=32 --width=0.25 --repeats=5

Each device count runs in its own process (``--xla_force_host_platform_device_count``),
with the global batch = per-device batch × devices.  Prints per step: median and
best wall time, images/s, compile time, and per-device memory of the compiled
step from XLA's memory analysis (arguments + outputs + temporaries − aliased,
i.e. what one device must hold).  On this 2-core machine the forced "devices"
share the same two cores, so the time column shows the overhead of
partitioning, not a speed-up; on a GPU/TPU slice each device brings its own compute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(a):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rwsjax.models.registry import create_model
    from rwsjax.train import sharding, steps
    from rwsjax.train.state import TrainState, sgd

    n = jax.device_count()
    batch = a.per_device_batch * n
    mesh = sharding.make_mesh()
    model = create_model("resnet18", num_classes=10, width_multiplier=a.width)
    rng = np.random.default_rng(0)
    x, y = sharding.shard_batch((rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
                                 rng.integers(0, 10, (batch,), dtype=np.int32)), mesh)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.PRNGKey(0))
    tx = sgd(0.1, momentum=0.9, weight_decay=5e-4, steps_per_epoch=100)
    attack = dict(eps=8 / 255, step_size=2 / 255, steps=10, norm="linf", random_init=True, unroll=True)
    step = steps.make_train_step(model, tx, mesh, regime="pgd_at", attack=attack, attack_bn="batch")
    state = sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)
    key = jax.random.PRNGKey(1)
    t = time.perf_counter()
    compiled = step.lower(state, x, y, key).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    per_device = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                  - mem.alias_size_in_bytes)
    state, m = step(state, x, y, key)
    jax.block_until_ready(m)
    times = []
    for i in range(a.repeats):
        t = time.perf_counter()
        state, m = step(state, x, y, jax.random.fold_in(key, i))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    print(json.dumps({"devices": n, "global_batch": batch, "median_s": statistics.median(times),
                      "best_s": min(times), "compile_s": compile_s, "per_device_mb": per_device / 2**20,
                      "temp_mb": mem.temp_size_in_bytes / 2**20, "load": os.getloadavg()[0]}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per_device_batch", type=int, default=32)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devices", default="1,2,4")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    print(f"PGD-10 AT step, ResNet-18 width x{a.width}, {a.per_device_batch} images per device (weak scaling)")
    print(f"{'devices':>7s} {'batch':>6s} {'step s med':>10s} {'step s min':>10s} {'img/s':>8s} "
          f"{'compile s':>9s} {'MiB/device':>10s} {'temp MiB':>8s}")
    for n in (int(v) for v in a.devices.split(",")):
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        out = subprocess.run([sys.executable, __file__, "--worker", f"--per_device_batch={a.per_device_batch}",
                              f"--width={a.width}", f"--repeats={a.repeats}"], env=env, capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        flag = "  (load %.1f: disturbed)" % r["load"] if r["load"] > os.cpu_count() + 0.5 else ""
        print(f"{r['devices']:7d} {r['global_batch']:6d} {r['median_s']:10.3f} {r['best_s']:10.3f} "
              f"{r['global_batch'] / r['median_s']:8.1f} {r['compile_s']:9.1f} {r['per_device_mb']:10.1f} "
              f"{r['temp_mb']:8.1f}{flag}")


if __name__ == "__main__":
    main()
