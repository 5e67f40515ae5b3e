"""The host side of the training and evaluation loops: how long the device waits between steps.

    python benchmarks/loop.py --width=0.25 --batch=128 --steps=16 --repeats=3

Rows:
  * host work per step: slicing a batch out of the split, copying it to the device and
    queuing the step — timed around a step that does nothing.  A loop that reads every step's result
    before it builds the next batch leaves the device idle this long per step.
  * ``fit`` (clean train step) and ``evaluate`` (clean eval step), whole calls on a synthetic split of
    ``steps`` batches: before (``in_flight=0``, every result read at once) and after (``fit``: one step
    queued ahead, ``evaluate``: two), alternating, median img/s of ``repeats`` calls each (one epoch,
    including ``fit``'s end-of-epoch checkpoint).

On a CPU the device is the host's own cores, so queuing ahead can only hide the host work where a step's
kernels leave a core free; on a GPU a step of a few milliseconds (H100: ~5 ms for the clean step at width
64, batch 128) is comparable to the host work, which the queued steps then overlap.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # before rwsjax imports tqdm

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rwsjax.data.batching import train_batches  # noqa: E402
from rwsjax.data.sources import Split  # noqa: E402
from rwsjax.models.registry import create_model  # noqa: E402
from rwsjax.train import sharding, steps  # noqa: E402
from rwsjax.train.evaluate import evaluate  # noqa: E402
from rwsjax.train.loop import fit  # noqa: E402
from rwsjax.train.state import TrainState, sgd  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def host_ms_per_step(split: Split, batch: int, mesh, n: int) -> float:
    """Median ms the host spends per step of ``fit``'s loop around a step that does no work."""
    noop = jax.jit(lambda s, x, y, k: (s, {"loss": jnp.float32(0)}), donate_argnums=(0,))
    state = sharding.replicate(np.zeros(()), mesh)
    key = sharding.replicate(np.asarray(jax.random.PRNGKey(0)), mesh)  # fit's base key, the same every step
    times = []
    for images, labels in itertools.islice(train_batches(split, batch, seed=0, epoch=0), n):
        t = time.perf_counter()
        state, m = noop(state, *sharding.shard_batch((images, labels), mesh), key)
        times.append(time.perf_counter() - t)
        jax.block_until_ready(m)
    return 1e3 * statistics.median(times[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=float, default=0.25, help="width multiplier (0.25 = width 16)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16, help="batches per fit/evaluate call")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(common.banner())
    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    split = Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, (n,), dtype=np.int32))
    mesh = sharding.make_mesh()
    model = create_model(args.model, num_classes=10, width_multiplier=args.width)
    variables = jax.device_get(jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(
        jax.random.PRNGKey(0)))
    tx = sgd(0.01, momentum=0.9, weight_decay=5e-4, steps_per_epoch=args.steps)
    train_step = steps.make_train_step(model, tx, mesh, regime="standard", augment=True)
    eval_step = steps.make_eval_step(model, mesh)
    print(f"{args.model} width x{args.width}, batch {args.batch}, {args.steps} steps per call")
    print(f"host work per step (batch slice + copy + key + queue): {host_ms_per_step(split, args.batch, mesh, 20):.2f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        def run_fit(in_flight, i):
            fit(name="bench", directory=os.path.join(tmp, f"fit{in_flight}_{i}"),
                state=TrainState.create(variables, tx), train_step=train_step, train=split,
                batch_size=args.batch, epochs=1, seed=0, mesh=mesh, validate=lambda v: {"none": 0.0},
                select="none", in_flight=in_flight)

        def run_eval(in_flight, i):
            evaluate(eval_step, variables, split, batch_size=args.batch, mesh=mesh, in_flight=in_flight)

        rows = [("fit, clean train step", run_fit, 0, "in_flight=0"),
                ("fit, clean train step", run_fit, 1, "in_flight=1 (default)"),
                ("evaluate, clean", run_eval, 0, "in_flight=0"),
                ("evaluate, clean", run_eval, 2, "in_flight=2 (default)")]
        for _, fn, k, _ in rows:  # compile
            fn(k, "warm")
        rates = {i: [] for i in range(len(rows))}
        for r in range(args.repeats):
            for i, (_, fn, k, _) in enumerate(rows):
                t = time.perf_counter()
                fn(k, r)
                rates[i].append(n / (time.perf_counter() - t))
    print(f"{'loop':34s} {'':24s} img/s med  img/s best")
    for i, (name, _, _, how) in enumerate(rows):
        print(f"{name:34s} {how:24s} {statistics.median(rates[i]):9.1f}  {max(rates[i]):10.1f}")
    print(f"peak RSS {common.peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
