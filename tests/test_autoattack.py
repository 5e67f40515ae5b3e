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


@pytest.mark.parametrize("attacks, settings, eps, norm, slack", [
    (["fab-t"], Settings(n_iter=10, fab_targets=2), 1 / 255, "linf", 1),  # deterministic: the same examples
    (["apgd-ce", "apgd-t"], Settings(n_iter=10, apgd_targets=2), 1 / 255, "linf", 2),
    (["square"], Settings(square_queries=200), 16 / 255, "linf", 3),     # random search: statistically close
    # ℓ2 leaves ~half the images borderline: two independent runs differ by ≈ √(2·64·¼) ≈ 5.7 images (1σ), so
    # 2σ; the algorithm itself is checked draw for draw in test_square_step_for_step_equals_the_reference.
    (["square"], Settings(square_queries=200), 2.5, "l2", 11),
])
def test_robust_accuracy_equals_the_reference(trained_tiny_resnet, twin, cifar_test_batch, mesh, attacks, settings,
                                              eps, norm, slack):
    """The same 64 real test images, the trained model in JAX and its PyTorch twin under the reference code:
    robust accuracy within ``slack`` images (FAB-T's first run has no random start)."""
    torch, pyautoattack = _reference()
    model, variables = trained_tiny_resnet
    images, labels = cifar_test_batch
    ref = pyautoattack.AutoAttack(twin, attacks=attacks, eps=eps, norm={"linf": "Linf", "l2": "L2"}[norm], seed=0,
                                  version="custom")
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
    out = AutoAttack(model, eps=eps, norm=norm, version="custom", attacks=attacks, settings=settings, mesh=mesh).run(
        variables, images, labels, batch_size=64, progress=None)
    assert 5 <= ref_robust.sum() <= 59, "ε should leave a mixed robust set"
    assert abs(int(out["robust"].sum()) - int(ref_robust.sum())) <= slack
    if attacks == ["fab-t"]:
        assert int(np.sum(out["robust"] != ref_robust)) <= slack


def _recording_rand(monkeypatch, torch):
    """Make ``torch.rand`` record what it returns (the reference Square's only source of randomness)."""
    log, real = [], torch.rand

    def rand(*args, **kwargs):
        t = real(*args, **kwargs)
        log.append(t.clone())
        return t

    monkeypatch.setattr(torch, "rand", rand)
    return log


@pytest.mark.parametrize("norm, eps", [("linf", 12 / 255), ("l2", 2.5)])
def test_square_step_for_step_equals_the_reference(trained_tiny_resnet, twin, cifar_test_batch, monkeypatch,
                                                   norm, eps):
    """The reference's ``attack_single_run`` on 8 real test images with its ``torch.rand`` draws recorded; the
    same draws fed to :func:`square.start` / :func:`square.candidate` (acceptance on the same PyTorch model's
    margins) give its final points to float tolerance, iteration by iteration through examples that stop."""
    torch, _ = _reference()
    from pyautoattack.square import SquareAttack
    from rwsjax.attacks import square
    images, _ = cifar_test_batch
    x = images[:8].astype(np.float32) / 255
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        y = twin(xt).argmax(1)
    n_iter = 40
    ref = SquareAttack(twin, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=n_iter, p_init=0.8,
                       resc_schedule=False)
    ref.init_hyperparam(xt)
    torch.manual_seed(0)
    log = _recording_rand(monkeypatch, torch)
    with torch.no_grad():
        _, x_ref = ref.attack_single_run(xt, y)
    monkeypatch.undo()
    x_ref = x_ref.permute(0, 2, 3, 1).numpy()

    def margin(v, labels):
        with torch.no_grad():
            z = twin(torch.tensor(np.asarray(v)).permute(0, 3, 1, 2).contiguous()).numpy()
        zy = z[np.arange(len(z)), labels].copy()
        z[np.arange(len(z)), labels] = -np.inf
        return zy - z.max(1)

    draws, labels = iter(log), y.numpy()
    sign = lambda t: np.sign(2 * t.numpy() - 1).transpose(0, 2, 3, 1)  # noqa: E731  NCHW draws → NHWC
    if norm == "linf":
        d = dict(stripes=sign(next(draws)))
    else:  # per tile: eta's transposition coin, then the signs
        coins = [(next(draws).item() > 0.5, sign(next(draws))) for _ in square._tiles(32, 32)[1]]
        d = dict(transpose=np.tile([[c for c, _ in coins]], (8, 1)), sign=np.stack([s for _, s in coins], 1))
    x_best = np.array(square.start(jnp.asarray(x), d, eps=eps, norm=norm))
    m_best = margin(x_best, labels)
    stopped = 0
    for i in range(n_iter):
        idx = np.nonzero(m_best > 0)[0]
        b = len(idx)
        side = int(square.window_side(jnp.array([i]), 32, 32, norm=norm)[0])
        corner = lambda: np.full((b,), int((32 - side) * next(draws).item()), np.int32)  # noqa: E731
        if norm == "linf":
            d = dict(vh=corner(), vw=corner())
            d["sign"] = np.tile(np.sign(2 * next(draws).numpy() - 1).transpose(1, 2, 0)[None], (b, 1, 1, 1))
        else:
            d = dict(vh=corner(), vw=corner(), vh2=corner(), vw2=corner())
            d["transpose"], d["sign"] = np.full((b,), next(draws).item() > 0.5), sign(next(draws))
        new = np.asarray(square.candidate(jnp.asarray(x_best[idx]), jnp.asarray(x[idx]), jnp.full((b,), side),
                                          d, eps=eps, norm=norm))
        m = margin(new, labels[idx])
        better = (m < m_best[idx]) | (m <= 0)
        m_best[idx] = np.where(better, m, m_best[idx])
        x_best[idx] = np.where(better[:, None, None, None], new, x_best[idx])
        stopped = max(stopped, 8 - b)
    assert next(draws, None) is None, "every reference draw is used"
    assert 0 < stopped < 8, "some examples should stop early, some run to the end"
    np.testing.assert_allclose(x_best, x_ref, atol=1e-5)


@pytest.mark.parametrize("norm, eps", [("linf", 16 / 255), ("l2", 2.0)])
def test_square_invariants(trained_tiny_resnet, cifar_test_batch, norm, eps):
    """Square's own invariants over 60 jitted iterations: every query point in the ε-ball ∩ [0, 1], the best
    margin never rises, an example stops once misclassified, queries = 1 + iterations ≤ 1 + budget."""
    from rwsjax.attacks import square
    model, variables = trained_tiny_resnet
    images, labels = cifar_test_batch
    x, y = jnp.asarray(images[:32].astype(np.float32) / 255), jnp.asarray(labels[:32])
    fn = lambda u: model.apply(variables, u, train=False)  # noqa: E731
    budget = 50
    keys = jax.random.split(jax.random.PRNGKey(0), 32)
    s = jax.jit(lambda x, y: square.init(fn, x, y, keys, eps=eps, norm=norm))(x, y)
    step = jax.jit(lambda s: square.step(fn, s, x, y, eps=eps, n_queries=budget, norm=norm))
    size = (lambda d: np.abs(d).max((1, 2, 3))) if norm == "linf" else (lambda d: np.sqrt((d ** 2).sum((1, 2, 3))))
    previous = np.asarray(s["margin_min"])
    for _ in range(budget + 10):
        s = step(s)
        m, xb = np.asarray(s["margin_min"]), np.asarray(s["x_best"])
        assert np.all(m <= previous) and np.all(m[previous <= 0] == previous[previous <= 0])
        assert size(xb - np.asarray(x)).max() <= eps * (1 + 1e-5) and xb.min() >= 0 and xb.max() <= 1
        previous = m
    i, q = np.asarray(s["i"]), np.asarray(s["n_queries"])
    np.testing.assert_array_equal(q, i + 1)
    assert i.max() == budget and np.all(np.asarray(square.done(s, budget)))
    assert 0 < int(np.sum(m <= 0)) < 32 and np.all(i[m > 0] == budget)
    logits = np.asarray(fn(jnp.asarray(xb)))
    np.testing.assert_allclose(logits[np.arange(32), labels[:32]] - np.max(
        np.where(np.eye(10, dtype=bool)[labels[:32]], -np.inf, logits), 1), m, atol=1e-4)


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
