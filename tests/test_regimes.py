"""The regime table: its entries, the train step built from it, and its defaults against the papers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rwsjax.attacks import pgd as pgd_lib
from rwsjax.data.augment import random_crop_flip
from rwsjax.report.tables import regime_label
from rwsjax.train import awp as awp_lib
from rwsjax.train import losses, regimes, sharding, steps
from rwsjax.train.state import TrainState, sgd

ATTACK = dict(eps=8 / 255, step_size=2 / 255, steps=2, norm="linf", random_init=True, unroll=False)


def _reference_train_step(model, tx, mesh, *, regime, attack, attack_bn="batch", bn_mode="train",
                          augment=True, beta=6.0, awp_gamma=0.0, awp_warmup_steps=0):
    """The train step written out per regime (an if-chain on the names), independent of the table."""
    pair = {"trades": losses.trades_loss, "mart": losses.mart_loss, "score": losses.score_loss}

    def step(state, images_u8, labels, key):
        k_aug, k_adv = jax.random.split(jax.random.fold_in(key, state.step))
        x = images_u8.astype(jnp.float32) / 255.0
        if augment:
            x = random_crop_flip(k_aug, x)
        x_adv = None
        if regime != "standard":
            v = state.variables
            fn = (steps.batch_stats_logits_fn(model, v) if attack_bn == "batch"
                  else steps.eval_logits_fn(model, v))
            if regime == "pgd_at":
                x = pgd_lib.pgd(fn, x, labels, k_adv, **attack)
            elif regime == "fgsm_rs":  # one step of 1.25·ε from a uniform start (Wong et al. 2020)
                x = pgd_lib.pgd(fn, x, labels, k_adv, **{**attack, "steps": 1, "random_init": True,
                                                         "step_size": 1.25 * attack["eps"]})
            elif regime == "mart":
                x_adv = pgd_lib.pgd(fn, x, labels, k_adv, **attack, gaussian_start=0.001)
            else:
                clean = jax.lax.stop_gradient(fn(x))
                distance = losses.kl_divergence if regime == "trades" else losses.squared_error
                x_adv = pgd_lib.pgd(fn, x, labels, k_adv, **attack,
                                    gaussian_start=0.001 if regime == "trades" else None,
                                    loss_fn=lambda logits, _: distance(clean, logits))

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            if x_adv is not None:
                nat, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
                adv, upd = model.apply({"params": params, **upd}, x_adv, train=True, mutable=["batch_stats"])
                return pair[regime](nat, adv, labels, beta), (adv, upd["batch_stats"])
            if bn_mode == "train":
                logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
                new_stats = updates["batch_stats"]
            else:
                logits, new_stats = model.apply(variables, x, train=False), state.batch_stats
            return jnp.mean(pgd_lib.cross_entropy(logits, labels)), (logits, new_stats)

        at = state.params
        if awp_gamma:
            gamma = jnp.where(state.step >= awp_warmup_steps, awp_gamma, 0.0)
            ascent = jax.grad(lambda p: loss_fn(p)[0])(state.params)
            at = jax.tree.map(jnp.add, state.params, awp_lib.perturbation(state.params, ascent, gamma))
        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(at)
        updates, opt_state = tx.update(grads, state.opt_state, at)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state)
        return new_state, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data, data, rep), out_shardings=(rep, rep), donate_argnums=(0,))


@pytest.fixture(scope="module")
def setup(tiny_resnet, cifar_test_batch):
    """(model, variables, optimizer, mesh, images_u8 [32,32,32,3], labels [32]) on one device."""
    model, variables = tiny_resnet
    mesh = sharding.make_mesh(jax.devices()[:1])
    tx = sgd(0.1, momentum=0.9, weight_decay=5e-4, steps_per_epoch=1)
    x, y = sharding.shard_batch((cifar_test_batch[0][:32], cifar_test_batch[1][:32]), mesh)
    return model, variables, tx, mesh, x, y


def _fresh_state(variables, tx, mesh):
    return sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)


@pytest.mark.parametrize("name", list(regimes.REGIMES))
def test_every_regime_trains_one_step(setup, name):
    """Each entry builds a step that runs: finite positive loss, accuracy in [0, 1], step counter +1,
    weights moved."""
    model, variables, tx, mesh, x, y = setup
    r = regimes.get(name)
    step = steps.make_train_step(model, tx, mesh, regime=name, attack=ATTACK, attack_bn="eval",
                                 beta=r.default_beta or 0.0)
    state, m = step(_fresh_state(variables, tx, mesh), x, y, jax.random.PRNGKey(0))
    state, m = jax.device_get((state, m))
    assert np.isfinite(m["loss"]) and m["loss"] > 0 and 0.0 <= m["accuracy"] <= 1.0
    assert int(state.step) == 1
    before = jax.tree.leaves(jax.device_get(variables["params"]))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params), before))


def test_trades_with_zero_beta_is_the_clean_step(setup):
    """TRADES with β = 0 updates the weights as the clean step does (its robust term has no gradient then)."""
    model, variables, tx, mesh, x, y = setup
    out = {}
    for name, beta in (("standard", 0.0), ("trades", 0.0)):
        step = steps.make_train_step(model, tx, mesh, regime=name, attack=ATTACK, attack_bn="eval", beta=beta)
        out[name] = jax.device_get(step(_fresh_state(variables, tx, mesh), x, y, jax.random.PRNGKey(0))[0].params)
    for a, b in zip(jax.tree.leaves(out["trades"]), jax.tree.leaves(out["standard"])):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", list(regimes.REGIMES))
@pytest.mark.parametrize("options", [dict(), dict(attack_bn="eval", augment=False),
                                     dict(bn_mode="frozen"), dict(awp_gamma=5e-3, awp_warmup_steps=2)],
                         ids=["default", "eval_bn", "frozen", "awp"])
def test_table_step_lowers_to_the_written_out_program(setup, name, options):
    """Every regime and option: the table-built step and the written-out one lower to the same program."""
    model, variables, tx, mesh, x, y = setup
    if options.get("awp_gamma") and not regimes.get(name).adversarial:
        pytest.skip("AWP needs an attack")
    kw = dict(regime=name, attack=ATTACK, beta=4.0, **options)
    state, key = _fresh_state(variables, tx, mesh), jax.random.PRNGKey(0)
    ours = steps.make_train_step(model, tx, mesh, **kw).lower(state, x, y, key).as_text()
    ref = _reference_train_step(model, tx, mesh, **kw).lower(state, x, y, key).as_text()
    assert ours == ref


def test_defaults_are_the_papers():
    """β: TRADES 6 (Zhang et al. 2019), MART 6 (Wang et al. 2020), SCORE 4 (Pang et al. 2022); AWP (Wu et
    al. 2020, official code): γ = 1e-2 with PGD-AT, no warm-up; γ = 5e-3 with TRADES after 10 epochs."""
    beta = {n: r.default_beta for n, r in regimes.REGIMES.items()}
    assert beta == {"standard": None, "pgd_at": None, "fgsm_rs": None, "trades": 6.0, "mart": 6.0, "score": 4.0}
    awp = {n: (r.awp_gamma, r.awp_warmup) for n, r in regimes.REGIMES.items()}
    assert awp == {"standard": (0.0, 0), "pgd_at": (1e-2, 0), "fgsm_rs": (0.0, 0), "trades": (5e-3, 10),
                   "mart": (1e-2, 0), "score": (5e-3, 10)}
    schedules = {n: r.lr_schedule for n, r in regimes.REGIMES.items()}
    assert schedules == {**{n: "piecewise" for n in regimes.REGIMES}, "fgsm_rs": "cyclic"}


def test_fgsm_rs_is_wongs_update_on_a_linear_model():
    """FGSM-RS (Wong et al. 2020, CIFAR10/train_fgsm.py:105-120): δ ~ U(−ε, ε), clamped so x + δ ∈ [0, 1];
    δ ← clamp(δ + α·sign(∇δ loss), −ε, ε), clamped again; α = 10/255 at ε = 8/255.  On a linear model
    the gradient's sign is known, so the update is written out by hand."""
    eps = 8 / 255
    r = regimes.get("fgsm_rs")
    attack = r.attack(dict(ATTACK, steps=10, step_size=2 / 255, random_init=False))
    assert attack["steps"] == 1 and attack["random_init"] and attack["step_size"] == pytest.approx(10 / 255)
    w = jnp.array([[1.0, -1.0]] * 2 + [[-1.0, 1.0]] * 2)  # [4 pixels, 2 classes]
    fn = lambda x: x.reshape(x.shape[0], -1) @ w
    x = jnp.array([[0.0, 0.5, 1.0, 0.02]]).reshape(1, 2, 2, 1)
    y = jnp.array([0])
    key = jax.random.PRNGKey(3)
    ours = pgd_lib.pgd(fn, x, y, key, **attack)
    delta = jnp.clip(jax.random.uniform(key, x.shape, x.dtype, -eps, eps), -x, 1 - x)  # Wong's start
    sign = jnp.array([-1.0, -1.0, 1.0, 1.0]).reshape(1, 2, 2, 1)  # ∂CE/∂x for label 0 is ∝ w[:,1] − w[:,0]
    delta = jnp.clip(jnp.clip(delta + 10 / 255 * sign, -eps, eps), -x, 1 - x)
    np.testing.assert_allclose(ours, x + delta, atol=1e-7)


def test_cyclic_schedule_is_pytorchs_cycliclr():
    """``at.lr_schedule=cyclic``: the learning rate and momentum of PyTorch ``CyclicLR(base_lr=0, max_lr,
    step_size_up=step_size_down=total/2)`` (cycle_momentum 0.8–0.9) at every step, and the SGD trajectory
    of ``torch.optim.SGD`` driven by it on a quadratic."""
    torch = pytest.importorskip("torch")
    from rwsjax.train.state import lr_schedule
    spe, epochs, lr_max = 5, 3, 0.2
    total = spe * epochs
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = torch.optim.SGD([p], lr=lr_max, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.0, max_lr=lr_max, step_size_up=total / 2,
                                              step_size_down=total / 2)
    ours = lr_schedule(lr_max, steps_per_epoch=spe, schedule="cyclic", epochs=epochs)
    tx = sgd(lr_max, momentum=0.9, weight_decay=5e-4, steps_per_epoch=spe, schedule="cyclic", epochs=epochs)
    w, state = jnp.asarray(w0), None
    state = tx.init(w)
    target = np.array([0.3, 0.1, -0.4], np.float32)
    for t in range(total):
        assert float(ours(t)) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-7), t
        loss = ((p - torch.tensor(target)) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        updates, state = tx.update(2 * (w - target), state, w)
        w = optax.apply_updates(w, updates)
        np.testing.assert_allclose(np.asarray(w), p.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs the number of epochs"):
        lr_schedule(0.1, steps_per_epoch=2, schedule="cyclic")
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cosine'"):
        lr_schedule(0.1, steps_per_epoch=2, schedule="cosine")


def test_attacks_and_objectives():
    r = regimes.REGIMES
    assert list(r) == ["standard", "pgd_at", "fgsm_rs", "trades", "mart", "score"]
    assert [x.label for x in r.values()] == ["standard", "PGD-AT", "FGSM-RS", "TRADES", "MART", "SCORE"]
    assert [x.attack_loss for x in r.values()] == [None, "ce", "ce", "kl", "ce", "squared_error"]
    assert [x.attack_start for x in r.values()] == [None, None, None, 0.001, 0.001, None]
    assert [x.objective for x in r.values()] == [None, None, None, losses.trades_loss, losses.mart_loss,
                                                 losses.score_loss]
    assert [x.adversarial for x in r.values()] == [False, True, True, True, True, True]
    assert [x.attack_steps for x in r.values()] == [None, None, 1, None, None, None]


def test_unknown_names_and_inconsistent_entries_raise():
    with pytest.raises(ValueError, match="unknown regime 'fgsm'; valid: .*'standard'.*'score'"):
        regimes.get("fgsm")
    with pytest.raises(ValueError, match="unknown regime 'fgsm'"):
        steps.make_train_step(None, optax.sgd(0.1), None, regime="fgsm")
    with pytest.raises(ValueError, match="attack_bn='train' is Bag of Tricks' PGD-AT mode"):
        steps.make_train_step(None, optax.sgd(0.1), None, regime="trades", attack_bn="train")
    with pytest.raises(ValueError, match="extra_clean_pass is TRADES's third train-mode pass"):
        steps.make_train_step(None, optax.sgd(0.1), None, regime="pgd_at", extra_clean_pass=True)
    pgd_at = regimes.get("pgd_at")
    for change, what in ((dict(attack_loss="hinge"), "attack_loss"), (dict(default_beta=6.0), "default_beta"),
                         (dict(attack_loss=None), "needs an attack_loss"), (dict(awp_warmup=-1), ">= 0"),
                         (dict(attack_steps=1), "go together"), (dict(lr_schedule="cosine"), "lr_schedule")):
        with pytest.raises(ValueError, match=what):
            dataclasses.replace(pgd_at, **change)


def test_report_labels_come_from_the_table():
    for r in regimes.REGIMES.values():
        beta = r.default_beta
        label = regime_label({"regime": r.name, "beta": beta})
        assert label == (r.label if beta is None else f"{r.label} (β={beta:g})")
    assert regime_label({"regime": "something_new"}) == "something_new"
