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

The modules are independent problems, so they are spread over devices (and
processes): module ``i`` runs whole on device ``i mod D`` of ``jax.devices()``,
each process works through the modules of its own devices (one host thread
per device) and the rows are gathered on every process.  A module's numbers
do not depend on how many devices share the table.
"""

from __future__ import annotations

from typing import Any, Sequence

import threading
from concurrent.futures import ThreadPoolExecutor

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.attacks.pgd import cross_entropy
from rwsjax import distributed
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
      devices: devices that share the modules (default ``jax.devices()``, all
        processes); each holds its own copy of θ_AT and X_adv.

    Raises:
      ValueError: bad ``project_every`` or fewer examples than one batch.
    """

    def __init__(self, model: nn.Module, variables: PyTree, x_adv: np.ndarray, labels: np.ndarray, *,
                 eps: float = 0.1, lr: float = 1.0, epochs: int = 10, batch_size: int = 128,
                 project_every: str = "step", seed: int = 0, devices=None):
        if project_every not in PROJECT_EVERY:
            raise ValueError(f"unknown mrc.project_every {project_every!r}; valid: {PROJECT_EVERY}")
        if len(x_adv) < batch_size:
            raise ValueError(f"MRC needs at least one batch: {len(x_adv)} examples < batch_size "
                             f"{batch_size}; raise mrc.num_examples or lower mrc.batch_size")
        self.model = model
        self.devices = list(jax.devices() if devices is None else devices)
        self.variables = jax.device_get(variables)
        self.eps, self.lr, self.epochs, self.project_every = eps, lr, epochs, project_every
        n = len(x_adv)
        self.n = n
        rng = np.random.default_rng(seed)
        # Ascent batches per epoch (deterministic order) as indices into X_adv: [epochs, steps, B].
        self._orders = np.stack([rng.permutation(n)[: (n // batch_size) * batch_size].reshape(-1, batch_size)
                                 for _ in range(epochs)]).astype(np.int32)
        pad = (-n) % batch_size
        self._eval_idx = np.concatenate([np.arange(n), np.full(pad, n - 1)]).reshape(-1, batch_size).astype(np.int32)
        self._eval_mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]).reshape(-1, batch_size)
        self._x, self._y = np.asarray(x_adv, np.float32), np.asarray(labels, np.int32)
        self._placed, self._lock = {}, threading.Lock()
        self._ascend = jax.jit(self._ascend_impl, static_argnames=("path", "project"))
        self._loss = jax.jit(self._loss_impl)  # one program for every module

    # -- pure pieces -------------------------------------------------------
    def _logits(self, variables, path, delta, x):
        params = perturb(variables["params"], path, delta)
        return self.model.apply({"params": params, "batch_stats": variables.get("batch_stats", {})}, x, train=False)

    def _ascend_impl(self, variables, delta, radius, x_all, y_all, idx, *, path, project):
        x, y = x_all[idx], y_all[idx]
        grad = jax.grad(lambda d: jnp.mean(cross_entropy(self._logits(variables, path, d, x), y)))(delta)
        delta = delta + self.lr * grad
        return project_l2(delta, radius) if project else delta

    def _loss_impl(self, variables, x_all, y_all, idx, mask):
        x, y = x_all[idx], y_all[idx]
        logits = self.model.apply(variables, x, train=False)
        loss = jnp.sum(jnp.where(mask, cross_entropy(logits, y), 0.0))
        correct = jnp.sum((jnp.argmax(logits, -1) == y) & mask)
        return loss, correct

    # -- host loops --------------------------------------------------------
    def _on(self, device) -> dict:
        """θ_AT, X_adv and the batch orders placed on ``device`` (once)."""
        with self._lock:
            if device not in self._placed:
                put = lambda t: jax.device_put(t, device)  # noqa: E731
                self._placed[device] = {
                    "variables": put(self.variables), "x": put(self._x), "y": put(self._y),
                    "orders": put(self._orders), "eval_idx": put(self._eval_idx),
                    "eval_mask": put(self._eval_mask)}
            return self._placed[device]

    def _local_devices(self) -> list:
        return [d for d in self.devices if d.process_index == jax.process_index()]

    def robust_loss(self, path: Sequence[str], delta: jax.Array, device=None) -> tuple[float, float]:
        """Mean CE loss and accuracy (%) on the whole fixed set at θ_AT + Δ on ``path`` (on ``device``)."""
        device = device or self._local_devices()[0]
        on = self._on(device)
        v = on["variables"]
        delta = jax.device_put(delta, device)
        variables = {"params": perturb(v["params"], tuple(path), delta), "batch_stats": v.get("batch_stats", {})}
        loss = correct = 0.0
        for i in range(len(self._eval_idx)):
            l, c = jax.device_get(self._loss(variables, on["x"], on["y"], on["eval_idx"][i], on["eval_mask"][i]))
            loss, correct = loss + float(l), correct + float(c)
        return loss / self.n, 100.0 * correct / self.n

    def ascend(self, path: Sequence[str], device=None) -> tuple[jax.Array, list[dict]]:
        """Projected gradient ascent on the kernel at ``path`` (on ``device``); final Δ and per-epoch history."""
        device = device or self._local_devices()[0]
        path, on = tuple(path), self._on(device)
        w = get_leaf(on["variables"]["params"], path)
        radius = self.eps * jnp.sqrt(jnp.sum(jnp.square(w)))
        delta = jnp.zeros_like(w)
        history = []
        for epoch in range(self.epochs):
            for i in range(self._orders.shape[1]):
                delta = self._ascend(on["variables"], delta, radius, on["x"], on["y"], on["orders"][epoch, i],
                                     path=path, project=self.project_every == "step")
            if self.project_every == "epoch":
                delta = project_l2(delta, radius)
            loss, acc = self.robust_loss(path, delta, device)
            history.append({"loss": loss, "accuracy": acc,
                            "relative_norm": float(jnp.linalg.norm(delta) / jnp.linalg.norm(w))})
        return delta, history

    def _row(self, name: str, path: tuple, device, baseline: tuple[float, float]) -> dict:
        loss0, acc0 = baseline
        _, history = self.ascend(path, device)
        worst = max(history, key=lambda h: h["loss"])
        loss_max, acc_max = (worst["loss"], worst["accuracy"]) if worst["loss"] > loss0 else (loss0, acc0)
        shape = list(np.shape(get_leaf(self.variables["params"], tuple(path))))
        print(f"[mrc] {name:28s} MRC={loss_max - loss0:.4f}  robust acc {acc0:.1f}% -> {acc_max:.1f}%  "
              f"({device})", flush=True)
        return {"module": name, "shape": shape, "mrc": loss_max - loss0, "loss_at": loss0, "loss_max": loss_max,
                "robust_accuracy_at": acc0, "robust_accuracy_at_max": acc_max, "accuracy_drop": acc0 - acc_max,
                "history": history}

    def criticality(self, modules: dict[str, tuple[str, ...]], *, baseline: tuple[float, float] | None = None,
                    done: dict[str, dict] | None = None, on_row=None, stop=None) -> list[dict]:
        """MRC of every module in ``modules`` (``{dotted name: kernel path}``), in the given order.

        Module ``i`` is computed on ``devices[i % len(devices)]``; every process
        must call this (a collective when there are several) and gets all rows.

        Resumable: rows in ``done`` (``{module: row}``, e.g. saved by an earlier
        run) are not recomputed; ``on_row(row)`` is called (from a worker thread)
        as each new row is finished, to persist it; when ``stop()`` turns True the
        workers finish their current module and take no more, and the rows
        finished so far are returned (fewer than ``modules``).

        Returns one row per module: ``module``, ``shape``, ``mrc`` (loss increase,
        nats), ``loss_at`` / ``loss_max`` (mean CE on X_adv), ``robust_accuracy_at``
        / ``robust_accuracy_at_max`` (% on X_adv), ``accuracy_drop`` (points) and
        ``history`` (per ascent epoch: ``loss``, ``accuracy``, ``relative_norm``).
        """
        names = list(modules)
        done = dict(done or {})
        local = self._local_devices()
        work = {d: [n for i, n in enumerate(names) if self.devices[i % len(self.devices)] == d and n not in done]
                for d in local}
        if baseline is None and names:
            first = modules[names[0]]
            baseline = self.robust_loss(first, jnp.zeros_like(get_leaf(self.variables["params"], tuple(first))),
                                        local[0])

        def run(device):
            rows = []
            for n in work[device]:
                if stop is not None and stop():
                    break
                rows.append(self._row(n, tuple(modules[n]), device, baseline))
                if on_row is not None:
                    on_row(rows[-1])
            return rows

        with ThreadPoolExecutor(max_workers=max(1, len(local))) as pool:
            mine = {row["module"]: row for rows in pool.map(run, local) for row in rows}
        for part in distributed.gather_objects(mine):
            done.update(part)
        return [done[n] for n in names if n in done]
