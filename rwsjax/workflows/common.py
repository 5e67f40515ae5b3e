"""What every workflow needs: splits, model, initial variables, mesh, compiled evaluation."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax import distributed
from rwsjax.config_validation import resolve_defaults
from rwsjax.data.sources import DATASETS
from rwsjax.data.splits import load_splits
from rwsjax.models.registry import create_model
from rwsjax.train import sharding, steps
from rwsjax.train.evaluate import evaluate
from rwsjax.weights.modules import call_order, kernels


def summary_writer(config, workdir):
    """TensorBoard writer in ``workdir/tensorboard`` (None when disabled, and on every process but 0)."""
    if not config.log.tensorboard or not distributed.is_main():
        return None
    from tensorboardX import SummaryWriter
    return SummaryWriter(os.path.join(workdir, "tensorboard"))


def subset(split, size, seed):
    """A seeded random subset of ``size`` examples (all when size is None or ≥ len)."""
    if size is None or size >= len(split):
        return split
    return split.subset(np.sort(np.random.default_rng(seed).permutation(len(split))[:size]))


class Setup:
    """What every stage needs: splits, model, initial variables, mesh and compiled eval steps."""

    def __init__(self, config, workdir):
        resolve_defaults(config)  # idempotent; main has done it already for command-line runs
        self.config, self.workdir = config, workdir
        self.mesh = sharding.make_mesh()
        info = DATASETS[config.data.name]
        self.splits = load_splits(config.data.name, data_dir=config.data.data_dir, val_size=config.data.val_size,
                                  train_size=config.data.train_size, test_size=config.data.test_size,
                                  seed=config.seed, lazy=jax.process_count() > 1)  # per-host reading
        self.model = create_model(config.model.name, num_classes=info.num_classes,
                                  width_multiplier=config.model.width_multiplier, mean=info.mean, std=info.std)
        example = jnp.zeros((1,) + info.image_shape, jnp.float32)
        self.init_variables = dict(jax.jit(lambda k: self.model.init(k, example, train=False))(
            jax.random.PRNGKey(config.seed)))
        self.init_variables.setdefault("batch_stats", {})  # models without BatchNorm (VGG-16)
        self.kernels = kernels(self.init_variables["params"],
                               call_order(self.model, self.init_variables, example))
        self.val_robust = subset(self.splits["val"], config.at.get("val_robust_size"), config.seed + 1)
        self.eval_attack = steps.attack_kwargs(config.eval)
        self._eval_steps = {}
        self.writer = summary_writer(config, workdir)
        print(f"[data] {config.data.name}: train {len(self.splits['train'])}, val {len(self.splits['val'])} "
              f"(attacked: {len(self.val_robust)}), test {len(self.splits['test'])}; "
              f"{len(jax.devices())} device(s): {jax.devices()[0].platform}"
              + (f" on {jax.process_count()} processes" if jax.process_count() > 1 else ""))

    def eval_step(self, restarts: int | None):
        """Clean-only (``restarts=None``) or PGD with ``restarts`` random restarts; compiled once each."""
        if restarts not in self._eval_steps:
            attack = None if restarts is None else self.eval_attack
            self._eval_steps[restarts] = steps.make_eval_step(self.model, self.mesh, attack=attack,
                                                              restarts=restarts or 1)
        return self._eval_steps[restarts]

    def autoattack(self, variables, desc: str) -> dict:
        """AutoAttack-lite on the test split (or its seeded ``eval.autoattack_size`` subset):
        ``{"clean_accuracy", "apgd_ce_accuracy", "apgd_t_accuracy", "autoattack_accuracy": %, "n", ...}``."""
        c = self.config.eval
        if "autoattack" not in self._eval_steps:
            self._eval_steps["autoattack"] = steps.make_autoattack_step(
                self.model, self.mesh, eps=float(c.eps), norm=c.norm, n_iter=int(c.apgd_iters),
                n_targets=int(c.apgd_targets), unroll=steps.resolve_unroll(c.unroll),
                restarts=int(c.apgd_restarts))
        split = subset(self.splits["test"], c.autoattack_size, self.config.seed + 2)
        out = self.evaluate(self._eval_steps["autoattack"], variables, split, desc)
        out.update(apgd_iters=int(c.apgd_iters), apgd_targets=int(c.apgd_targets), apgd_restarts=int(c.apgd_restarts))
        return out

    def evaluate(self, step, variables, split, desc):
        return evaluate(step, variables, split, batch_size=self.config.eval.batch_size, mesh=self.mesh,
                        seed=self.config.seed, desc=desc)


