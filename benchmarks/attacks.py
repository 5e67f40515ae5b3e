"""AutoAttack wall time, rwsjax next to the reference code (``pyautoattack``, fra31's AutoAttack) in the same
run: the same model (rwsjax ResNet-18 and its PyTorch twin with the same weights), the same CIFAR-10 test
images, the same attacks; compilation included, one run each.

    python benchmarks/attacks.py --width=0.25 --n=200 --attacks=apgd-ce,apgd-t --apgd_targets=1 --train_steps=300

``--train_steps``: clean SGD steps on CIFAR-10 train images first (a random network is misclassified
everywhere, so there would be nothing to attack); ``--eps`` on the 0–255 scale.  Needs torch and
``pip install --no-deps pyautoattack``; TFDS_DATA_DIR holding the prepared CIFAR-10.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import common  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--n", type=int, default=200, help="CIFAR-10 test images")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--eps", type=float, default=8.0, help="ℓ∞ radius, 0–255 scale")
    parser.add_argument("--attacks", default="apgd-ce,apgd-t")
    parser.add_argument("--n_iter", type=int, default=100)
    parser.add_argument("--apgd_targets", type=int, default=9)
    parser.add_argument("--fab_targets", type=int, default=9)
    parser.add_argument("--square_queries", type=int, default=5000)
    parser.add_argument("--train_steps", type=int, default=300)
    parser.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR"))
    a = parser.parse_args()

    import torch
    import pyautoattack
    import torch_models
    from rwsjax.attacks.autoattack import AutoAttack, Settings
    from rwsjax.data.sources import DATASETS, load_split
    from rwsjax.models.pytorch_io import export_state_dict
    from rwsjax.models.registry import create_model
    from rwsjax.train import sharding, steps
    from rwsjax.train.state import TrainState, sgd

    torch.set_num_threads(os.cpu_count() or 1)
    mesh = sharding.make_mesh()
    model = create_model("resnet18", num_classes=10, width_multiplier=a.width)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.PRNGKey(0))
    if a.train_steps:
        train = load_split("cifar10", "train", a.data_dir, np.arange(128 * 40), progress=False)
        tx = sgd(0.05, momentum=0.9, weight_decay=5e-4, steps_per_epoch=40)
        step = steps.make_train_step(model, tx, mesh, regime="standard", augment=True)
        state = sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)
        for i in range(a.train_steps):
            j = (i % 40) * 128
            batch = sharding.shard_batch((train.images[j:j + 128], train.labels[j:j + 128]), mesh)
            state, _ = step(state, *batch, jax.random.PRNGKey(i))
        variables = jax.device_get(state.variables)
    test = load_split("cifar10", "test", a.data_dir, np.arange(a.n), progress=False)
    attacks = [s.strip() for s in a.attacks.split(",")]
    eps = a.eps / 255
    settings = Settings(n_iter=a.n_iter, apgd_targets=a.apgd_targets, fab_targets=a.fab_targets,
                        square_queries=a.square_queries)
    print(f"resnet18 width x{a.width}, {a.n} CIFAR-10 test images, eps {a.eps:g}/255, {', '.join(attacks)} "
          f"({a.n_iter} iterations, {a.apgd_targets} APGD-T / {a.fab_targets} FAB-T targets, "
          f"{a.square_queries} Square queries); {common.banner()}")

    t = time.time()
    aa = AutoAttack(model, eps=eps, version="custom", attacks=attacks, settings=settings, mesh=mesh)
    ours = aa.run(variables, test.images, test.labels, batch_size=a.batch, progress=None)
    ours_s = time.time() - t
    t = time.time()  # the same object again: its programs are compiled (the run time alone)
    aa.run(variables, test.images, test.labels, batch_size=a.batch, progress=None)
    again_s = time.time() - t

    info = DATASETS["cifar10"]
    twin = torch_models.resnet18(width=a.width, norm="normalize", mean=info.mean, std=info.std)
    sd = export_state_dict(variables, mean=info.mean, std=info.std)
    twin.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in sd.items()}, strict=True)
    twin.eval()
    ref = pyautoattack.AutoAttack(twin, attacks=attacks, eps=eps, norm="Linf", seed=0, version="custom")
    for att in (ref.apgd, ref.apgd_targeted):
        att.n_iter = a.n_iter
        att.n_iter_2, att.n_iter_min, att.size_decr = (max(int(f * a.n_iter), 1) for f in (0.22, 0.06, 0.03))
    ref.apgd_targeted.n_target_classes, ref.fab.n_iter = a.apgd_targets, a.n_iter
    ref.fab.n_target_classes, ref.square.n_queries = a.fab_targets, a.square_queries
    ref.logger.disabled = True
    xt = torch.tensor(test.images.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    yt = torch.tensor(test.labels.astype(np.int64))
    t = time.time()
    x_ref, _ = ref.run_standard_evaluation(xt, yt, batch_size=a.batch)
    ref_s = time.time() - t
    with torch.no_grad():
        ref_acc = 100.0 * float((twin(x_ref).argmax(1) == yt).float().mean())

    print(f"{'':32s}{'wall s':>8s}{'clean %':>9s}{'robust %':>10s}")
    print(f"{'rwsjax (compile included)':32s}{ours_s:8.1f}{ours['clean_accuracy']:9.2f}{ours['robust_accuracy']:10.2f}")
    print(f"{'rwsjax (second run, compiled)':32s}{again_s:8.1f}")
    print(f"{'pyautoattack ' + pyautoattack.__name__:32s}{ref_s:8.1f}{'':9s}{ref_acc:10.2f}")
    print(f"rwsjax / reference wall time: {ours_s / ref_s:.2f}; after each attack (rwsjax): {ours['accuracy_after']}")


if __name__ == "__main__":
    main()
