"""PGD (Madry et al. 2018): the ε-ball and [0,1] invariants, and that it raises the loss on real images."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.attacks import pgd as pgd_lib
from rwsjax.train.steps import eval_logits_fn

EPS = 8 / 255


def _x(batch):
    return jnp.asarray(batch[0], jnp.float32) / 255.0, jnp.asarray(batch[1])


@pytest.mark.parametrize("norm,eps,step", [("linf", EPS, 2 / 255), ("l2", 0.5, 0.125)])
@pytest.mark.parametrize("unroll", [True, False])
def test_pgd_stays_in_ball_and_raises_loss(trained_tiny_resnet, cifar_test_batch, norm, eps, step, unroll):
    model, variables = trained_tiny_resnet
    x, y = _x(cifar_test_batch)
    fn = eval_logits_fn(model, variables)
    x_adv = jax.jit(lambda k: pgd_lib.pgd(fn, x, y, k, eps=eps, step_size=step, steps=5, norm=norm,
                                          unroll=unroll))(jax.random.PRNGKey(0))
    chex.assert_shape(x_adv, x.shape)
    chex.assert_type(x_adv, jnp.float32)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    d = np.asarray(x_adv - x).reshape(len(x), -1)
    if norm == "linf":
        assert np.abs(d).max() <= eps + 1e-6
    else:
        assert np.linalg.norm(d, axis=1).max() <= eps + 1e-5
    clean = pgd_lib.cross_entropy(fn(x), y)
    adv = pgd_lib.cross_entropy(fn(x_adv), y)
    assert float(adv.mean()) > float(clean.mean()) + 0.1
    assert float(jnp.mean(jnp.argmax(fn(x_adv), -1) == y)) < float(jnp.mean(jnp.argmax(fn(x), -1) == y))


def test_unrolled_and_rolled_loops_agree(trained_tiny_resnet, cifar_test_batch):
    model, variables = trained_tiny_resnet
    x, y = _x(cifar_test_batch)
    fn = eval_logits_fn(model, variables)
    run = lambda unroll: jax.jit(lambda k: pgd_lib.pgd(fn, x[:16], y[:16], k, eps=EPS, step_size=2 / 255, steps=3,
                                                       unroll=unroll))(jax.random.PRNGKey(3))
    a, b = run(True), run(False)
    # Same algorithm; float reassociation may flip the sign of a near-zero gradient for a few pixels.
    assert float(jnp.mean(a == b)) > 0.95
    la, lb = (float(jnp.mean(pgd_lib.cross_entropy(fn(z), y[:16]))) for z in (a, b))
    assert abs(la - lb) <= 0.02 * abs(la)


def test_linear_model_hand_case():
    """logits = (x0, −x0): the CE gradient for label 0 is negative in x0 and zero in x1, so each ℓ∞
    step lowers x0 by the step size and leaves x1, until the ε-ball stops it."""
    w = jnp.array([[1.0, -1.0], [0.0, 0.0]])  # 2 pixels, 2 classes: logit0 = x0, logit1 = -x0
    fn = lambda z: z.reshape(z.shape[0], -1) @ w
    x = jnp.full((1, 1, 2, 1), 0.5)
    y = jnp.array([0])
    x_adv = pgd_lib.pgd(fn, x, y, None, eps=0.1, step_size=0.04, steps=1, random_init=False)
    chex.assert_trees_all_close(x_adv.reshape(-1), jnp.array([0.46, 0.5]), atol=1e-7)  # x0 -= step; x1 has 0 grad
    x_adv = pgd_lib.pgd(fn, x, y, None, eps=0.1, step_size=0.04, steps=10, random_init=False)
    chex.assert_trees_all_close(x_adv.reshape(-1), jnp.array([0.4, 0.5]), atol=1e-7)  # projected onto the ball


def test_projection_clips_to_box_and_ball():
    x = jnp.array([[0.0, 0.5, 1.0]]).reshape(1, 1, 3, 1)
    z = jnp.array([[-0.3, 0.9, 1.2]]).reshape(1, 1, 3, 1)
    chex.assert_trees_all_close(pgd_lib.project(z, x, 0.1).reshape(-1), jnp.array([0.0, 0.6, 1.0]))
    z2 = pgd_lib.project(x + 1.0, x, 0.5, "l2")
    assert float(jnp.linalg.norm((z2 - x).reshape(-1))) <= 0.5 + 1e-6


def test_restarts_are_worst_case(trained_tiny_resnet, cifar_test_batch):
    """Robust with 3 restarts ⊆ robust with each single restart, and ⊆ clean-correct."""
    model, variables = trained_tiny_resnet
    x, y = _x(cifar_test_batch)
    fn = eval_logits_fn(model, variables)
    kw = dict(eps=EPS, step_size=2 / 255, steps=2)
    key = jax.random.PRNGKey(7)
    clean, robust3, runs = pgd_lib.robust_correct(fn, x, y, key, restarts=3, per_run=True, **kw)
    chex.assert_shape(runs, (3, x.shape[0]))
    for i, k in enumerate(jax.random.split(key, 3)):  # the keys robust_correct uses for its 3 restarts
        robust1 = jnp.argmax(fn(pgd_lib.pgd(fn, x, y, k, **kw)), -1) == y
        assert not bool(jnp.any(robust3 & ~robust1))
        np.testing.assert_array_equal(runs[i], robust1)
    np.testing.assert_array_equal(robust3, clean & jnp.all(runs, axis=0))  # per example: robust to every run
    assert int(robust3.sum()) <= min(int(r.sum()) for r in runs)  # ≤ the worst whole run


def test_unknown_norm():
    with pytest.raises(ValueError, match="linf"):
        pgd_lib.pgd(lambda z: z, jnp.zeros((1, 2, 2, 1)), jnp.zeros(1, jnp.int32), None, eps=0.1, step_size=0.1,
                    steps=1, norm="l3", random_init=False)


@pytest.mark.parametrize("unroll", [True, False])
def test_iterates_and_unclipped_gaussian_start(trained_tiny_resnet, cifar_test_batch, unroll):
    """``iterates=True`` returns the points the gradients were taken at (the start, then each iterate before
    its step) next to the same result; an unclipped Gaussian start (the official TRADES/MART code) ends
    inside the ε-ball and [0, 1] all the same, and differs from the clipped one only where x + σz left [0, 1]."""
    model, variables = trained_tiny_resnet
    x, y = _x(cifar_test_batch)
    fn = eval_logits_fn(model, variables)
    key = jax.random.PRNGKey(2)
    kw = dict(eps=EPS, step_size=2 / 255, steps=3, unroll=unroll, gaussian_start=0.05)
    run = jax.jit(lambda clip, it: pgd_lib.pgd(fn, x, y, key, clip_start=clip, iterates=it, **kw), static_argnums=(0, 1))
    final, seen = run(True, True)
    chex.assert_shape(seen, (3,) + x.shape)
    np.testing.assert_array_equal(final, run(True, False))
    np.testing.assert_allclose(seen[0], jnp.clip(x + 0.05 * jax.random.normal(key, x.shape), 0, 1), atol=1e-7)
    # each recorded iterate steps to the next: one signed step from seen[i], projected, is seen[i + 1]
    # (two compilations of the same gradient may differ in the last bits, flipping the sign of a few entries:
    # at most 1 in 10,000 pixels may differ)
    g = jax.grad(lambda z: jnp.sum(pgd_lib.cross_entropy(fn(z), y)))(seen[0])
    stepped = np.asarray(pgd_lib.project(seen[0] + 2 / 255 * jnp.sign(g), x, EPS))
    assert np.mean(np.abs(np.asarray(seen[1]) - stepped) > 1e-6) < 1e-4
    unclipped, raw = run(False, True)
    start = x + 0.05 * jax.random.normal(key, x.shape)
    np.testing.assert_allclose(raw[0], start, atol=1e-7)
    assert float(raw[0].min()) < 0 or float(raw[0].max()) > 1  # the start left [0, 1] somewhere
    assert float(jnp.max(jnp.abs(unclipped - x))) <= EPS + 1e-6
    assert float(unclipped.min()) >= 0 and float(unclipped.max()) <= 1
    zero = pgd_lib.pgd(fn, x, y, key, eps=EPS, step_size=2 / 255, steps=0, gaussian_start=0.05, clip_start=False)
    np.testing.assert_allclose(zero, jnp.clip(start, 0, 1), atol=1e-7)  # clipped at the end without steps
