"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=2 (see test_sharding.py).

Takes two PGD-AT steps and one evaluation on real CIFAR-10 images, once with
the batch sharded over 2 CPU devices and once on 1 device, and prints the
largest parameter difference and both evaluation counts as JSON.
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
    attack = dict(eps=8 / 255, step_size=2 / 255, steps=2, norm="linf", random_init=True, unroll=True)
    out = {}
    for name, devices in (("sharded", jax.devices()), ("single", jax.devices()[:1])):
        mesh = sharding.make_mesh(devices)
        step = steps.make_train_step(model, tx, mesh, regime="pgd_at", attack=attack)
        state = sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)
        x, y = sharding.shard_batch((split.images, split.labels), mesh)
        assert len(x.sharding.device_set) == len(devices)
        for i in range(2):
            state, metrics = step(state, x, y, jax.random.PRNGKey(i))
        assert len(state.params["conv1"]["kernel"].sharding.device_set) == len(devices)  # replicated weights
        ev = steps.make_eval_step(model, mesh, attack=attack, restarts=2)
        mask = sharding.shard_batch(np.ones(32, bool), mesh)
        counts = jax.device_get(ev(state.variables, x, y, mask, jax.random.PRNGKey(9)))
        out[name] = (jax.device_get(state.variables), {k: float(v) for k, v in counts.items()},
                     float(metrics["loss"]))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(out["sharded"][0]),
                                                            jax.tree.leaves(out["single"][0])))
    json.dump({"max_abs_diff": diff, "sharded_eval": out["sharded"][1], "single_eval": out["single"][1],
               "sharded_loss": out["sharded"][2], "single_loss": out["single"][2]}, sys.stdout)


if __name__ == "__main__":
    main()
