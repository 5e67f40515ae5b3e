"""APGD (Croce & Hein 2020): checkpoints, the step-size rule, the ε-ball, targeted DLR, and strength vs PGD."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.attacks import apgd as ap
from rwsjax.attacks.pgd import robust_correct
from rwsjax.train import steps


def test_checkpoints_follow_the_paper():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 → w_j = ⌈p_j · 100⌉ (official: 22, then −3 down to 6).
    assert ap.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert ap.checkpoints(1) == []
    with pytest.raises(ValueError):
        ap.checkpoints(0)


def test_dlr_losses_by_hand():
    z = jnp.array([[4.0, 1.0, 3.0, 0.0]])
    y = jnp.array([0])
    # untargeted: −(z_y − max_{i≠y} z_i)/(z_π1 − z_π3) = −(4 − 3)/(4 − 1)
    np.testing.assert_allclose(ap.dlr_loss(z, y), [-1 / 3], rtol=1e-6)
    # targeted at class 1: −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2) = −(4 − 1)/(4 − 0.5)
    np.testing.assert_allclose(ap.dlr_targeted_loss(z, y, jnp.array([1])), [-3 / 3.5], rtol=1e-6)
    np.testing.assert_array_equal(ap.top_targets(z, y, 2), [[2], [1]])


def test_step_size_is_halved_at_every_checkpoint_when_the_loss_never_rises():
    """A constant loss never increases, so condition 1 (fewer than ρ·window increases) holds at
    every checkpoint: η = 2ε until w_1, then ε, ε/2, … (and the iterate restarts from the best point)."""
    eps, n = 0.1, 30
    logits_fn = lambda x: jnp.zeros((x.shape[0], 3)) + 0.0 * jnp.sum(x)  # noqa: E731
    x = jnp.full((2, 2, 2, 1), 0.5)
    _, robust, trace = ap.apgd(logits_fn, x, jnp.array([0, 1]), jax.random.PRNGKey(0), eps=eps, n_iter=n,
                               return_trace=True)
    checks = ap.checkpoints(n)
    expected, step = [], 2 * eps
    for k in range(n + 1):  # trace[k] = step in force after k iterations
        if k in checks:
            step /= 2
        expected.append(step)
    np.testing.assert_allclose(trace["steps"][:, 0], expected, rtol=1e-6)
    assert robust.dtype == jnp.bool_


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_apgd_stays_in_the_ball_and_box(tiny_resnet, cifar_test_batch, norm, eps):
    model, variables = tiny_resnet
    x = jnp.asarray(cifar_test_batch[0][:16], jnp.float32) / 255.0
    y = jnp.asarray(cifar_test_batch[1][:16])
    fn = steps.eval_logits_fn(model, variables)
    for loss, targets in (("ce", None), ("dlr_t", ap.top_targets(fn(x), y, 1)[0])):
        x_adv, robust = jax.jit(lambda k: ap.apgd(fn, x, y, k, eps=eps, n_iter=12, norm=norm, loss=loss,
                                                  targets=targets))(jax.random.PRNGKey(1))
        chex.assert_shape(x_adv, x.shape)
        assert float(jnp.min(x_adv)) >= 0.0 and float(jnp.max(x_adv)) <= 1.0
        d = (x_adv - x).reshape(16, -1)
        size = jnp.max(jnp.abs(d), -1) if norm == "linf" else jnp.linalg.norm(d, axis=-1)
        assert float(jnp.max(size)) <= eps * (1 + 1e-5) + 1e-7
        # The returned point of a non-robust example is misclassified.
        pred = jnp.argmax(fn(x_adv), -1)
        assert bool(jnp.all(jnp.where(robust, True, pred != y)))


def test_targeted_apgd_reaches_its_target_on_a_linear_model():
    """Logits W·x + b: where moving by ε·sign(w_t − w_j) for every rival j provably makes t the argmax,
    APGD-T must reach t."""
    rng = np.random.default_rng(0)
    d, k, b = 12, 4, 64
    W = jnp.asarray(rng.normal(size=(d, k)), jnp.float32)
    x = jnp.asarray(rng.uniform(0.3, 0.7, size=(b, d, 1, 1)), jnp.float32)
    logits_fn = lambda z: z.reshape(z.shape[0], -1) @ W  # noqa: E731
    y = jnp.argmax(logits_fn(x), -1)
    t = (y + 1 + jnp.asarray(rng.integers(0, k - 1, size=b))) % k
    eps = 0.25
    x_adv, _ = ap.apgd(logits_fn, x, y, jax.random.PRNGKey(0), eps=eps, n_iter=50, loss="dlr_t", targets=t)
    reached = np.asarray(jnp.argmax(logits_fn(x_adv), -1) == t)
    # Certificate: the best ℓ∞ move for the margin of t over all classes at once is at least as good as
    # the move toward sign(w_t − w_y) (inside [0,1]: 0.3..0.7 ± 0.25 stays in the box).
    direction = jnp.sign(W[:, t].T - W[:, y].T).reshape(b, d, 1, 1)
    certified = np.asarray(jnp.argmax(logits_fn(x + eps * direction), -1) == t)
    assert certified.sum() >= b // 4
    assert reached[certified].all()


def test_apgd_is_at_least_as_strong_as_pgd(trained_tiny_resnet, cifar_test_batch):
    model, variables = trained_tiny_resnet
    x = jnp.asarray(cifar_test_batch[0], jnp.float32) / 255.0
    y = jnp.asarray(cifar_test_batch[1])
    fn = steps.eval_logits_fn(model, variables)
    _, pgd_robust = jax.jit(lambda k: robust_correct(fn, x, y, k, eps=8 / 255, step_size=2 / 255, steps=10,
                                                     restarts=1))(jax.random.PRNGKey(0))
    out = jax.jit(lambda k: ap.autoattack_lite(fn, x, y, k, eps=8 / 255, n_iter=10, n_targets=3))(
        jax.random.PRNGKey(0))
    assert int(jnp.sum(out["combined"])) <= int(jnp.sum(pgd_robust))
    assert bool(jnp.all(out["combined"] <= out["apgd_ce"])) and bool(jnp.all(out["apgd_ce"] <= out["clean"]))


def test_autoattack_step_counts_match_the_attack(trained_tiny_resnet, cifar_test_batch):
    """The workflow's AutoAttack-lite step (two compiled programs, targets looped on the host, padding
    masked) counts exactly the examples that ``autoattack_lite`` marks, with the same keys."""
    from rwsjax.train import sharding
    from rwsjax.train.evaluate import evaluate
    from rwsjax.data.sources import Split
    model, variables = trained_tiny_resnet
    images, labels = cifar_test_batch
    mesh = sharding.make_mesh(jax.devices()[:1])
    step = steps.make_autoattack_step(model, mesh, eps=8 / 255, n_iter=4, n_targets=2, unroll=False)
    key = jax.random.PRNGKey(3)
    mask = np.arange(64) < 50  # 14 padded rows must not count
    counts = jax.device_get(step(variables, *sharding.shard_batch((images, labels, mask), mesh), key))
    fn = steps.eval_logits_fn(model, variables)
    x = jnp.asarray(images, jnp.float32) / 255.0
    ref = jax.jit(lambda k: ap.autoattack_lite(fn, x, jnp.asarray(labels), k, eps=8 / 255, n_iter=4,
                                               n_targets=2, unroll=False))(key)
    for name, ref_name in (("clean", "clean"), ("apgd_ce", "apgd_ce"), ("apgd_t", "apgd_t"),
                           ("autoattack", "combined")):
        assert int(counts[name]) == int(np.sum(np.asarray(ref[ref_name]) & mask)), name
    assert int(counts["autoattack"]) <= min(int(counts["apgd_ce"]), int(counts["apgd_t"])) <= int(counts["clean"])
    # Through the split evaluator: accuracies in %, one entry per attack.
    split = Split(images=images[:50], labels=labels[:50])
    out = evaluate(step, variables, split, batch_size=64, mesh=mesh, seed=0, desc="aa")
    assert set(out) >= {"clean_accuracy", "apgd_ce_accuracy", "apgd_t_accuracy", "autoattack_accuracy"}
    assert out["n"] == 50 and 0 <= out["autoattack_accuracy"] <= out["clean_accuracy"] <= 100


def test_restarts_only_add_adversarial_examples(trained_tiny_resnet, cifar_test_batch):
    """Restart 0 is the single run; every further restart can only break more examples; x_adv stays in the
    ε-ball ∩ [0, 1] and is misclassified wherever the example is not robust."""
    model, variables = trained_tiny_resnet
    x = jnp.asarray(cifar_test_batch[0][:32], jnp.float32) / 255.0
    y = jnp.asarray(cifar_test_batch[1][:32])
    fn = steps.eval_logits_fn(model, variables)
    key, eps = jax.random.PRNGKey(5), 8 / 255
    run = jax.jit(lambda k, r: ap.apgd_restarts(fn, x, y, k, restarts=r, eps=eps, n_iter=5, unroll=False),
                  static_argnums=1)
    x1, r1 = run(key, 1)
    x3, r3 = run(key, 3)
    _, single = jax.jit(lambda k: ap.apgd(fn, x, y, k, eps=eps, n_iter=5, unroll=False))(jax.random.fold_in(key, 0))
    assert bool(jnp.all(r1 == single))
    assert bool(jnp.all(r3 <= r1))  # robust after 3 restarts ⇒ robust after the first
    assert float(jnp.max(jnp.abs(x3 - x))) <= eps + 1e-6 and float(x3.min()) >= 0 and float(x3.max()) <= 1
    broken = ~r3 & (jnp.argmax(fn(x), -1) == y)
    assert bool(jnp.all(jnp.where(broken, jnp.argmax(fn(x3), -1) != y, True)))
    with pytest.raises(ValueError, match="restarts"):
        ap.apgd_restarts(fn, x, y, key, restarts=0, eps=eps)
