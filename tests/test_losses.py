"""Adversarial-training objectives checked against hand computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.train import losses


def _p(z):
    e = np.exp(np.asarray(z, np.float64) - np.max(z))
    return e / e.sum()


def test_kl_by_hand_and_zero_on_equal_inputs():
    a, b = np.array([1.0, 0.0, -1.0]), np.array([0.0, 2.0, 0.0])
    p, q = _p(a), _p(b)
    np.testing.assert_allclose(losses.kl_divergence(jnp.array([a]), jnp.array([b])), [np.sum(p * np.log(p / q))],
                               rtol=1e-5)
    np.testing.assert_allclose(losses.kl_divergence(jnp.array([a]), jnp.array([a])), [0.0], atol=1e-7)


def test_trades_by_hand():
    nat, adv, y = np.array([2.0, 0.5, -1.0]), np.array([0.5, 1.5, 0.0]), 0
    p, q = _p(nat), _p(adv)
    expected = -np.log(p[y]) + 6.0 * np.sum(p * np.log(p / q))
    got = losses.trades_loss(jnp.array([nat]), jnp.array([adv]), jnp.array([y]), beta=6.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # β = 0 is the natural cross-entropy; x' = x gives no robust term.
    np.testing.assert_allclose(losses.trades_loss(jnp.array([nat]), jnp.array([nat]), jnp.array([y]), 6.0),
                               -np.log(p[y]), rtol=1e-5)


def test_mart_by_hand():
    nat, adv, y = np.array([2.0, 0.5, -1.0]), np.array([0.5, 1.5, 0.0]), 0
    p, q = _p(nat), _p(adv)
    rival = 1  # the most likely wrong class under x'
    bce = -np.log(q[y]) - np.log(1.0001 - q[rival] + 1e-12)
    kl = np.sum(p * (np.log(p) - np.log(q + 1e-12)))
    expected = bce + 6.0 * kl * (1.0000001 - p[y])
    got = losses.mart_loss(jnp.array([nat]), jnp.array([adv]), jnp.array([y]), beta=6.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_score_by_hand():
    nat, adv, y = np.array([2.0, 0.5, -1.0]), np.array([0.5, 1.5, 0.0]), 0
    p, q = _p(nat), _p(adv)
    e = np.eye(3)[y]
    expected = np.sum((p - e) ** 2) + 4.0 * np.sum((q - p) ** 2)
    got = losses.score_loss(jnp.array([nat]), jnp.array([adv]), jnp.array([y]), beta=4.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(losses.squared_error(jnp.array([nat]), jnp.array([adv])), [np.sum((q - p) ** 2)],
                               rtol=1e-5)
    # A symmetric distance, unlike the KL, and bounded by 2 (two probability vectors).
    np.testing.assert_allclose(losses.squared_error(jnp.array([adv]), jnp.array([nat])),
                               losses.squared_error(jnp.array([nat]), jnp.array([adv])), rtol=1e-6)
    assert float(losses.squared_error(jnp.array([[50.0, 0, 0]]), jnp.array([[0, 50.0, 0]]))[0]) <= 2.0


@pytest.mark.parametrize("fn", [losses.trades_loss, losses.mart_loss, losses.score_loss])
def test_losses_are_differentiable_and_batch_means(fn):
    rng = np.random.default_rng(0)
    nat, adv = (jnp.asarray(rng.normal(size=(4, 10)), jnp.float32) for _ in range(2))
    y = jnp.asarray([0, 3, 9, 1])
    whole = fn(nat, adv, y, 6.0)
    halves = (fn(nat[:2], adv[:2], y[:2], 6.0) + fn(nat[2:], adv[2:], y[2:], 6.0)) / 2
    np.testing.assert_allclose(whole, halves, rtol=1e-5)
    g = jax.grad(lambda z: fn(z, adv, y, 6.0))(nat)
    assert bool(jnp.all(jnp.isfinite(g)))
