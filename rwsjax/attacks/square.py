"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search"), ℓ∞ and ℓ2, in JAX — the reference implementation's
algorithm (fra31/auto-attack ``square.py``, ``attack_single_run``, ``loss='margin'``, AutoAttack's
``p_init=0.8`` and ``resc_schedule=False``).

Random search on the margin z_y − max_{j≠y} z_j; a candidate is kept if the margin went down or the point is
misclassified.  An example stops once misclassified (margin ≤ 0); the budget is ``n_queries`` iterations
after the start's query.  p_i is the reference's schedule :func:`p_selection`.

- ℓ∞ (paper Alg. 2): start from vertical stripes x + ε·s (one sign per column and channel); at query i a
  square of side ``min(max(round(√(p_i·H·W)), 1), min(H, W))`` at a random position is set, per channel, to
  ±2ε around the current best point, projected to the ε-ball ∩ [0, 1].
- ℓ2 (paper Alg. 3, the reference's ``norm == 'L2'`` branch): start from a 5 × 5 grid of ``H // 5`` tiles,
  each the reference's ``eta`` pattern (two opposite-signed halves of nested rectangles weighted 1/(k+1)²,
  unit norm, transposed with probability ½) times a random sign per channel, rescaled to ‖δ‖₂ = ε; at
  query i the side is ``min(max(round(√(p_i·H·W)), 3) rounded up to odd, min(H, W))``: a second window's
  perturbation is removed and the first window's is replaced (per channel) by a fresh ±``eta`` plus its old
  direction, with the mass sqrt((ε² − ‖δ‖²)₊ / C + ‖δ on both windows‖²); δ is rescaled to ‖δ‖₂ = ε and
  x + δ clipped to [0, 1] (so ‖x_adv − x‖₂ ≤ ε).

Randomness: the reference draws one window position, sign pattern and ``eta`` transposition per iteration for
the whole batch from PyTorch's generator; here every example draws its own from its own key (``fold_in(key,
i)``), so an example's attack does not depend on the rest of the batch (the same distribution per example).

Parts (pure; :mod:`rwsjax.attacks.autoattack` runs them): :func:`init` (= :func:`start` of :func:`start_draws`
and its query), :func:`step` (= :func:`candidate` of :func:`window_side` and :func:`draws`, its query and the
acceptance), :func:`done`, :func:`result`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

LogitsFn = Callable[[jax.Array], jax.Array]

#: The reference ``p_selection`` thresholds (``resc_schedule=False``): p = p_init / divisor for it in (lo, hi].
_SCHEDULE = ((10, 50, 2), (50, 200, 4), (200, 500, 8), (500, 1000, 16), (1000, 2000, 32), (2000, 4000, 64),
             (4000, 6000, 128), (6000, 8000, 256))


def p_selection(it: jax.Array, p_init: float = 0.8) -> jax.Array:
    """The fraction of pixels the square covers at iteration ``it`` (reference ``p_selection``)."""
    p = jnp.full(jnp.shape(it), p_init, jnp.float32)
    for lo, hi, div in _SCHEDULE:
        p = jnp.where((it > lo) & (it <= hi), p_init / div, p)
    return jnp.where(it > 8000, p_init / 512, p)


def _margin(logits_fn, x, labels):
    z = logits_fn(x).astype(jnp.float32)
    zy = jnp.take_along_axis(z, labels[:, None], 1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(labels, z.shape[-1], dtype=bool), -jnp.inf, z), -1)
    return zy - other


def _signs(key, shape):
    return jnp.sign(2 * jax.random.uniform(key, shape) - 1)


def _eta_rectangles(x: int, y: int) -> np.ndarray:
    """The reference's ``eta_rectangles`` for ℓ2 (float32 [x, y]): nested rectangles around the centre, the
    k-th weighted 1/(k+1)², unit Frobenius norm."""
    delta = np.zeros((x, y), np.float32)
    x_c, y_c = x // 2 + 1, y // 2 + 1
    c0, c1 = x_c - 1, y_c - 1
    for counter in range(max(x_c, y_c)):
        delta[max(c0, 0):min(c0 + 2 * counter + 1, x), max(0, c1):min(c1 + 2 * counter + 1, y)] += \
            np.float32(1.0) / np.float32(counter + 1) ** 2
        c0, c1 = c0 - 1, c1 - 1
    return delta / np.sqrt(np.sum(delta ** 2, dtype=np.float32))


def eta(s: int) -> np.ndarray:
    """The reference's ℓ2 ``eta(s)`` (float32 [s, s], unit norm) before its random transposition: the top
    ``s // 2`` rows ``eta_rectangles(s // 2, s)``, the rest minus ``eta_rectangles(s − s // 2, s)``."""
    delta = np.zeros((s, s), np.float32)
    if s // 2:
        delta[:s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2:] = -_eta_rectangles(s - s // 2, s)
    return delta / np.sqrt(np.sum(delta ** 2, dtype=np.float32))


def _eta_table(n: int) -> jax.Array:
    """float32 [n + 1, n, n]: ``eta(s)`` in the top-left corner of slice s (s = 1..n; slice 0 is zeros)."""
    table = np.zeros((n + 1, n, n), np.float32)
    for s in range(1, n + 1):
        table[s, :s, :s] = eta(s)
    return jnp.asarray(table)


def _window(h, w, vh, vw, side):
    """bool [B, H, W, 1]: the square of side ``side`` [B] at rows vh.., columns vw.. [B]."""
    rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    return ((rows >= vh[:, None, None]) & (rows < (vh + side)[:, None, None])
            & (cols >= vw[:, None, None]) & (cols < (vw + side)[:, None, None]))[..., None]


def _place_eta(table, h, w, vh, vw, side, transpose):
    """float32 [B, H, W, 1]: ``eta(side)`` (transposed where ``transpose`` [B]) at (vh, vw), zero elsewhere."""
    n = table.shape[-1]
    r = jnp.clip(jnp.arange(h)[None, :, None] - vh[:, None, None], 0, n - 1)
    c = jnp.clip(jnp.arange(w)[None, None, :] - vw[:, None, None], 0, n - 1)
    t = transpose[:, None, None]
    r, c = jnp.where(t, c, r), jnp.where(t, r, c)
    pattern = table[side[:, None, None], r, c]
    return jnp.where(_window(h, w, vh, vw, side), pattern[..., None], 0.0)


def _l2(v):
    """‖v‖₂ per example, [B, 1, 1, 1]."""
    return jnp.sqrt(jnp.sum(v * v, axis=(1, 2, 3), keepdims=True))


def _tiles(h, w):
    """The reference's ℓ2 start grid: tile side ``H // 5`` and the tiles' top-left corners."""
    s = h // 5
    sp = (h - s * 5) // 2
    return s, [(sp + i * s, sp + j * s) for i in range(h // s) for j in range(w // s)]


def start_draws(keys: jax.Array, shape: tuple, norm: str) -> dict:
    """The random draws of the start, per example (``keys`` [B], ``shape`` = (B, H, W, C)): ℓ∞ ``stripes``
    ±1 ``[B, 1, W, C]``; ℓ2 per tile ``transpose`` bool ``[B, T]`` and ``sign`` ±1 ``[B, T, 1, 1, C]``."""
    _, h, w, c = shape
    if norm == "linf":
        return dict(stripes=jax.vmap(lambda k: _signs(jax.random.fold_in(k, 2**31 - 1), (1, w, c)))(keys))
    n = len(_tiles(h, w)[1])

    def draw(key):
        k = jax.random.split(jax.random.fold_in(key, 2**31 - 2), 2 * n)
        return (jnp.stack([jax.random.uniform(k[2 * t]) > 0.5 for t in range(n)]),
                jnp.stack([_signs(k[2 * t + 1], (1, 1, c)) for t in range(n)]))

    transpose, sign = jax.vmap(draw)(keys)
    return dict(transpose=transpose, sign=sign)


def start(x: jax.Array, d: dict, *, eps: float, norm: str) -> jax.Array:
    """The starting point ``[B, H, W, C]`` from :func:`start_draws` ``d`` (reference ``attack_single_run``):
    ℓ∞ clip(x + ε·stripes); ℓ2 clip(x + ε·normalize(Σ_tiles eta(H // 5)·sign)), both clipped to [0, 1]."""
    if norm == "linf":
        return jnp.clip(x + eps * d["stripes"], 0.0, 1.0)
    b, h, w, c = x.shape
    s, tiles = _tiles(h, w)
    table = _eta_table(max(s, 1))
    full = lambda v: jnp.full((b,), v, jnp.int32)  # noqa: E731
    delta = jnp.zeros_like(x)
    for t, (vh, vw) in enumerate(tiles):
        delta = delta + _place_eta(table, h, w, full(vh), full(vw), full(s), d["transpose"][:, t]) * d["sign"][:, t]
    return jnp.clip(x + delta / (_l2(delta) + 1e-12) * eps, 0.0, 1.0)


def init(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, keys: jax.Array, *, eps: float,
         norm: str = "linf") -> dict:
    """The Square state after the start's query.

    Args:
      logits_fn: ``[B, H, W, C]`` float32 in [0, 1] → logits ``[B, K]``.
      x: clean images ``[B, H, W, C]`` in [0, 1]; labels: int ``[B]``; keys: one PRNG key per example ``[B]``.
      eps: the radius on the [0, 1] pixel scale (ℓ∞: per pixel; ℓ2: of the whole image).
      norm: ``"linf"`` or ``"l2"``.

    Returns:
      ``x_best`` ``[B, H, W, C]``, ``margin_min`` (= the margin loss) ``[B]``, ``n_queries`` int32 ``[B]``
      (queries used), ``i`` int32 ``[B]`` (iterations done), ``keys``.

    Raises:
      ValueError: ``norm`` other than ``"linf"`` or ``"l2"``.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"Square Attack is implemented for norm='linf' and 'l2', got {norm!r}")
    x = x.astype(jnp.float32)
    x_best = start(x, start_draws(keys, x.shape, norm), eps=eps, norm=norm)
    margin = _margin(logits_fn, x_best, labels)
    b = x.shape[0]
    return dict(x_best=x_best, margin_min=margin, n_queries=jnp.ones((b,), jnp.int32),
                i=jnp.zeros((b,), jnp.int32), keys=keys)


def window_side(i: jax.Array, h: int, w: int, *, norm: str, p_init: float = 0.8) -> jax.Array:
    """int32 side of the square at iteration ``i`` [B] (reference: ℓ∞ ``max(round(√(p·H·W)), 1)``; ℓ2
    ``max(…, 3)`` made odd; both at most ``min(H, W)``)."""
    side = jnp.round(jnp.sqrt(p_selection(i, p_init) * h * w)).astype(jnp.int32)
    if norm == "linf":
        side = jnp.maximum(side, 1)
    else:
        side = jnp.maximum(side, 3)
        side = side + (side % 2 == 0)
    return jnp.minimum(side, min(h, w))


def draws(keys: jax.Array, i: jax.Array, side: jax.Array, shape: tuple, norm: str) -> dict:
    """The random draws of iteration ``i`` [B] per example from ``fold_in(key, i)``: window corners ``vh``,
    ``vw`` int32 [B] (the reference's ``random_int(0, H − s)``), ``sign`` ±1 ``[B, 1, 1, C]``; ℓ2 also the
    second window ``vh2``, ``vw2`` and ``transpose`` bool [B] (``eta``'s coin)."""
    _, h, w, c = shape

    def draw(key, it, sd):
        k = jax.random.split(jax.random.fold_in(key, it), 6)
        pos = lambda j, d: jnp.floor(jax.random.uniform(k[j]) * (d - sd)).astype(jnp.int32)  # noqa: E731
        out = dict(vh=pos(0, h), vw=pos(1, w), sign=_signs(k[5], (1, 1, c)))
        if norm == "l2":
            out.update(vh2=pos(2, h), vw2=pos(3, w), transpose=jax.random.uniform(k[4]) > 0.5)
        return out

    return jax.vmap(draw)(keys, i, side)


def candidate(x_best: jax.Array, x: jax.Array, side: jax.Array, d: dict, *, eps: float, norm: str) -> jax.Array:
    """The point ``[B, H, W, C]`` queried at one iteration from the current best ``x_best``, the clean ``x``,
    the window ``side`` [B] and the :func:`draws` ``d`` (reference ``attack_single_run``, one loop body)."""
    h, w, c = x.shape[1:]
    m1 = _window(h, w, d["vh"], d["vw"], side)
    if norm == "linf":
        x_new = jnp.where(m1, x_best + 2.0 * eps * d["sign"], x_best)
        return jnp.clip(jnp.minimum(jnp.maximum(x_new, x - eps), x + eps), 0.0, 1.0)
    m2 = _window(h, w, d["vh2"], d["vw2"], side)
    delta = x_best - x
    spatial = lambda v: jnp.sqrt(jnp.sum(v * v, axis=(1, 2), keepdims=True))  # noqa: E731  [B, 1, 1, C]
    norm_window_1 = spatial(jnp.where(m1, delta, 0.0))
    norm_windows = spatial(jnp.where(m1 | m2, delta, 0.0))
    norm_image = _l2(delta)
    new = _place_eta(_eta_table(min(h, w)), h, w, d["vh"], d["vw"], side, d["transpose"]) * d["sign"]
    new = new + jnp.where(m1, delta, 0.0) / (1e-12 + norm_window_1)
    new = new / (1e-12 + spatial(new)) * jnp.sqrt(jnp.maximum(eps ** 2 - norm_image ** 2, 0.0) / c + norm_windows ** 2)
    delta = jnp.where(m1, new, jnp.where(m2, 0.0, delta))
    return jnp.clip(x + delta / (_l2(delta) + 1e-12) * eps, 0.0, 1.0)


def step(logits_fn: LogitsFn, state: dict, x: jax.Array, labels: jax.Array, *, eps: float,
         n_queries: int = 5000, p_init: float = 0.8, norm: str = "linf") -> dict:
    """One Square iteration (one query) for every example still correctly classified and within its budget;
    the others keep their state.  Arguments as :func:`init`; returns the new state."""
    s = dict(state)
    i = s["i"]
    x = x.astype(jnp.float32)
    active = (s["margin_min"] > 0) & (i < n_queries)
    side = window_side(i, x.shape[1], x.shape[2], norm=norm, p_init=p_init)
    x_new = candidate(s["x_best"], x, side, draws(s["keys"], i, side, x.shape, norm), eps=eps, norm=norm)
    margin = _margin(logits_fn, x_new, labels)
    improved = active & ((margin < s["margin_min"]) | (margin <= 0))
    s.update(x_best=jnp.where(improved[:, None, None, None], x_new, s["x_best"]),
             margin_min=jnp.where(improved, margin, s["margin_min"]),
             n_queries=s["n_queries"] + active.astype(jnp.int32), i=i + active.astype(jnp.int32))
    return s


def done(state: dict, n_queries: int = 5000) -> jax.Array:
    """bool ``[B]``: misclassified (margin ≤ 0) or out of iterations."""
    return (state["margin_min"] <= 0) | (state["i"] >= n_queries)


def result(state: dict) -> jax.Array:
    """The best point found ``[B, H, W, C]`` (misclassified where the attack succeeded)."""
    return state["x_best"]


__all__ = ["candidate", "done", "draws", "eta", "init", "p_selection", "result", "start", "start_draws", "step",
           "window_side"]
