"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=2 (see test_sharding.py).

Takes two PGD-AT steps and one evaluation on real CIFAR-10 images, once with
the batch sharded over 2 CPU devices and once on 1 device, and prints the
largest parameter difference and both evaluation counts as JSON; then an MRC
table with the modules on 1 device and spread over both.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.data.sources import load_split
from rwsjax.models.registry import create_model
from rwsjax.train import sharding, steps
from rwsjax.train.state import TrainState, sgd


def main():
    assert len(jax.devices()) == 2, jax.devices()
    split = load_split("cifar10", "test", indices=np.arange(32) * 300, progress=False)
    model = create_model("resnet18", num_classes=10, width_multiplier=0.125)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.PRNGKey(0))
    tx = sgd(0.1, momentum=0.9, weight_decay=5e-4, steps_per_epoch=1)
    attack = dict(eps=8 / 255, step_size=2 / 255, steps=2, norm="linf", random_init=True, unroll=False)
    report = {}
    for regime, attack_bn in (("standard", "batch"), ("pgd_at", "eval"), ("pgd_at", "batch")):
        out = {}
        for name, devices in (("sharded", jax.devices()), ("single", jax.devices()[:1])):
            mesh = sharding.make_mesh(devices)
            step = steps.make_train_step(model, tx, mesh, regime=regime, attack=attack, attack_bn=attack_bn)
            state = sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)
            x, y = sharding.shard_batch((split.images, split.labels), mesh)
            assert len(x.sharding.device_set) == len(devices)
            for i in range(2):
                state, metrics = step(state, x, y, jax.random.PRNGKey(i))
            assert len(state.params["conv1"]["kernel"].sharding.device_set) == len(devices)  # replicated weights
            craft = steps.make_adversarial_examples(model, mesh, attack=attack)
            x_adv = np.asarray(jax.device_get(craft(state.variables, x, y, jax.random.PRNGKey(5))))
            ev = steps.make_eval_step(model, mesh, attack=attack, restarts=2)
            mask = sharding.shard_batch(np.ones(32, bool), mesh)
            counts = jax.device_get(ev(state.variables, x, y, mask, jax.random.PRNGKey(9)))
            out[name] = (jax.device_get(state.variables), {k: float(v) for k, v in counts.items() if k != "per_example"},
                         float(metrics["loss"]), x_adv)
        a, b = (jax.tree.leaves(out[n][0]["params"]) for n in ("sharded", "single"))
        p0 = jax.tree.leaves(jax.device_get(variables["params"]))
        distance = float(np.sqrt(sum(np.sum((u - v) ** 2) for u, v in zip(a, b))))
        report[f"{regime}/{attack_bn}"] = {
            "max_abs_diff": max(float(np.max(np.abs(u - v))) for u, v in zip(a, b)),
            "relative_diff": distance / float(np.sqrt(sum(np.sum(v ** 2) for v in b))),
            # ‖θ_sharded − θ_single‖ / ‖θ_single − θ_0‖: the difference against how far the two steps moved θ
            "displacement_diff": distance / float(np.sqrt(sum(np.sum((v - w) ** 2) for v, w in zip(b, p0)))),
            "batch_stats_diff": max(float(np.max(np.abs(u - v))) for u, v in zip(
                jax.tree.leaves(out["sharded"][0]["batch_stats"]), jax.tree.leaves(out["single"][0]["batch_stats"]))),
            "x_adv_equal_fraction": float(np.mean(out["sharded"][3] == out["single"][3])),
            "sharded_eval": out["sharded"][1], "single_eval": out["single"][1],
            "sharded_loss": out["sharded"][2], "single_loss": out["single"][2]}
    # MRC spread over both devices (one host thread each) vs all modules on one device: identical rows.
    from rwsjax.rift.mrc import MRC
    from rwsjax.weights.modules import call_order, kernels
    x_adv = np.asarray(x_adv, np.float32)
    ks = kernels(variables["params"], call_order(model, variables, jnp.zeros((1, 32, 32, 3))))
    chosen = {k: ks[k] for k in ("conv1", "layer2.0.shortcut.0", "linear")}
    rows = {n: MRC(model, variables, x_adv, split.labels, eps=0.1, lr=1.0, epochs=1, batch_size=16,
                   devices=d).criticality(chosen) for n, d in (("one", jax.devices()[:1]), ("two", jax.devices()))}
    report["mrc"] = {n: [{k: r[k] for k in ("module", "mrc", "loss_at", "loss_max")} for r in v]
                     for n, v in rows.items()}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
