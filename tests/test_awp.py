"""Adversarial weight perturbation (Wu et al. 2020): the perturbation's definition and the AWP step."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rwsjax.train import awp, sharding, steps
from rwsjax.train.state import TrainState, sgd


def test_perturbation_by_hand():
    w = {"conv": {"kernel": jnp.full((1, 1, 2, 2), 2.0)}, "bn": {"scale": jnp.ones(2)},
         "linear": {"kernel": jnp.array([[3.0, 4.0]]), "bias": jnp.ones(2)}}
    g = {"conv": {"kernel": jnp.array([[[[1.0, 0.0], [0.0, 0.0]]]])}, "bn": {"scale": jnp.ones(2)},
         "linear": {"kernel": jnp.array([[0.0, -2.0]]), "bias": jnp.ones(2)}}
    v = awp.perturbation(w, g, 0.01)
    chex.assert_trees_all_equal_shapes_and_dtypes(v, w)
    # ‖w_conv‖ = 4, g/‖g‖ = e_1 → v = 0.04·e_1;  ‖w_linear‖ = 5, g/‖g‖ = (0, −1) → v = (0, −0.05).
    np.testing.assert_allclose(v["conv"]["kernel"], 0.04 * np.array([[[[1.0, 0.0], [0.0, 0.0]]]]), rtol=1e-6)
    np.testing.assert_allclose(v["linear"]["kernel"], [[0.0, -0.05]], rtol=1e-6)
    # Biases and BatchNorm (1-D leaves) are never perturbed; γ = 0 perturbs nothing; g = 0 gives v = 0.
    chex.assert_trees_all_equal(v["bn"]["scale"], jnp.zeros(2))
    chex.assert_trees_all_equal(v["linear"]["bias"], jnp.zeros(2))
    chex.assert_trees_all_equal(awp.perturbation(w, g, 0.0), jax.tree.map(jnp.zeros_like, w))
    zero = awp.perturbation(w, jax.tree.map(jnp.zeros_like, g), 0.01)
    assert bool(jnp.all(jnp.isfinite(zero["conv"]["kernel"]))) and float(jnp.abs(zero["conv"]["kernel"]).max()) == 0


def test_perturbation_is_relative_size_gamma():
    rng = np.random.default_rng(0)
    w = {"k": jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)}
    g = {"k": jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)}
    v = jax.jit(awp.perturbation)(w, g, 5e-3)
    np.testing.assert_allclose(jnp.linalg.norm(v["k"]), 5e-3 * jnp.linalg.norm(w["k"]), rtol=1e-5)
    cos = jnp.vdot(v["k"], g["k"]) / (jnp.linalg.norm(v["k"]) * jnp.linalg.norm(g["k"]))
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)  # along the ascent direction


@pytest.fixture(scope="module")
def one_batch(tiny_resnet, cifar_test_batch):
    model, variables = tiny_resnet
    mesh = sharding.make_mesh(jax.devices()[:1])
    x, y = sharding.shard_batch((cifar_test_batch[0][:32], cifar_test_batch[1][:32]), mesh)
    return model, variables, mesh, x, y


def _step(model, variables, mesh, x, y, **kw):
    tx = sgd(0.1, momentum=0.9, weight_decay=5e-4, steps_per_epoch=1)
    attack = dict(eps=8 / 255, step_size=2 / 255, steps=1, norm="linf", random_init=True, unroll=True)
    step = steps.make_train_step(model, tx, mesh, attack=attack, attack_bn="eval", augment=False, **kw)
    state = sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)
    state, m = step(state, x, y, jax.random.PRNGKey(0))
    return jax.device_get(state), float(m["loss"])


def test_awp_step_matches_its_definition(one_batch):
    """AT-AWP's update equals, computed by hand: x' by the same PGD, v = γ‖w‖g/‖g‖ from ∇ of the CE on x'
    at w, then the SGD update with ∇ of the CE on x' at w + v (weight decay on w + v), applied to w."""
    model, variables, mesh, x, y = one_batch
    gamma = 1e-2
    got, _ = _step(model, variables, mesh, x, y, regime="pgd_at", awp_gamma=gamma)

    params, stats = variables["params"], variables["batch_stats"]
    xf = x.astype(jnp.float32) / 255.0
    _, k_adv = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(0), 0))  # the step folds in state.step
    from rwsjax.attacks import pgd
    fn = steps.eval_logits_fn(model, variables)
    x_adv = pgd.pgd(fn, xf, y, k_adv, eps=8 / 255, step_size=2 / 255, steps=1, norm="linf", random_init=True,
                    unroll=True)

    def ce(p):
        logits, _ = model.apply({"params": p, "batch_stats": stats}, x_adv, train=True, mutable=["batch_stats"])
        return jnp.mean(pgd.cross_entropy(logits, y))

    perturbed = jax.tree.map(jnp.add, params, awp.perturbation(params, jax.grad(ce)(params), gamma))
    g = jax.grad(ce)(perturbed)
    expected = jax.tree.map(lambda w, wp, gi: w - 0.1 * (gi + 5e-4 * wp), params, perturbed, g)
    chex.assert_trees_all_close(got.params, expected, atol=2e-5, rtol=1e-4)


def test_awp_warmup_and_zero_gamma_reduce_to_the_regime(one_batch):
    model, variables, mesh, x, y = one_batch
    plain, _ = _step(model, variables, mesh, x, y, regime="trades", beta=6.0)
    warm, _ = _step(model, variables, mesh, x, y, regime="trades", beta=6.0, awp_gamma=5e-3, awp_warmup_steps=1)
    chex.assert_trees_all_close(warm.params, plain.params, atol=1e-6)
    awp_on, _ = _step(model, variables, mesh, x, y, regime="trades", beta=6.0, awp_gamma=5e-3)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(awp_on.params),
                                                          jax.tree.leaves(plain.params)))
    assert diff > 1e-6  # the perturbation changes the update once the warm-up is over


def test_awp_needs_an_adversarial_regime(one_batch):
    model, _, mesh, _, _ = one_batch
    with pytest.raises(ValueError, match="adversarial"):
        steps.make_train_step(model, optax.sgd(0.1), mesh, regime="standard", awp_gamma=1e-2)
