"""APGD (rwsjax.attacks.apgd) against the reference implementation (fra31/auto-attack, packaged as
``pyautoattack``: ``autopgd_base.py``) and its own invariants.

Reference equality: the checkpoint schedule for every ``n_iter`` in 1..300; and, on the CIFAR-10 ResNet-18
shipped with the reference package (a real trained model), every iterate of APGD-CE (ℓ∞, ℓ2) and APGD-T
(ℓ∞) from the same starting point.  For the iterate test both sides see the *same* model and gradients:
our attack runs on the PyTorch model through a callback whose gradient is the reference's loss gradient, so
what is compared is the attack (steps, momentum, projections, checkpoints, conditions 1 and 2, restarts from
the best point, the robust set), not two float32 convolution libraries.  One float32 effect remains and is
excluded explicitly: a correctly classified example with cross-entropy ≈ 10⁻⁶ has losses quantized to
float32's spacing near 1, where our and PyTorch's log-sum-exp round differently, so the rises counted by
condition 1 differ; such examples (CE < 10⁻⁴ at some iterate) must still get the same robust verdict.
"""

from __future__ import annotations

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.attacks import apgd as ap
from rwsjax.attacks.pgd import robust_correct
from rwsjax.train import steps

from conftest import reference_autoattack  # noqa: E402

DATA_DIR = os.environ.get("TFDS_DATA_DIR", "")


def _reference():
    torch, pyautoattack = reference_autoattack()
    return torch, pyautoattack.autopgd_base


def test_schedule_by_hand():
    assert ap.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert ap.checkpoints(10) == list(range(2, 11))
    assert ap.schedule(20)[:4] == ((4, 4), (7, 3), (9, 2), (10, 1))
    assert ap.checkpoints(1) == [1]
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        ap.checkpoints(0)


def test_schedule_equals_the_reference_for_every_n_iter():
    """The reference's own window sizes (its constructor) for n_iter 1..300, and its loop's checkpoints
    (``check_oscillation`` calls recorded while ``attack_single_run`` runs) for a spread of n_iter."""
    torch, ref = _reference()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(1, 1, 2, 2), torch.tensor([0])
    for n in range(1, 301):
        att = ref.APGDAttack(net, n_iter=n, eps=0.1, device="cpu")
        k, decr, k_min = att.n_iter_2, att.size_decr, att.n_iter_min
        w, expected = 0, []
        while w + k <= n:
            w += k
            expected.append((w, k))
            k = max(k - decr, k_min)
        assert ap.schedule(n) == tuple(expected), n
    for n in [*range(1, 31), 50, 64, 100, 137, 300]:
        att = ref.APGDAttack(net, n_iter=n, eps=0.1, device="cpu")
        calls, check = [], att.check_oscillation
        att.check_oscillation = lambda L, j, k, y5, k3=0.75: (calls.append((j + 1, k)), check(L, j, k, y5, k3))[1]
        att.init_hyperparam(x)
        with torch.no_grad():
            att.attack_single_run(x, y)
        assert ap.schedule(n) == tuple(calls), n


def test_dlr_losses_by_hand():
    z = jnp.array([[4.0, 1.0, 3.0, 0.0], [1.0, 5.0, 3.0, 0.0]])
    y = jnp.array([0, 0])
    # untargeted: −(z_y − max_{i≠y} z_i)/(z_π1 − z_π3): −(4 − 3)/(4 − 1) and −(1 − 5)/(5 − 1)
    np.testing.assert_allclose(ap.dlr_loss(z, y), [-1 / 3, 1.0], rtol=1e-6)
    # targeted at class 1: −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2) = −(4 − 1)/(4 − 0.5)
    np.testing.assert_allclose(ap.dlr_targeted_loss(z[:1], y[:1], jnp.array([1])), [-3 / 3.5], rtol=1e-6)
    np.testing.assert_array_equal(ap.target_classes(z, 2), [2, 2])
    np.testing.assert_array_equal(ap.target_classes(z, 3), [1, 0])


def test_step_size_is_halved_at_every_checkpoint_when_the_loss_never_rises():
    """A constant loss never rises, so condition 1 holds at every checkpoint: η = 2ε, then halved after
    each checkpoint of the reference schedule."""
    eps, n = 0.1, 30
    logits_fn = lambda x: jnp.zeros((x.shape[0], 3)) + 0.0 * jnp.sum(x)  # noqa: E731
    x = jnp.full((2, 2, 2, 1), 0.5)
    _, robust, trace = ap.apgd(logits_fn, x, jnp.array([0, 1]), jax.random.PRNGKey(0), eps=eps, n_iter=n,
                               return_trace=True)
    checks, expected, step = ap.checkpoints(n), [], 2 * eps
    for k in range(n + 1):  # trace["steps"][k]: the step size in force after k iterations
        expected.append(step)
        if k + 1 in checks:
            step /= 2
    np.testing.assert_allclose(trace["steps"][:, 0], expected, rtol=1e-6)
    assert robust.dtype == jnp.bool_


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_apgd_stays_in_the_ball_and_box(tiny_resnet, cifar_test_batch, norm, eps):
    model, variables = tiny_resnet
    x = jnp.asarray(cifar_test_batch[0][:16], jnp.float32) / 255.0
    y = jnp.asarray(cifar_test_batch[1][:16])
    fn = steps.eval_logits_fn(model, variables)
    for loss, targets in (("ce", None), ("dlr_t", ap.target_classes(fn(x), 2))):
        x_adv, robust = jax.jit(lambda k: ap.apgd(fn, x, y, k, eps=eps, n_iter=12, norm=norm, loss=loss,
                                                  targets=targets))(jax.random.PRNGKey(1))
        chex.assert_shape(x_adv, x.shape)
        assert float(jnp.min(x_adv)) >= 0.0 and float(jnp.max(x_adv)) <= 1.0
        d = (x_adv - x).reshape(16, -1)
        size = jnp.max(jnp.abs(d), -1) if norm == "linf" else jnp.linalg.norm(d, axis=-1)
        assert float(jnp.max(size)) <= eps * (1 + 1e-5) + 1e-7
        pred = jnp.argmax(fn(x_adv), -1)  # the returned point of a broken example is misclassified
        assert bool(jnp.all(jnp.where(robust, True, pred != y)))


def test_targeted_apgd_reaches_its_target_on_a_linear_model():
    """Logits W·x: where moving by ε·sign(w_t − w_y) provably makes t the argmax, APGD-T must reach t."""
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
    _, robust = jax.jit(lambda k: ap.apgd(fn, x, y, k, eps=8 / 255, n_iter=10))(jax.random.PRNGKey(0))
    assert int(jnp.sum(robust)) <= int(jnp.sum(pgd_robust))


def _torch_model():
    torch, ref = _reference()
    import torch_models
    from rwsjax.train.checkpoint import checkpoint_path
    path = checkpoint_path("pyautoattack:model_test.pt")
    if not os.path.isdir(os.path.join(DATA_DIR, "cifar10")):
        pytest.skip("set TFDS_DATA_DIR to a dir holding prepared cifar10")
    twin = torch_models.resnet18()
    twin.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    return torch, ref, twin.eval()


def _oracle(torch, twin, criterion, labels, seen):
    """JAX logits of the PyTorch ``twin`` (each input recorded in ``seen``) whose VJP is the input gradient
    of ``criterion(twin(x), labels).sum()`` computed by PyTorch — the reference's own gradient."""
    nchw = lambda a: torch.tensor(np.asarray(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731

    def forward(u):
        seen.append(np.array(u))
        with torch.no_grad():
            return twin(nchw(u)).numpy()

    def gradient(u):
        ut = nchw(u).requires_grad_()
        g = torch.autograd.grad(criterion(twin(ut), labels).sum(), [ut])[0]
        return g.permute(0, 2, 3, 1).numpy()

    @jax.custom_vjp
    def logits_fn(u):
        return jax.pure_callback(forward, jax.ShapeDtypeStruct((u.shape[0], 10), jnp.float32), u)

    logits_fn.defvjp(lambda u: (logits_fn(u), u),
                     lambda u, g: (jax.pure_callback(gradient, jax.ShapeDtypeStruct(u.shape, jnp.float32), u),))
    return logits_fn


@pytest.mark.parametrize("norm, eps, loss", [("linf", 1 / 255, "ce"), ("l2", 0.1, "ce"), ("linf", 1 / 255, "dlr_t")])
def test_iterates_equal_the_reference(norm, eps, loss):
    """Same start, same model: every evaluated iterate, the best loss and the robust set of the reference's
    ``attack_single_run`` (APGDAttack / APGDAttack_targeted, 16 iterations: 12 checkpoints)."""
    torch, ref, twin = _torch_model()
    from rwsjax.data.sources import load_split
    torch.set_num_threads(os.cpu_count() or 1)
    split = load_split("cifar10", "test", DATA_DIR, np.arange(4, 8), progress=False)
    x = split.images.astype(np.float32) / 255.0
    xt, yt = torch.tensor(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(split.labels.astype(np.int64))
    nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy().copy()  # noqa: E731
    ref_seen = []

    class Recorded(torch.nn.Module):
        def forward(self, u):
            ref_seen.append(nhwc(u))
            return twin(u)

    n_iter, name = 16, "Linf" if norm == "linf" else "L2"
    if loss == "dlr_t":
        att = ref.APGDAttack_targeted(Recorded(), n_iter=n_iter, norm=name, eps=eps, device="cpu")
        with torch.no_grad():
            att.y_target = twin(xt).sort(dim=1)[1][:, -2]
        criterion, targets = att.dlr_loss_targeted, jnp.asarray(att.y_target.numpy(), jnp.int32)
    else:
        att = ref.APGDAttack(Recorded(), n_iter=n_iter, norm=name, eps=eps, device="cpu", loss="ce")
        criterion, targets = torch.nn.CrossEntropyLoss(reduction="none"), None
    att.init_hyperparam(xt)
    torch.manual_seed(0)
    t = 2 * torch.rand(xt.shape) - 1 if norm == "linf" else torch.randn(xt.shape)
    x_init = (xt + eps * att.normalize(t)).clamp(0, 1)
    with torch.no_grad():
        _, ref_acc, ref_loss_best, _ = att.attack_single_run(xt, yt, x_init=x_init.clone())

    seen = []
    fn = _oracle(torch, twin, criterion, yt, seen)
    _, robust, trace = ap.apgd(fn, jnp.asarray(x), jnp.asarray(split.labels, jnp.int32), None, eps=eps,
                               n_iter=n_iter, norm=norm, loss=loss, targets=targets, x_init=jnp.asarray(nhwc(x_init)),
                               return_trace=True)
    jax.block_until_ready(robust)
    jax.effects_barrier()
    np.testing.assert_array_equal(np.asarray(robust), ref_acc.numpy())
    assert len(seen) == len(ref_seen) == n_iter + 1
    losses = np.asarray(trace["losses"])
    kept = np.ones(4, bool) if loss != "ce" else losses.min(0) > 1e-4
    assert kept.sum() >= 3
    tol = 1e-6 if norm == "linf" else 1e-3  # ℓ2: per-example norms summed in a different order
    for k, (a, b) in enumerate(zip(ref_seen, seen)):
        np.testing.assert_allclose(b[kept], a[kept], atol=tol, err_msg=f"iterate {k}")
    np.testing.assert_allclose(np.asarray(trace["loss_best"])[kept], ref_loss_best.numpy()[kept], rtol=1e-4, atol=1e-6)
