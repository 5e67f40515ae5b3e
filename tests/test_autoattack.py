"""AutoAttack (rwsjax.attacks.autoattack, .fab, .square) against the reference (``pyautoattack``, fra31's code)
and its own invariants: versions, FAB's projections, FAB-T / APGD / Square robust accuracy on a trained model
and its PyTorch twin, the ε-ball and [0, 1] box of the returned examples, the order of attacks, resuming an
interrupted evaluation, and the reference's sanity checks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.attacks import autoattack as aa_lib
from rwsjax.attacks import fab
from rwsjax.attacks.autoattack import AutoAttack, Settings
from rwsjax.train import sharding

from conftest import reference_autoattack  # noqa: E402

SHORT = Settings(n_iter=4, apgd_targets=2, fab_targets=2, square_queries=60)


_reference = reference_autoattack


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def twin(trained_tiny_resnet):
    """The trained tiny ResNet-18 as a PyTorch model (tests/torch_models.py), same weights."""
    torch, _ = _reference()
    import torch_models
    from rwsjax.data.sources import DATASETS
    from rwsjax.models.pytorch_io import export_state_dict
    _, variables = trained_tiny_resnet
    info = DATASETS["cifar10"]
    net = torch_models.resnet18(width=0.125, norm="normalize", mean=info.mean, std=info.std)
    sd = export_state_dict(variables, mean=info.mean, std=info.std)
    net.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in sd.items()}, strict=True)
    return net.eval()


def test_versions_equal_the_reference():
    torch, pyautoattack = _reference()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10))
    for version in ("standard", "plus", "rand"):
        ref = pyautoattack.AutoAttack(net, eps=8 / 255, version=version)
        attacks, s = aa_lib.version_settings(version)
        assert list(attacks) == ref.attacks_to_run, version
        assert (s.apgd_restarts, s.eot_iter, s.n_iter) == (ref.apgd.n_restarts, ref.apgd.eot_iter, ref.apgd.n_iter)
        if "apgd-t" in attacks:
            assert (s.apgd_targets, 1) == (ref.apgd_targeted.n_target_classes, ref.apgd_targeted.n_restarts)
        if {"fab", "fab-t"} & set(attacks):
            assert (s.fab_restarts, s.fab_targets, s.n_iter) == (ref.fab.n_restarts, ref.fab.n_target_classes,
                                                                 ref.fab.n_iter)
        if "square" in attacks:
            assert s.square_queries == ref.square.n_queries and ref.square.p_init == 0.8


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_projections_equal_the_reference(norm):
    torch, _ = _reference()
    from pyautoattack import fab_projections as ref
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, (16, 3072)).astype(np.float32)
    w = rng.normal(size=(16, 3072)).astype(np.float32)
    w[:, ::7] = 0.0  # zero coordinates are left alone
    b = (np.sum(w * t, 1) + rng.normal(size=16) * 5).astype(np.float32)
    ours = (fab.projection_linf if norm == "linf" else fab.projection_l2)(jnp.asarray(t), jnp.asarray(w), jnp.asarray(b))
    theirs = (ref.projection_linf if norm == "linf" else ref.projection_l2)(*(torch.tensor(a) for a in (t, w, b)))
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=2e-5)
    # the projection reaches the hyperplane and stays in the box
    np.testing.assert_allclose(np.sum(w * (t + np.asarray(ours)), 1), b, rtol=1e-3, atol=1e-2)
    assert (t + np.asarray(ours)).min() >= -1e-6 and (t + np.asarray(ours)).max() <= 1 + 1e-6


@pytest.mark.parametrize("attacks, settings, eps, slack", [
    (["fab-t"], Settings(n_iter=10, fab_targets=2), 1 / 255, 1),        # deterministic: the same examples
    (["apgd-ce", "apgd-t"], Settings(n_iter=10, apgd_targets=2), 1 / 255, 2),
    (["square"], Settings(square_queries=200), 16 / 255, 3),           # random search: statistically close
])
def test_robust_accuracy_equals_the_reference(trained_tiny_resnet, twin, cifar_test_batch, mesh, attacks, settings,
                                              eps, slack):
    """The same 64 real test images, the trained model in JAX and its PyTorch twin under the reference code:
    robust accuracy within ``slack`` images (FAB-T's first run has no random start)."""
    torch, pyautoattack = _reference()
    model, variables = trained_tiny_resnet
    images, labels = cifar_test_batch
    ref = pyautoattack.AutoAttack(twin, attacks=attacks, eps=eps, norm="Linf", seed=0, version="custom")
    ref.fab.n_iter, ref.fab.n_target_classes = settings.n_iter, settings.fab_targets
    ref.apgd.n_iter = ref.apgd_targeted.n_iter = settings.n_iter
    ref.apgd.n_iter_2, ref.apgd.n_iter_min, ref.apgd.size_decr = 2, 1, 1  # the constructor's values for 10
    ref.apgd_targeted.n_iter_2, ref.apgd_targeted.n_iter_min, ref.apgd_targeted.size_decr = 2, 1, 1
    ref.apgd_targeted.n_target_classes = settings.apgd_targets
    ref.square.n_queries = settings.square_queries
    ref.logger.disabled = True
    xt = torch.tensor(images.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    yt = torch.tensor(labels.astype(np.int64))
    x_ref, _ = ref.run_standard_evaluation(xt, yt, batch_size=64)
    with torch.no_grad():
        ref_robust = (twin(x_ref).argmax(1) == yt).numpy()
    out = AutoAttack(model, eps=eps, version="custom", attacks=attacks, settings=settings, mesh=mesh).run(
        variables, images, labels, batch_size=64, progress=None)
    assert 5 <= ref_robust.sum() <= 59, "ε should leave a mixed robust set"
    assert abs(int(out["robust"].sum()) - int(ref_robust.sum())) <= slack
    if attacks == ["fab-t"]:
        assert int(np.sum(out["robust"] != ref_robust)) <= slack


def test_autoattack_invariants_and_resume(trained_tiny_resnet, cifar_test_batch, mesh, tmp_path):
    """Standard version (shortened): accuracies fall attack by attack, the examples lie in the ε-ball ∩ [0, 1],
    are x where robust and misclassified (as y_adv) where not; an evaluation interrupted mid-attack and rerun
    from its state file gives the uninterrupted result exactly."""
    model, variables = trained_tiny_resnet
    images, labels = cifar_test_batch
    eps = 2 / 255
    attack = AutoAttack(model, eps=eps, version="standard", settings=SHORT, mesh=mesh)
    full = attack.run(variables, images, labels, batch_size=16, seed=3, progress=None)
    after = list(full["accuracy_after"].values())
    assert list(full["accuracy_after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert full["clean_accuracy"] >= after[0] and after == sorted(after, reverse=True) and after[-1] == full["robust_accuracy"]
    x = images.astype(np.float32) / 255
    assert np.all(full["robust"] <= full["clean"])
    assert np.abs(full["x_adv"] - x).max() <= eps + 1e-6 and full["x_adv"].min() >= 0 and full["x_adv"].max() <= 1
    np.testing.assert_array_equal(full["x_adv"][full["robust"]], x[full["robust"]])
    pred = np.asarray(model.apply(variables, full["x_adv"], train=False)).argmax(-1)
    broken = full["clean"] & ~full["robust"]
    assert broken.any() and np.all(pred[broken] != labels[broken]) and np.all(full["y_adv"][broken] == pred[broken])

    state = str(tmp_path / "aa.state.npz")
    calls, run_batch = [0], attack._run_batch

    def interrupted(*args):
        calls[0] += 1
        if calls[0] == 7:  # mid APGD-T: 4 batches of APGD-CE, then APGD-T's first target
            raise KeyboardInterrupt
        return run_batch(*args)

    attack._run_batch = interrupted
    with pytest.raises(KeyboardInterrupt):
        attack.run(variables, images, labels, batch_size=16, seed=3, state_path=state, save_every=0, progress=None)
    attack._run_batch = run_batch
    lines = []
    resumed = attack.run(variables, images, labels, batch_size=16, seed=3, state_path=state, progress=lines.append)
    assert any("resuming from" in line for line in lines)
    np.testing.assert_array_equal(resumed["robust"], full["robust"])
    np.testing.assert_array_equal(resumed["x_adv"], full["x_adv"])
    assert resumed["accuracy_after"] == full["accuracy_after"]
    # Another seed is another evaluation: the state is not reused.
    lines.clear()
    attack.run(variables, images[:16], labels[:16], batch_size=16, seed=4, state_path=state, progress=lines.append)
    assert any("starting afresh" in line for line in lines)


class _Linear(nn.Module):
    classes: int
    softmax: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        z = nn.Dense(self.classes)(x.reshape(x.shape[0], -1))
        return jax.nn.softmax(z) if self.softmax else z


def test_sanity_checks(mesh):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 4, 4, 3)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    three = _Linear(3)
    v = three.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="apgd-t uses a DLR loss that needs at least 4 classes, the model has 3"):
        AutoAttack(three, eps=0.03, version="custom", attacks=["apgd-t"], mesh=mesh).run(v, x, y, progress=None)
    with pytest.raises(ValueError, match="apgd-t with 9 target classes needs at least 10 classes"):
        five = _Linear(5)
        AutoAttack(five, eps=0.03, version="custom", attacks=["apgd-t"], mesh=mesh).run(
            five.init(jax.random.PRNGKey(0), x), x, y, progress=None)
    probs = _Linear(3, softmax=True)
    with pytest.warns(UserWarning, match="look like probabilities"):
        out = AutoAttack(probs, eps=0.03, version="custom", attacks=["apgd-ce"], settings=Settings(n_iter=2),
                         mesh=mesh).run(probs.init(jax.random.PRNGKey(0), x), x, y, progress=None)
    assert any("probabilities" in w for w in out["warnings"])
    with pytest.raises(ValueError, match="attacks= is only for version='custom'"):
        AutoAttack(three, eps=0.03, attacks=["apgd-ce"], mesh=mesh)
    with pytest.raises(ValueError, match="unknown attack"):
        AutoAttack(three, eps=0.03, version="custom", attacks=["apgd-x"], mesh=mesh)
