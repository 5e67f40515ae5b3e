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

Only W_i moves, so the inputs of module i and of every module that contains
it (its residual block, stage…) are the same at every ascent step: they are
computed once per module over X_adv (``cache=True``) and the ascent and loss
programs start from them — the unchanged prefix of the network is never run
again (XLA drops it as dead code), which is exact, not an approximation.

The modules are independent problems, so they are spread over devices (and
processes): module ``i`` runs whole on device ``i mod D`` of ``jax.devices()``,
each process works through the modules of its own devices (one host thread
per device) and the rows are gathered on every process.  A module's numbers
do not depend on how many devices share the table.
"""

from __future__ import annotations

from typing import Any, Sequence

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.attacks.pgd import cross_entropy
from rwsjax import distributed
from rwsjax.train import dispatch
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
      drop_remainder: ascent steps on full batches only (the remainder examples still count in the loss),
        or, False (official code), one more step on the last, smaller batch of each epoch.
      floor: the maximum includes Δ = 0, so MRC ≥ 0 (Definition 3.1), or, False (official code), the largest
        loss after any epoch minus L(θ_AT), which is negative when no epoch raised the loss.
      devices: devices that share the modules (default ``jax.devices()``, all
        processes); each holds its own copy of θ_AT and X_adv.
      cache: start every step from the cached inputs of the module and its
        ancestors (see the module docstring) instead of the images; a module
        whose cache would exceed ``cache_gib`` GiB is run from the images.
      threads: modules computed concurrently per device (host threads); on
        XLA:CPU two overlap one module's compilation and small kernels with
        another's work.

    Raises:
      ValueError: bad ``project_every`` or fewer examples than one batch.
    """

    def __init__(self, model: nn.Module, variables: PyTree, x_adv: np.ndarray, labels: np.ndarray, *,
                 eps: float = 0.1, lr: float = 1.0, epochs: int = 10, batch_size: int = 128,
                 project_every: str = "step", seed: int = 0, devices=None, cache: bool = True,
                 cache_gib: float = 8.0, threads: int = 1, drop_remainder: bool = True, floor: bool = True):
        if project_every not in PROJECT_EVERY:
            raise ValueError(f"unknown mrc.project_every {project_every!r}; valid: {PROJECT_EVERY}")
        if len(x_adv) < batch_size and drop_remainder:
            raise ValueError(f"MRC needs at least one batch: {len(x_adv)} examples < batch_size "
                             f"{batch_size}; raise mrc.num_examples or lower mrc.batch_size")
        self.model = model
        self.devices = list(jax.devices() if devices is None else devices)
        self.variables = jax.device_get(variables)
        self.eps, self.lr, self.epochs, self.project_every = eps, lr, epochs, project_every
        n = len(x_adv)
        self.n = n
        rng = np.random.default_rng(seed)
        # Ascent batches per epoch (deterministic order) as index arrays into X_adv: epochs × steps × [B]
        # (the last one smaller without drop_remainder).
        full = (n // batch_size) * batch_size
        self._orders = []
        for _ in range(epochs):
            order = rng.permutation(n).astype(np.int32)
            steps = list(order[:full].reshape(-1, batch_size))
            if not drop_remainder and full < n:
                steps.append(order[full:])
            self._orders.append(steps)
        self.floor = floor
        pad = (-n) % batch_size
        self._eval_idx = np.concatenate([np.arange(n), np.full(pad, n - 1)]).reshape(-1, batch_size).astype(np.int32)
        self._eval_mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]).reshape(-1, batch_size)
        self._x, self._y = np.asarray(x_adv, np.float32), np.asarray(labels, np.int32)
        self._placed, self._lock = {}, threading.Lock()
        self.cache, self.cache_bytes, self.threads = cache, cache_gib * 2**30, max(1, int(threads))
        # Compiled per kernel (the perturbed path) and per set of cut points; ``points=()`` — no cache — gives
        # one loss program for every module.
        self._ascend = jax.jit(self._ascend_impl, static_argnames=("path", "points", "project"))
        self._loss = jax.jit(self._loss_impl, static_argnames=("points",))
        self._capture = jax.jit(self._capture_impl, static_argnames=("points",))

    # -- pure pieces (the cached-activation path; no cut points = the plain forward pass) -----
    @staticmethod
    def cut_points(path: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """The modules whose inputs are cached for kernel ``path``: every ancestor and the module itself,
        e.g. ``("layer3_1", "conv2", "kernel")`` → ``(("layer3_1",), ("layer3_1", "conv2"))``."""
        module = tuple(path[:-1])
        return tuple(module[:k] for k in range(1, len(module) + 1))

    def _apply_with_inputs(self, variables, inputs, x, points):
        """Logits with the input of each module in ``points`` replaced by ``inputs`` (same order);
        everything those inputs make redundant is dead code that XLA removes."""
        where = dict(zip(points, range(len(points))))

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__":
                i = where.get(tuple(context.module.path))
                if i is not None:
                    args = (inputs[i],) + tuple(args[1:])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            return self.model.apply(variables, x, train=False)

    def _capture_impl(self, variables, x_all, idx, *, points):
        found = {}

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__":
                p = tuple(context.module.path)
                if p in points:
                    found.setdefault(p, []).append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            self.model.apply(variables, x_all[idx], train=False)
        if any(len(found.get(p, ())) != 1 for p in points):
            raise ValueError(f"MRC activation cache: modules {points} must each be called exactly once per "
                             "forward pass; use cache=False (--config.mrc.cache=False) for this model")
        return tuple(found[p][0] for p in points)

    def _batch(self, inputs, idx, points):
        """Model input and replaced module inputs of batch ``idx``: the images themselves when ``points`` is
        empty (``inputs == (x_all,)``), else zeros (dead code) and the cached inputs."""
        if not points:
            return inputs[0][idx], ()
        return jnp.zeros((idx.shape[0],) + self._x.shape[1:], jnp.float32), tuple(a[idx] for a in inputs)

    def _ascend_impl(self, variables, delta, radius, inputs, y_all, idx, *, path, points, project):
        x, replaced = self._batch(inputs, idx, points)
        y = y_all[idx]

        def loss(d):
            v = {"params": perturb(variables["params"], path, d), "batch_stats": variables.get("batch_stats", {})}
            return jnp.mean(cross_entropy(self._apply_with_inputs(v, replaced, x, points), y))

        delta = delta + self.lr * jax.grad(loss)(delta)
        return project_l2(delta, radius) if project else delta

    def _loss_impl(self, variables, inputs, y_all, idx, mask, *, points):
        x, replaced = self._batch(inputs, idx, points)
        y = y_all[idx]
        logits = self._apply_with_inputs(variables, replaced, x, points)
        loss = jnp.sum(jnp.where(mask, cross_entropy(logits, y), 0.0))
        return loss, jnp.sum((jnp.argmax(logits, -1) == y) & mask)

    def _inputs(self, path, device) -> tuple[tuple, tuple]:
        """``(points, inputs)`` the loss and ascent programs start from for kernel ``path`` on ``device``:
        ``cut_points(path)`` and their cached inputs over all (padded) examples, or ``((), (X_adv,))`` when
        caching is off or the cache would exceed ``cache_gib``."""
        on = self._on(device)
        plain = ((), (on["x"],))
        if not self.cache:
            return plain
        points = self.cut_points(path)
        parts = [self._capture(on["variables"], on["x"], on["eval_idx"][i], points=points)
                 for i in range(len(self._eval_idx))]
        if sum(p.nbytes for p in parts[0]) * len(parts) > self.cache_bytes:
            return plain
        return points, tuple(jnp.concatenate(a) for a in zip(*parts))

    # -- host loops --------------------------------------------------------
    def _on(self, device) -> dict:
        """θ_AT, X_adv and the batch orders placed on ``device`` (once)."""
        with self._lock:
            if device not in self._placed:
                put = lambda t: jax.device_put(t, device)  # noqa: E731
                # Index arrays one per step, so the loops never index a device array with a host int (a copy).
                self._placed[device] = {
                    "variables": put(self.variables), "x": put(self._x), "y": put(self._y),
                    "orders": put([list(epoch) for epoch in self._orders]), "eval_idx": put(list(self._eval_idx)),
                    "eval_mask": put(list(self._eval_mask))}
            return self._placed[device]

    def _local_devices(self) -> list:
        return [d for d in self.devices if d.process_index == jax.process_index()]

    def robust_loss(self, path: Sequence[str], delta: jax.Array, device=None, start=None) -> tuple[float, float]:
        """Mean CE loss and accuracy (%) on the whole fixed set at θ_AT + Δ on ``path`` (on ``device``);
        ``start``: ``(points, inputs)`` from ``_inputs`` (default: from the images)."""
        device = device or self._local_devices()[0]
        on = self._on(device)
        points, inputs = start or ((), (on["x"],))
        v = on["variables"]
        delta = jax.device_put(delta, device)
        variables = {"params": perturb(v["params"], tuple(path), delta), "batch_stats": v.get("batch_stats", {})}
        with dispatch.guard():  # every batch queued, then read back at once
            parts = [self._loss(variables, inputs, on["y"], idx, mask, points=points)
                     for idx, mask in zip(on["eval_idx"], on["eval_mask"])]
        loss = correct = 0.0
        for l, c in jax.device_get(parts):
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
        points, inputs = start = self._inputs(path, device)
        project = self.project_every == "step"
        for epoch in range(self.epochs):
            with dispatch.guard():
                for idx in on["orders"][epoch]:
                    delta = self._ascend(on["variables"], delta, radius, inputs, on["y"], idx,
                                         path=path, points=points, project=project)
            if self.project_every == "epoch":
                delta = project_l2(delta, radius)
            loss, acc = self.robust_loss(path, delta, device, start)
            history.append({"loss": loss, "accuracy": acc,
                            "relative_norm": float(jnp.linalg.norm(delta) / jnp.linalg.norm(w))})
        return delta, history

    def _row(self, name: str, path: tuple, device, baseline: tuple[float, float]) -> dict:
        loss0, acc0 = baseline
        _, history = self.ascend(path, device)
        worst = max(history, key=lambda h: h["loss"])
        loss_max, acc_max = (worst["loss"], worst["accuracy"]) if worst["loss"] > loss0 or not self.floor else (
            loss0, acc0)
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

        queues, lock = {d: collections.deque(work[d]) for d in local}, threading.Lock()

        def run(device):
            rows = []
            while stop is None or not stop():
                with lock:
                    if not queues[device]:
                        break
                    n = queues[device].popleft()
                rows.append(self._row(n, tuple(modules[n]), device, baseline))
                if on_row is not None:
                    on_row(rows[-1])
            return rows

        workers = [d for d in local for _ in range(self.threads)]
        with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
            mine = {row["module"]: row for rows in pool.map(run, workers) for row in rows}
        for part in distributed.gather_objects(mine):
            done.update(part)
        return [done[n] for n in names if n in done]
