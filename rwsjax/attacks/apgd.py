"""Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks"), ℓ∞ and ℓ2, in JAX — step for step the reference implementation
(fra31/auto-attack ``autoattack/autopgd_base.py``, ``APGDAttack.attack_single_run``).

APGD is PGD with momentum whose step size needs no tuning: it starts at η = 2ε and is halved at
checkpoints when the last stretch of iterations was not going up.  The update (Eq. 2) is

    z = P(x^{(k)} + η ∇̃f(x^{(k)})),   x^{(k+1)} = P(x^{(k)} + a(z − x^{(k)}) + (1 − a)(x^{(k)} − x^{(k−1)})),

a = 0.75 (1 at the first step), ∇̃ = sign(∇) for ℓ∞ and ∇/(‖∇‖₂ + 10⁻¹²) for ℓ2, P the projection onto the
ε-ball ∩ [0, 1].  Where the paper and the reference code differ, this follows the code:

- **checkpoints** (:func:`checkpoints`): integer windows, first ``max(int(0.22 N), 1)`` iterations, each
  next one ``size_decr = max(int(0.03 N), 1)`` shorter, never under ``max(int(0.06 N), 1)`` (the paper's
  real-valued p_j agree only at N = 100);
- **condition 1**: the step is halved when the loss rose in *at most* ρ·k of the window's k iterations
  (``<=``, ρ = 0.75), counted over the stored losses with the reference's wrap-around (the first window
  compares its first loss with the still-zero last slot);
- **condition 2**: η unchanged at the last checkpoint and no rise of the best loss since — never at the
  first checkpoint (``reduced_last_check`` starts at ones);
- after halving, the iterate and its gradient restart from the best point;
- **random start**: ℓ∞ ``x + ε·t/‖t‖∞``, t uniform in [−1, 1]; ℓ2 ``x + ε·t/‖t‖₂``, t standard Gaussian;
  clipped to [0, 1];
- the returned adversarial example is the **last** misclassified iterate (``x_best_adv``).

Randomness: the reference draws every start from PyTorch's global generator seeded once per call, so its
starts depend on the batch; here each example's start comes from its own key (the AutoAttack driver folds
the example's index into the run's key), so results do not depend on batch size or device count.  With the
same start (``x_init``) the iterates equal the reference's to float tolerance (``tests/test_apgd.py``).

Parts, composable and pure (``jax.jit`` them; :mod:`rwsjax.attacks.autoattack` runs them over a dataset):

- :func:`start` — the random start; :func:`init` — the state after evaluating the start (= :func:`step` of
  :func:`pending`, the state before it: one compiled step serves the start and every iteration);
- :func:`step` — one iteration (state → state); :func:`result` — ``(x_adv, robust)`` from a state;
- :func:`apgd` — init + ``n_iter`` steps in one ``lax.scan`` (a single function to jit on GPU/TPU);
- losses :func:`dlr_loss`, :func:`dlr_targeted_loss` (Eq. 5, 6); :func:`target_classes`.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.attacks.pgd import NORMS, cross_entropy

LogitsFn = Callable[[jax.Array], jax.Array]
LOSSES = ("ce", "dlr", "dlr_t")


@functools.lru_cache(maxsize=None)
def schedule(n_iter: int) -> tuple[tuple[int, int], ...]:
    """``(w, k)`` per checkpoint: after ``w`` iterations the last ``k`` are checked (reference ``counter3 == k``).

    The reference's integer arithmetic: ``k₀ = max(int(0.22 N), 1)``, then ``k ← max(k − max(int(0.03 N), 1),
    max(int(0.06 N), 1))``.  ``schedule(10) == ((2, 2), (3, 1), ..., (10, 1))``.

    Raises:
      ValueError: ``n_iter < 1``.
    """
    if n_iter < 1:
        raise ValueError(f"APGD n_iter must be >= 1, got {n_iter}")
    k = max(int(0.22 * n_iter), 1)
    size_decr, k_min = max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    out, w = [], 0
    while w + k <= n_iter:
        w += k
        out.append((w, k))
        k = max(k - size_decr, k_min)
    return tuple(out)


def checkpoints(n_iter: int) -> list[int]:
    """The iteration counts after which the step size may be halved (the reference's, see :func:`schedule`).

    Examples: ``checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]``; ``checkpoints(10) == [2, 3, ..., 10]``.
    """
    return [w for w, _ in schedule(n_iter)]


def dlr_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Untargeted DLR (Eq. 5), per example ``[B]``: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 10⁻¹²),
    the reference's ``dlr_loss`` (the runner-up read off the sorted logits)."""
    z = logits.astype(jnp.float32)
    srt = jnp.sort(z, axis=-1)
    top_is_y = (jnp.argmax(z, -1) == labels).astype(z.dtype)
    zy = jnp.take_along_axis(z, labels[:, None], -1)[:, 0]
    return -(zy - srt[:, -2] * top_is_y - srt[:, -1] * (1.0 - top_is_y)) / (srt[:, -1] - srt[:, -3] + 1e-12)


def dlr_targeted_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
    """Targeted DLR (Eq. 6), per example ``[B]``: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 10⁻¹²)."""
    z = logits.astype(jnp.float32)
    srt = jnp.sort(z, axis=-1)
    zy = jnp.take_along_axis(z, labels[:, None], -1)[:, 0]
    zt = jnp.take_along_axis(z, targets[:, None], -1)[:, 0]
    return -(zy - zt) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


def target_classes(logits: jax.Array, rank: int) -> jax.Array:
    """The class with the ``rank``-th highest logit, int ``[B]`` (reference: ``sort(dim=1)[1][:, -rank]``;
    ``rank`` 2 is the most likely wrong class of a correctly classified example)."""
    return jnp.argsort(logits, axis=-1)[:, -rank].astype(jnp.int32)


def _bshape(x):
    return (-1,) + (1,) * (x.ndim - 1)


def _l2(v):
    return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), -1)).reshape(_bshape(v))


def _normalize(v, norm):
    """The reference's ``normalize``: v / (‖v‖ + 10⁻¹²) per example."""
    if norm == "linf":
        t = jnp.max(jnp.abs(v.reshape(v.shape[0], -1)), -1).reshape(_bshape(v))
    else:
        t = _l2(v)
    return v / (t + 1e-12)


def _project(z, x, eps, norm):
    if norm == "linf":
        return jnp.clip(jnp.minimum(jnp.maximum(z, x - eps), x + eps), 0.0, 1.0)
    return jnp.clip(x + _normalize(z - x, norm) * jnp.minimum(eps, _l2(z - x)), 0.0, 1.0)


def start(keys: jax.Array, x: jax.Array, *, eps: float, norm: str = "linf") -> jax.Array:
    """The reference's random start, one key per example: ``clip(x + ε·normalize(t), 0, 1)`` with t uniform
    in [−1, 1] (ℓ∞) or standard Gaussian (ℓ2).

    Args:
      keys: PRNG keys ``[B]`` (``jax.random.split(key, B)``, or one per example index).
      x: clean images float32 ``[B, H, W, C]`` in [0, 1]; ``eps`` in pixel units.
    """
    if norm == "linf":
        t = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], jnp.float32, -1.0, 1.0))(keys)
    else:
        t = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], jnp.float32))(keys)
    return jnp.clip(x + eps * _normalize(t, norm), 0.0, 1.0)


def _check(norm, loss, targets, n_iter):
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {NORMS}")
    if isinstance(loss, str) and loss not in LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; valid: {LOSSES}")
    if (loss == "dlr_t" or not isinstance(loss, str)) and targets is None:
        raise ValueError("loss='dlr_t' (APGD-T) and a per-example loss code need targets")
    schedule(n_iter)


def _evaluate(logits_fn, z, labels, targets, loss, eot_iter):
    """Loss per example, logits and the input gradient (averaged over ``eot_iter`` evaluations)."""
    def total(u):
        logits = logits_fn(u)
        if not isinstance(loss, str):  # a code per example into LOSSES: one program for APGD-CE, -DLR and -T
            value = cross_entropy(logits, labels)
            if logits.shape[-1] >= 4:  # DLR needs 3 classes, its targeted form 4 (the driver checks)
                value = jnp.select([loss == 1, loss == 2], [dlr_loss(logits, labels),
                                                            dlr_targeted_loss(logits, labels, targets)], value)
        elif loss == "ce":
            value = cross_entropy(logits, labels)
        elif loss == "dlr":
            value = dlr_loss(logits, labels)
        else:
            value = dlr_targeted_loss(logits, labels, targets)
        return jnp.sum(value), (value, logits)
    grad = jnp.zeros_like(z)
    for _ in range(eot_iter):
        (_, (value, logits)), g = jax.value_and_grad(total, has_aux=True)(z)
        grad = grad + g
    return value, logits, grad / float(eot_iter)


def pending(x: jax.Array, x_init: jax.Array, *, eps: float, n_iter: int = 100) -> dict:
    """The APGD state *before* the start is evaluated (no model call): ``i = -1``, ``x_adv = clip(x_init)``.

    The first :func:`step` on it evaluates the start (no move) and sets what :func:`init` sets, so a driver
    compiles one program, :func:`step`, for the whole run (the start and every iteration share its forward
    and backward pass).  ``x``: the clean images (for shapes); ``x_init``: float32 ``[B, H, W, C]``.
    """
    x_adv = jnp.clip(x_init.astype(jnp.float32), 0.0, 1.0)
    b = x.shape[0]
    zero = jnp.zeros((b,), jnp.float32)
    return dict(x_adv=x_adv, x_adv_old=x_adv, grad=jnp.zeros_like(x_adv), x_best=x_adv, grad_best=jnp.zeros_like(x_adv),
                x_best_adv=x_adv, loss_best=zero, loss_best_last_check=zero, reduced_last_check=jnp.ones((b,), bool),
                step_size=jnp.full((b,), 2.0 * eps, jnp.float32), loss_steps=jnp.zeros((b, n_iter), jnp.float32),
                acc=jnp.ones((b,), bool), i=jnp.full((b,), -1, jnp.int32), zero_grad=jnp.zeros((b,), bool))


def init(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, x_init: jax.Array, *, eps: float,
         n_iter: int = 100, norm: str = "linf", loss: str | jax.Array = "ce", targets: jax.Array | None = None,
         eot_iter: int = 1) -> dict:
    """The APGD state after evaluating the start ``x_init`` (``float32 [B, H, W, C]``, e.g. :func:`start`):
    :func:`step` of :func:`pending`.

    Every leaf has the batch as its leading axis (so the whole state shards over the batch): ``x_adv``,
    ``x_adv_old``, ``grad``, ``x_best``, ``grad_best``, ``x_best_adv`` ``[B, H, W, C]``; ``loss_best``,
    ``loss_best_last_check``, ``reduced_last_check``, ``step_size`` float32 ``[B]``; ``loss_steps``
    ``[B, n_iter]``; ``acc`` bool ``[B]`` (no iterate misclassified yet); ``i`` int32 ``[B]`` (iterations
    done; -1 before the start is evaluated); ``zero_grad`` bool ``[B]`` (zero gradient at the start: the
    reference's DLR warning).

    Raises:
      ValueError: unknown ``norm``/``loss``, ``dlr_t`` without ``targets``, ``n_iter < 1``.
    """
    _check(norm, loss, targets, n_iter)
    return step(logits_fn, pending(x, x_init, eps=eps, n_iter=n_iter), x, labels, eps=eps, n_iter=n_iter,
                norm=norm, loss=loss, targets=targets, eot_iter=eot_iter)


def step(logits_fn: LogitsFn, state: dict, x: jax.Array, labels: jax.Array, *, eps: float, n_iter: int = 100,
         norm: str = "linf", loss: str | jax.Array = "ce", targets: jax.Array | None = None, rho: float = 0.75,
         eot_iter: int = 1) -> dict:
    """One APGD iteration (reference ``attack_single_run``, loop body): state → state (see :func:`init`);
    on a :func:`pending` row (``i = -1``) the evaluation of its start instead."""
    s = dict(state)
    i = s["i"]
    bshape = _bshape(x)
    first = i < 0
    grad2 = s["x_adv"] - s["x_adv_old"]
    x_adv = s["x_adv"]
    a = jnp.where(i > 0, 0.75, 1.0).reshape(bshape)
    step_size = s["step_size"].reshape(bshape)
    if norm == "linf":
        x1 = _project(x_adv + step_size * jnp.sign(s["grad"]), x, eps, norm)
    else:
        x1 = _project(x_adv + step_size * _normalize(s["grad"], norm), x, eps, norm)
    x1 = x_adv + (x1 - x_adv) * a + grad2 * (1.0 - a)
    x_new = jnp.where(first.reshape(bshape), x_adv, _project(x1, x, eps, norm))
    value, logits, grad = _evaluate(logits_fn, x_new, labels, targets, loss, eot_iter)
    pred = jnp.argmax(logits, -1) == labels
    started = dict(x_adv=x_new, x_adv_old=x_new, grad=grad, x_best=x_new, grad_best=grad, x_best_adv=x_new,
                   loss_best=value, loss_best_last_check=value, reduced_last_check=s["reduced_last_check"],
                   step_size=s["step_size"], loss_steps=s["loss_steps"], acc=pred, i=i + 1,
                   zero_grad=jnp.sum(jnp.abs(grad.reshape(grad.shape[0], -1)), -1) == 0)
    s.update(x_adv_old=x_adv, x_adv=x_new, grad=grad, acc=s["acc"] & pred,
             x_best_adv=jnp.where((~pred).reshape(bshape), x_new, s["x_best_adv"]))
    cols = jnp.arange(n_iter)
    s["loss_steps"] = jnp.where(cols[None, :] == i[:, None], value[:, None], s["loss_steps"])
    better = value > s["loss_best"]
    s.update(x_best=jnp.where(better.reshape(bshape), x_new, s["x_best"]),
             grad_best=jnp.where(better.reshape(bshape), grad, s["grad_best"]),
             loss_best=jnp.where(better, value, s["loss_best"]))
    # Checkpoint after iteration i (0-based) where (i + 1, k) is in the schedule.
    is_check, window = np.zeros(n_iter, bool), np.zeros(n_iter, np.int32)
    for w, k in schedule(n_iter):
        is_check[w - 1], window[w - 1] = True, k
    check, k = jnp.asarray(is_check)[jnp.maximum(i, 0)], jnp.asarray(window)[jnp.maximum(i, 0)]
    # check_oscillation: #{c < k : L[i − c] > L[i − c − 1]} over the stored losses, indices mod n_iter.
    steps_ = s["loss_steps"]
    rises = steps_ > jnp.roll(steps_, 1, axis=1)  # rises[:, m] = L[m] > L[m − 1 mod n]
    in_window = ((i[:, None] - cols[None, :]) % n_iter) < k[:, None]
    count = jnp.sum(rises & in_window, -1).astype(jnp.float32)
    oscillation = count <= k.astype(jnp.float32) * rho
    no_progress = ~s["reduced_last_check"] & (s["loss_best_last_check"] >= s["loss_best"])
    halve = check & (oscillation | no_progress)
    hb = halve.reshape(bshape)
    s.update(reduced_last_check=jnp.where(check, halve, s["reduced_last_check"]),
             loss_best_last_check=jnp.where(check, s["loss_best"], s["loss_best_last_check"]),
             step_size=jnp.where(halve, s["step_size"] / 2.0, s["step_size"]),
             x_adv=jnp.where(hb, s["x_best"], s["x_adv"]), grad=jnp.where(hb, s["grad_best"], s["grad"]),
             i=i + 1)
    return {k: jnp.where(first.reshape((-1,) + (1,) * (v.ndim - 1)), started[k], v) for k, v in s.items()}


def result(state: dict) -> tuple[jax.Array, jax.Array]:
    """``(x_adv [B, H, W, C], robust bool [B])``: the last misclassified iterate where one was, else the
    highest-loss point; True where no iterate was misclassified (including the start)."""
    robust = state["acc"]
    return jnp.where(robust.reshape(_bshape(state["x_adv"])), state["x_best"], state["x_best_adv"]), robust


def apgd(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, key: jax.Array | None, *, eps: float,
         n_iter: int = 100, norm: str = "linf", loss: str | jax.Array = "ce", targets: jax.Array | None = None,
         rho: float = 0.75, x_init: jax.Array | None = None, eot_iter: int = 1, return_trace: bool = False):
    """One APGD run: :func:`start` (or ``x_init``), :func:`init`, ``n_iter`` × :func:`step` in a ``lax.scan``.

    Args:
      logits_fn: ``[B, H, W, C] float in [0,1] -> [B, K]`` logits (e.g. BN in evaluation mode).
      x: clean images float32 ``[B, H, W, C]`` in [0, 1]; ``labels`` int ``[B]``.
      key: PRNG key of the random start (split into one key per example); unused with ``x_init``.
      eps: radius in [0,1] pixel units (ℓ∞: 8/255; ℓ2: 0.5).
      n_iter: iterations N (AutoAttack: 100); ``norm`` ``"linf"`` or ``"l2"``.
      loss: ``"ce"`` (APGD-CE), ``"dlr"`` (APGD-DLR) or ``"dlr_t"`` (APGD-T; needs ``targets`` int ``[B]``,
        see :func:`target_classes`) — the reference's ``ce``, ``dlr``, ``dlr-targeted``; or an int32 ``[B]``
        array of indices into :data:`LOSSES`, one loss per example (with ``targets``; the labels where
        untargeted): one compiled program serves every APGD variant (:class:`~rwsjax.attacks.autoattack.AutoAttack`).
      rho: condition-1 fraction (0.75).  ``eot_iter``: gradients averaged per iterate (the reference's EOT;
        the same gradient each time for a deterministic model).
      return_trace: also return per-iteration ``losses [n_iter, B]``, ``steps [n_iter + 1, B]`` (the step
        size in force before each iteration and at the end) and ``loss_best [B]`` (start included).

    Returns:
      ``(x_adv, robust)`` as :func:`result` (float32 in the ε-ball ∩ [0, 1]; bool); with ``return_trace``
      ``(x_adv, robust, trace)``.

    Raises:
      ValueError: unknown ``norm``/``loss``, ``dlr_t`` without ``targets``, or ``n_iter < 1``.
    """
    _check(norm, loss, targets, n_iter)
    x = x.astype(jnp.float32)
    if x_init is None:
        x_init = start(jax.random.split(key, x.shape[0]), x, eps=eps, norm=norm)
    kw = dict(eps=eps, n_iter=n_iter, norm=norm, loss=loss, targets=targets, eot_iter=eot_iter)
    s0 = init(logits_fn, x, labels, x_init, **kw)

    def body(s, _):
        step_before = s["step_size"]
        s = step(logits_fn, s, x, labels, rho=rho, **kw)
        return s, step_before

    s, steps_before = jax.lax.scan(body, s0, None, length=n_iter)
    x_adv, robust = result(s)
    if return_trace:
        trace = {"losses": s["loss_steps"].T, "steps": jnp.concatenate([steps_before, s["step_size"][None]]),
                 "loss_best": s["loss_best"]}
        return x_adv, robust, trace
    return x_adv, robust


__all__ = ["LOSSES", "apgd", "checkpoints", "dlr_loss", "dlr_targeted_loss", "init", "pending", "result", "schedule",
           "start", "step", "target_classes"]
