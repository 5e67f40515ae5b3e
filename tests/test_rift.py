"""RiFT's three steps checked against their definitions (Zhu et al. 2023)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.attacks.pgd import pgd
from rwsjax.rift.finetune import choose_modules, finetune_optimizer
from rwsjax.rift.mrc import MRC, perturb, project_l2
from rwsjax.rift.select import select_alpha
from rwsjax.train import sharding, steps
from rwsjax.train.state import TrainState
from rwsjax.weights.modules import call_order, dotted_name, get_leaf, kernels, module_mask
from rwsjax.weights.patch import interpolate

EPS = 8 / 255


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


# ---------------------------------------------------------------- module names

def test_dotted_names():
    assert dotted_name(("layer2_1", "conv2")) == "layer2.1.conv2"
    assert dotted_name(("layer2_0", "shortcut_0")) == "layer2.0.shortcut.0"
    assert dotted_name(("block1", "layer_3", "convShortcut")) == "block1.layer.3.convShortcut"
    assert dotted_name(("linear",)) == "linear"


def test_kernels_in_forward_order(tiny_resnet):
    model, variables = tiny_resnet
    order = call_order(model, variables, jnp.zeros((1, 32, 32, 3)))
    names = list(kernels(variables["params"], order))
    assert len(names) == 21
    assert names[0] == "conv1" and names[-1] == "linear"
    assert names.index("layer1.1.conv2") < names.index("layer2.0.conv1") < names.index("layer4.1.conv2")
    with pytest.raises(ValueError, match="layer9.0.conv1"):
        module_mask(variables["params"], ["layer9.0.conv1"])


# ---------------------------------------------------------------- MRC (Def. 3.1, Alg. 1)

def test_project_l2_hand_case():
    d = jnp.array([3.0, 4.0])  # norm 5
    chex.assert_trees_all_close(project_l2(d, 1.0), jnp.array([0.6, 0.8]))
    chex.assert_trees_all_close(project_l2(d, 10.0), d)


def test_perturb_touches_only_its_module(tiny_resnet):
    _, variables = tiny_resnet
    path = ("layer2_0", "conv2", "kernel")
    w = get_leaf(variables["params"], path)
    out = perturb(variables["params"], path, jnp.ones_like(w))
    before, after = _flat(variables["params"]), _flat(out)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed == ["['layer2_0']['conv2']['kernel']"]


@pytest.fixture(scope="module")
def mrc_setup(tiny_resnet, cifar_test_batch):
    model, variables = tiny_resnet
    mesh = sharding.make_mesh(jax.devices()[:1])
    x = jnp.asarray(cifar_test_batch[0], jnp.float32) / 255.0
    y = jnp.asarray(cifar_test_batch[1])
    x_adv = pgd(steps.eval_logits_fn(model, variables), x, y, jax.random.PRNGKey(0), eps=EPS,
                step_size=2 / 255, steps=3)
    return model, variables, np.asarray(x_adv), np.asarray(y), mesh


@pytest.mark.parametrize("project_every", ["step", "epoch"])
def test_mrc_ascent_stays_in_ball_and_raises_loss(mrc_setup, project_every):
    model, variables, x_adv, y, mesh = mrc_setup
    # A small radius keeps the ascent in the first-order regime, where a projected gradient step must raise the loss.
    m = MRC(model, variables, x_adv, y, devices=list(mesh.devices.flat), eps=0.02, lr=1.0, epochs=3, batch_size=32,
            project_every=project_every)
    path = ("layer1_0", "conv1", "kernel")
    w = np.asarray(get_leaf(variables["params"], path))
    delta, history = m.ascend(path)
    chex.assert_shape(delta, w.shape)
    ratio = float(np.linalg.norm(np.asarray(delta)) / np.linalg.norm(w))
    assert 0.0 < ratio <= 0.02 * (1 + 1e-5)
    assert all(h["relative_norm"] <= 0.02 * (1 + 1e-5) for h in history)
    loss0, _ = m.robust_loss(path, jnp.zeros_like(w))
    assert max(h["loss"] for h in history) > loss0  # ascent increases the robust loss


def test_mrc_table_definition(mrc_setup):
    """MRC = max loss reached − loss at θ_AT ≥ 0, one row per kernel, baseline shared by all rows."""
    model, variables, x_adv, y, mesh = mrc_setup
    m = MRC(model, variables, x_adv, y, devices=list(mesh.devices.flat), eps=0.1, lr=1.0, epochs=2, batch_size=32)
    ks = kernels(variables["params"], call_order(model, variables, jnp.zeros((1, 32, 32, 3))))
    chosen = {k: ks[k] for k in ("conv1", "layer3.1.conv1", "linear")}
    rows = m.criticality(chosen)
    assert [r["module"] for r in rows] == list(chosen)
    for r in rows:
        assert r["mrc"] >= 0.0
        assert r["mrc"] == pytest.approx(r["loss_max"] - r["loss_at"])
        assert r["loss_max"] == pytest.approx(max([r["loss_at"]] + [h["loss"] for h in r["history"]]))
        assert 0.0 <= r["robust_accuracy_at_max"] <= 100.0
    assert len({r["loss_at"] for r in rows}) == 1
    # Radius 0 means no movement at all: MRC is exactly 0.
    z = MRC(model, variables, x_adv, y, devices=list(mesh.devices.flat), eps=0.0, lr=1.0, epochs=1, batch_size=32)
    assert z.criticality({"conv1": ks["conv1"]})[0]["mrc"] == 0.0


def test_mrc_cut_points():
    assert MRC.cut_points(("layer3_1", "conv2", "kernel")) == (("layer3_1",), ("layer3_1", "conv2"))
    assert MRC.cut_points(("linear", "kernel")) == (("linear",),)


def test_cached_and_threaded_mrc_equal_the_straightforward_one(mrc_setup):
    """Starting every ascent step from the cached inputs of the module and its ancestors, with two modules
    in flight, gives the rows of full forward passes one module at a time (the same arithmetic, only the
    unchanged prefix is skipped)."""
    model, variables, x_adv, y, mesh = mrc_setup
    ks = kernels(variables["params"], call_order(model, variables, jnp.zeros((1, 32, 32, 3))))
    chosen = {k: ks[k] for k in ("conv1", "layer1.0.conv2", "layer2.0.shortcut.0", "layer4.1.conv1", "linear")}
    kw = dict(devices=list(mesh.devices.flat), eps=0.1, lr=1.0, epochs=2, batch_size=32)
    plain = MRC(model, variables, x_adv, y, cache=False, threads=1, **kw).criticality(chosen)
    fast = MRC(model, variables, x_adv, y, cache=True, threads=2, **kw).criticality(chosen)
    assert [r["module"] for r in fast] == list(chosen)
    for a, b in zip(plain, fast):
        for key in ("mrc", "loss_at", "loss_max", "robust_accuracy_at_max"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["module"], key)
    # A cache over the memory budget falls back to full forward passes for that module.
    tiny_budget = MRC(model, variables, x_adv, y, cache=True, cache_gib=1e-9, **kw)
    points, inputs = tiny_budget._inputs(ks["conv1"], tiny_budget._local_devices()[0])
    assert points == () and len(inputs) == 1 and inputs[0].shape == x_adv.shape


def test_mrc_stops_between_modules_and_resumes_exactly(mrc_setup):
    """A stop request ends the pass after the module in flight; a re-run with the saved rows finishes it
    with exactly the rows of an uninterrupted pass."""
    model, variables, x_adv, y, mesh = mrc_setup
    ks = kernels(variables["params"], call_order(model, variables, jnp.zeros((1, 32, 32, 3))))
    chosen = {k: ks[k] for k in ("conv1", "layer2.0.conv2", "linear")}
    m = MRC(model, variables, x_adv, y, devices=list(mesh.devices.flat), eps=0.1, lr=1.0, epochs=1, batch_size=32)
    full = m.criticality(chosen)
    saved = []
    part = m.criticality(chosen, on_row=saved.append, stop=lambda: len(saved) >= 1)
    assert [r["module"] for r in part] == ["conv1"] and part == saved
    assert m.criticality(chosen, done={r["module"]: r for r in saved}) == full


# ---------------------------------------------------------------- fine-tuning

def test_choose_modules():
    rows = [{"module": "conv1", "mrc": 0.5}, {"module": "layer1.0.conv1", "mrc": 0.1},
            {"module": "layer4.1.conv2", "mrc": 0.05}, {"module": "linear", "mrc": 2.0}]
    assert choose_modules(rows) == ["layer4.1.conv2"]
    assert choose_modules(rows, "top_k", 2) == ["layer4.1.conv2", "layer1.0.conv1"]
    assert choose_modules(rows, "most_critical") == ["linear"]
    assert choose_modules(rows, "last") == ["linear"]
    assert len(choose_modules(rows, "all")) == 4
    with pytest.raises(ValueError, match="least_critical"):
        choose_modules(rows, "random")
    with pytest.raises(ValueError, match="top_k"):
        choose_modules(rows, "top_k", 9)


@pytest.mark.parametrize("bn_mode", ["train", "frozen"])
def test_finetune_changes_only_chosen_module(trained_tiny_resnet, cifar_test_batch, bn_mode):
    model, variables = trained_tiny_resnet
    mesh = sharding.make_mesh(jax.devices()[:1])
    modules = ["layer3.0.conv2", "linear"]
    tx = finetune_optimizer(variables["params"], modules, learning_rate=0.01, momentum=0.9, weight_decay=5e-4,
                            steps_per_epoch=1)
    step = steps.make_train_step(model, tx, mesh, regime="standard", bn_mode=bn_mode)
    state = sharding.replicate(jax.device_get(TrainState.create(variables, tx)), mesh)
    x, y = sharding.shard_batch(cifar_test_batch, mesh)
    for i in range(2):
        state, _ = step(state, x, y, jax.random.PRNGKey(i))
    before, after = _flat(variables["params"]), _flat(state.params)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed == {"['layer3_0']['conv2']['kernel']", "['linear']['kernel']", "['linear']['bias']"}
    stats_equal = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), variables["batch_stats"],
                               jax.device_get(state.batch_stats))
    assert all(jax.tree.leaves(stats_equal)) == (bn_mode == "frozen")


# ---------------------------------------------------------------- interpolation and α*

def test_interpolation_endpoints_are_exact(tiny_resnet, trained_tiny_resnet):
    at, ft = tiny_resnet[1], trained_tiny_resnet[1]
    chex.assert_trees_all_equal(interpolate(at, ft, 0.0), at)
    chex.assert_trees_all_equal(interpolate(at, ft, 1.0), ft)
    mid = interpolate(at, ft, 0.3)
    chex.assert_trees_all_close(mid, jax.tree.map(lambda a, b: 0.7 * a + 0.3 * b, at, ft), rtol=1e-6)
    jitted = jax.jit(interpolate, static_argnums=2)
    chex.assert_trees_all_equal(jitted(at, ft, 1.0), ft)


def test_select_alpha_rule():
    alphas = [0.0, 0.1, 0.2, 0.3, 0.4]
    clean = [80.0, 81.0, 82.0, 83.0, 85.0]
    adv = [50.0, 50.05, 49.95, 49.85, 48.0]
    # θ_AT adv = 50.0, tolerance 0.1 → 0.3 (49.85) and 0.4 (48.0) excluded; best clean among the rest is 0.2.
    assert select_alpha(alphas, clean, adv, reference_adversarial=50.0, tolerance=0.1) == 2
    assert select_alpha(alphas, clean, adv, reference_adversarial=50.0, tolerance=2.0) == 4
    assert select_alpha([0.0, 0.5], [70.0, 70.0], [40.0, 40.0], reference_adversarial=40.0) == 0  # tie → smaller α
    with pytest.raises(ValueError):
        select_alpha([0.0], [1.0, 2.0], [1.0], reference_adversarial=0.0)


def test_select_alpha_at_the_tolerance_boundary():
    """Losing exactly the tolerated 0.1 points is allowed, for every reference count (accuracies as evaluate makes
    them, 100·count/N): at N = 1,000 one image is 0.1 points; at N = 500 one image is 0.2 points."""
    assert select_alpha([0.0, 0.1], [50, 52], [64.2, 64.1], reference_adversarial=64.2, tolerance=0.1) == 1
    for n, allowed in ((500, 0), (1000, 1), (3000, 3)):
        for r in range(n + 1):
            ref = 100.0 * r / n
            for lost in (allowed, allowed + 1):
                if lost > r:
                    continue
                adv = [ref, 100.0 * (r - lost) / n]
                want = 1 if lost <= allowed else 0
                assert select_alpha([0.0, 0.1], [50.0, 52.0], adv, reference_adversarial=ref, tolerance=0.1,
                                    n=n) == want, (n, r, lost)
                if n != 3000:  # 100·c/3000 has no exact short decimal: there only the counts are exact
                    assert select_alpha([0.0, 0.1], [50.0, 52.0], adv, reference_adversarial=ref,
                                        tolerance=0.1) == want, (n, r, lost)
    with pytest.raises(ValueError):
        select_alpha([0.0], [1.0], [1.0], reference_adversarial=1.0, n=0)
