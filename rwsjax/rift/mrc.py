"""Module robust criticality (Zhu et al., ICCV 2023, Definition 3.1 and Algorithm 1).

For a module i with kernel W_i, on adversarial examples X_adv crafted once
from θ_AT and then kept fixed,

    MRC(i) = max_{‖Δ_i‖₂ ≤ ε‖W_i‖₂}  L(θ_AT + Δ_i; X_adv) − L(θ_AT; X_adv),

where only W_i moves (Δ is zero elsewhere) and ‖·‖₂ is the Frobenius norm.
The max is approximated by projected gradient ascent on Δ_i (plain SGD on
−L, learning rate ``lr``) for ``epochs`` passes over X_adv; after every step
(or once per epoch, as the official code does) Δ_i is projected back onto
the ball; the largest full-set loss seen after any epoch gives the MRC.
BatchNorm is in evaluation mode throughout.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rwsjax.attacks.pgd import cross_entropy
from rwsjax.train import sharding
from rwsjax.weights.modules import get_leaf, set_leaf

PyTree = Any
PROJECT_EVERY = ("step", "epoch")


def project_l2(delta: jax.Array, radius: jax.Array) -> jax.Array:
    """Project ``delta`` onto the Frobenius ball of ``radius`` (no-op inside it)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(delta)))
    return delta * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30))


def perturb(params: PyTree, path: Sequence[str], delta: jax.Array) -> PyTree:
    """``params`` with ``delta`` added to the leaf at ``path`` only (a new pytree)."""
    return set_leaf(params, tuple(path), get_leaf(params, tuple(path)) + delta)


class MRC:
    """Compiled MRC machinery for one model and one fixed adversarial set.

    Args:
      model: Flax model; ``variables`` its ``{"params", "batch_stats"}`` (θ_AT).
      x_adv: float32 ``[N, H, W, C]`` in [0,1], the fixed PGD examples; ``labels`` int ``[N]``.
      eps: relative radius ε (ball radius = ε·‖W_i‖₂; paper 0.1).
      lr: ascent learning rate (paper 1.0); ``epochs``: ascent passes (paper 10).
      batch_size: ascent batch; ``N`` must be ≥ it (remainder examples are used for
        the loss but not for ascent steps).
      project_every: ``"step"`` (after every ascent step) or ``"epoch"`` (official code).

    Raises:
      ValueError: bad ``project_every`` or fewer examples than one batch.
    """

    def __init__(self, model: nn.Module, variables: PyTree, x_adv: np.ndarray, labels: np.ndarray, *,
                 mesh, eps: float = 0.1, lr: float = 1.0, epochs: int = 10, batch_size: int = 128,
                 project_every: str = "step", seed: int = 0):
        if project_every not in PROJECT_EVERY:
            raise ValueError(f"unknown mrc.project_every {project_every!r}; valid: {PROJECT_EVERY}")
        if len(x_adv) < batch_size:
            raise ValueError(f"MRC needs at least one batch: {len(x_adv)} examples < batch_size "
                             f"{batch_size}; raise mrc.num_examples or lower mrc.batch_size")
        self.model, self.mesh = model, mesh
        self.variables = sharding.replicate(variables, mesh)
        self.eps, self.lr, self.epochs, self.project_every = eps, lr, epochs, project_every
        n = len(x_adv)
        self.n = n
        rng = np.random.default_rng(seed)
        # Ascent batches per epoch (deterministic order), pre-placed on the devices once.
        self._orders = [rng.permutation(n)[: (n // batch_size) * batch_size].reshape(-1, batch_size)
                        for _ in range(epochs)]
        self._x, self._y = np.asarray(x_adv, np.float32), np.asarray(labels, np.int32)
        pad = (-n) % batch_size
        idx = np.concatenate([np.arange(n), np.full(pad, n - 1)]).reshape(-1, batch_size)
        mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]).reshape(-1, batch_size)
        self._eval_batches = [sharding.shard_batch((self._x[i], self._y[i], m), mesh) for i, m in zip(idx, mask)]
        rep = sharding.replicated(mesh)
        self._ascend = jax.jit(self._ascend_impl, static_argnames=("path", "project"), out_shardings=rep)
        self._loss = jax.jit(self._loss_impl, out_shardings=rep)  # one program for every module

    # -- pure pieces -------------------------------------------------------
    def _logits(self, variables, path, delta, x):
        params = perturb(variables["params"], path, delta)
        return self.model.apply({"params": params, "batch_stats": variables.get("batch_stats", {})}, x, train=False)

    def _ascend_impl(self, variables, delta, radius, x, y, *, path, project):
        grad = jax.grad(lambda d: jnp.mean(cross_entropy(self._logits(variables, path, d, x), y)))(delta)
        delta = delta + self.lr * grad
        return project_l2(delta, radius) if project else delta

    def _loss_impl(self, variables, x, y, mask):
        logits = self.model.apply(variables, x, train=False)
        loss = jnp.sum(jnp.where(mask, cross_entropy(logits, y), 0.0))
        correct = jnp.sum((jnp.argmax(logits, -1) == y) & mask)
        return loss, correct

    # -- host loops --------------------------------------------------------
    def robust_loss(self, path: Sequence[str], delta: jax.Array) -> tuple[float, float]:
        """Mean CE loss and accuracy (%) on the whole fixed set at θ_AT + Δ on ``path``."""
        loss = correct = 0.0
        variables = {"params": perturb(self.variables["params"], path, delta),
                     "batch_stats": self.variables.get("batch_stats", {})}
        for x, y, m in self._eval_batches:
            l, c = jax.device_get(self._loss(variables, x, y, m))
            loss, correct = loss + float(l), correct + float(c)
        return loss / self.n, 100.0 * correct / self.n

    def ascend(self, path: Sequence[str]) -> tuple[jax.Array, list[dict]]:
        """Projected gradient ascent on the kernel at ``path``; returns the final Δ and per-epoch history."""
        path = tuple(path)
        w = get_leaf(self.variables["params"], path)
        radius = self.eps * jnp.sqrt(jnp.sum(jnp.square(w)))
        delta = sharding.replicate(jnp.zeros_like(w), self.mesh)
        history = []
        for order in self._orders:
            for idx in order:
                x, y = sharding.shard_batch((self._x[idx], self._y[idx]), self.mesh)
                delta = self._ascend(self.variables, delta, radius, x, y, path=path,
                                     project=self.project_every == "step")
            if self.project_every == "epoch":
                delta = project_l2(delta, radius)
            loss, acc = self.robust_loss(path, delta)
            history.append({"loss": loss, "accuracy": acc,
                            "relative_norm": float(jnp.linalg.norm(delta) / jnp.linalg.norm(w))})
        return delta, history

    def criticality(self, modules: dict[str, tuple[str, ...]], *, baseline: tuple[float, float] | None = None
                    ) -> list[dict]:
        """MRC of every module in ``modules`` (``{dotted name: kernel path}``), in the given order.

        Returns one row per module: ``module``, ``shape``, ``mrc`` (loss increase,
        nats), ``loss_at`` / ``loss_max`` (mean CE on X_adv), ``robust_accuracy_at``
        / ``robust_accuracy_at_max`` (% on X_adv) and ``accuracy_drop`` (points).
        """
        rows = []
        for name, path in tqdm(modules.items(), desc="MRC", leave=False):
            w = get_leaf(self.variables["params"], path)
            loss0, acc0 = baseline or self.robust_loss(path, jnp.zeros_like(w))
            baseline = (loss0, acc0)
            _, history = self.ascend(path)
            worst = max(history, key=lambda h: h["loss"])
            loss_max, acc_max = (worst["loss"], worst["accuracy"]) if worst["loss"] > loss0 else (loss0, acc0)
            rows.append({"module": name, "shape": list(w.shape), "mrc": loss_max - loss0, "loss_at": loss0,
                         "loss_max": loss_max, "robust_accuracy_at": acc0, "robust_accuracy_at_max": acc_max,
                         "accuracy_drop": acc0 - acc_max, "history": history})
            print(f"[mrc] {name:28s} MRC={loss_max - loss0:.4f}  robust acc {acc0:.1f}% -> {acc_max:.1f}%")
        return rows
