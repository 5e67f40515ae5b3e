"""One training step of PGD-AT, TRADES and MART against PyTorch transliterations of their official code.

References, transliterated line by line (the random start is passed in, so both sides start from the same
point; augmentation off; one SGD step with momentum 0.9, weight decay 5e-4, lr 0.1):

* PGD-AT — Bag of Tricks (P2333/Bag-of-Tricks-for-AT ``train_cifar.py``): ``attack_pgd`` (lines 104-218:
  uniform start clamped to the image range, signed steps, the final ``all_loss`` pass) with BN in train
  mode (the default: every attack forward pass updates the running statistics; ``--BNeval``: eval mode),
  then the training pass on ``clamp(X + δ)`` (lines 721-775).  rwsjax: ``at.attack_bn=train`` / ``eval``.
* TRADES — yaodongyu/TRADES ``trades.py`` ``trades_loss`` (BN eval while crafting, start x + 0.001·N(0, I)
  not clipped, three train-mode passes).  rwsjax: ``attack_bn=eval``, ``clip_start=False``,
  ``extra_clean_pass=True``.
* MART — YisenWang/MART ``mart.py`` ``mart_loss``.  rwsjax: ``attack_bn=eval``, ``clip_start=False``.

Model: the CIFAR-10 ResNet-18 of the official AutoAttack package (``pyautoattack/examples/model_test.pt``,
kuangliu layout, [0, 1] inputs), in rwsjax and in its PyTorch twin; 16 real CIFAR-10 test images.
Compared: the loss, every parameter after the step and every BatchNorm running statistic.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from test_mrc_reference import DATA_DIR, MODEL  # noqa: E402

pytestmark = pytest.mark.skipif(
    MODEL is None or not os.path.isdir(os.path.join(DATA_DIR, "cifar10")),
    reason="needs pyautoattack (its examples/model_test.pt) and the prepared CIFAR-10")

EPS, STEP, STEPS, BETA = 8 / 255, 2 / 255, 3, 6.0


def bag_of_tricks_step(model, opt, X, y, delta, *, bn_eval: bool, steps: int = 3):
    """``attack_pgd`` (restarts 1, ℓ∞, no early stop) + the training pass of ``train_cifar.py``."""
    if bn_eval:
        model.eval()
    delta = torch.clamp(delta, -X, 1 - X)  # clamp(delta, lower_limit - X, upper_limit - X), [0, 1] images
    delta.requires_grad = True
    for _ in range(steps):
        output = model(X + delta)
        loss = F.cross_entropy(output, y)
        loss.backward()
        grad = delta.grad.detach()
        d = torch.clamp(delta + STEP * torch.sign(grad), min=-EPS, max=EPS)
        d = torch.clamp(d, -X, 1 - X)
        delta.data = d
        delta.grad.zero_()
    F.cross_entropy(model(X + delta), y, reduction="none")  # all_loss: one more pass (restarts bookkeeping)
    if bn_eval:
        model.train()
    robust_output = model(torch.clamp(X + delta.detach(), 0, 1))
    robust_loss = F.cross_entropy(robust_output, y)
    opt.zero_grad()
    robust_loss.backward()
    opt.step()
    return robust_loss.item(), torch.clamp(X + delta.detach(), 0, 1)


def trades_step(model, opt, x_natural, y, noise, steps: int = 3):
    """``trades_loss`` (ℓ∞) with ``0.001 * torch.randn`` given as ``noise``, then the optimizer step."""
    criterion_kl = torch.nn.KLDivLoss(reduction="sum")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * noise
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - EPS), x_natural + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    opt.zero_grad()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv), dim=1),
                                                    F.softmax(model(x_natural), dim=1))
    loss = loss_natural + BETA * loss_robust
    loss.backward()
    opt.step()
    return loss.item(), x_adv


def mart_step(model, opt, x_natural, y, noise, steps: int = 3):
    """``mart_loss`` (ℓ∞) with ``0.001 * torch.randn`` given as ``noise``, then the optimizer step."""
    kl = torch.nn.KLDivLoss(reduction="none")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * noise
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_ce = F.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(loss_ce, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - EPS), x_natural + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    opt.zero_grad()
    logits = model(x_natural)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    loss_robust = (1.0 / batch_size) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs))
    loss = loss_adv + float(BETA) * loss_robust
    loss.backward()
    opt.step()
    return loss.item(), x_adv


@pytest.fixture(scope="module")
def setup():
    import jax

    import torch_models
    from rwsjax.data.sources import load_split
    from rwsjax.models import pytorch_io
    from rwsjax.models.registry import create_model

    torch.set_num_threads(os.cpu_count() or 1)
    model = create_model("resnet18", num_classes=10, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    like = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32), train=False)
    variables = jax.device_get(pytorch_io.load_pytorch_checkpoint(MODEL, like).variables)
    twin = torch_models.resnet18()
    twin.load_state_dict(torch.load(MODEL, map_location="cpu"), strict=True)
    split = load_split("cifar10", "test", DATA_DIR, np.arange(16) * 37, progress=False)
    return model, variables, twin, split


CASES = {  # name: (rwsjax regime and switches, official step)
    "pgd_at_bn_train": (dict(regime="pgd_at", attack_bn="train"),
                        lambda *a, **k: bag_of_tricks_step(*a, bn_eval=False, **k)),
    "pgd_at_bn_eval": (dict(regime="pgd_at", attack_bn="eval"),
                       lambda *a, **k: bag_of_tricks_step(*a, bn_eval=True, **k)),
    "trades": (dict(regime="trades", attack_bn="eval", clip_start=False, extra_clean_pass=True, beta=BETA),
               trades_step),
    "mart": (dict(regime="mart", attack_bn="eval", clip_start=False, beta=BETA), mart_step),
}


def _start(regime: str, key, shape):
    """The random start the step draws (fold_in(key, step 0), the attack's half of the split)."""
    import jax
    k_adv = jax.random.split(jax.random.fold_in(key, 0))[1]
    if regime == "pgd_at":
        return k_adv, np.asarray(jax.random.uniform(k_adv, shape, np.float32, -EPS, EPS))
    return k_adv, np.asarray(jax.random.normal(k_adv, shape, np.float32))


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("case", list(CASES))
def test_one_step_equals_the_official_code(setup, case):
    """No attack steps (the start only, where nothing is left to float noise): the same loss, every weight
    and every BatchNorm statistic after the step — the objective, the passes and the BN modes."""
    import jax

    from rwsjax.models import pytorch_io
    from rwsjax.train import sharding, steps
    from rwsjax.train.state import TrainState, sgd

    model, variables, twin, split = setup
    options, official = CASES[case]
    mesh = sharding.make_mesh(jax.devices()[:1])
    tx = sgd(0.1, momentum=0.9, weight_decay=5e-4, steps_per_epoch=1)
    attack = dict(eps=EPS, step_size=STEP, steps=0, norm="linf", random_init=True, unroll=True)
    step = steps.make_train_step(model, tx, mesh, attack=attack, augment=False, **options)
    key = jax.random.PRNGKey(5)
    state = sharding.replicate(TrainState.create(copy.deepcopy(variables), tx), mesh)
    images, labels = sharding.shard_batch((split.images, split.labels), mesh)
    new_state, metrics = jax.device_get(step(state, images, labels, key))

    # the images as the step computes them (XLA's u8 / 255 differs from NumPy's in the last bit of 40% of pixels)
    x = np.asarray(jax.jit(lambda u: u.astype(np.float32) / 255.0)(split.images))
    _, start = _start(options["regime"], key, x.shape)
    ref = copy.deepcopy(twin).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss, _ = official(ref, opt, _nchw(x), torch.from_numpy(split.labels.astype(np.int64)), _nchw(start), steps=0)

    assert float(metrics["loss"]) == pytest.approx(loss, rel=1e-5)
    ours = pytorch_io.export_state_dict({"params": new_state.params, "batch_stats": new_state.batch_stats})
    before = twin.state_dict()
    moved = 0.0
    for name, value in ref.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        theirs, mine, was = value.numpy(), np.asarray(ours[name]), before[name].numpy()
        change = np.abs(theirs - was).max()
        if name.endswith("running_var"):
            # PyTorch averages the unbiased batch variance (× n/(n−1), n = B·H·W ≥ 1,024 here), rwsjax (as
            # Flax) the biased one (docs/protocols.md): at most 1/(n−1) relative per update
            np.testing.assert_allclose(mine, theirs, rtol=3 / 1023, err_msg=f"{case} {name}")
            continue
        # the same update: the difference is a small fraction of how far the step moved the tensor (a missing
        # or extra BN pass moves the statistics by a whole momentum update, ≈ 10× this)
        assert np.abs(mine - theirs).max() <= 1e-2 * change + 1e-6, (case, name, np.abs(mine - theirs).max(), change)
        moved = max(moved, change)
    assert moved > 1e-4  # the step moved the weights (and, in train mode, the statistics)


@pytest.mark.parametrize("case", list(CASES))
def test_training_attack_equals_the_official_loop(setup, case):
    """The first two PGD steps as the training step crafts them (start, loss, BN mode, projection), taken from the
    official loop's own iterate, against the official step: the same next iterate but for pixels whose gradient
    is float noise — at most as many as the official float32 step itself gets wrong against the same step in
    float64 (TRADES' first KL gradient, of two nearly equal predictions, is mostly noise on confident
    examples), and ≤ 1 pixel in 10³ otherwise. Stepping from the official iterate keeps one step's sign flips
    from compounding (over a whole run they grow with the hardware's summation order)."""
    import jax

    from rwsjax.attacks.pgd import pgd
    from rwsjax.train import losses, regimes, steps

    model, variables, twin, split = setup
    options, official = CASES[case]
    r = regimes.get(options["regime"])
    x = np.asarray(jax.jit(lambda u: u.astype(np.float32) / 255.0)(split.images))
    y = torch.from_numpy(split.labels.astype(np.int64))
    _, start = _start(options["regime"], jax.random.PRNGKey(5), x.shape)

    @jax.jit
    def step(v, z):
        fn = (steps.eval_logits_fn if options["attack_bn"] == "eval" else steps.batch_stats_logits_fn)(model, v)
        loss_fn = None
        if r.attack_loss == "kl":
            clean = jax.lax.stop_gradient(fn(x))
            loss_fn = lambda logits, _: losses.kl_divergence(clean, logits)  # noqa: E731
        return pgd(fn, x, split.labels, None, eps=EPS, step_size=STEP, steps=1, gaussian_start=r.attack_start,
                   clip_start=options.get("clip_start", True), loss_fn=loss_fn, x_init=z)

    def official_step(net, dtype, z):  # one official step from z (a fresh copy: TRADES/MART move BN statistics)
        xx, zz = _nchw(x).to(dtype), _nchw(z).to(dtype)
        m = copy.deepcopy(net).to(dtype).train()
        _, out = official(m, torch.optim.SGD(m.parameters(), lr=0.0), xx, y,
                          zz - xx if options["regime"] == "pgd_at" else (zz - xx) / 0.001, steps=1)
        return out.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)

    # the official start: clamp(x + δ) (Bag of Tricks), x + 0.001·noise unclipped (TRADES, MART)
    z = np.clip(x + np.clip(start, -x, 1 - x), 0, 1) if options["regime"] == "pgd_at" else x + 0.001 * start
    for t in range(2):  # from the start, and from a later iterate
        ours, theirs, exact = np.asarray(step(variables, z)), official_step(twin, torch.float32, z), \
            official_step(twin, torch.float64, z)
        differ = lambda a, b: float(np.mean(np.abs(a - b) > 1e-6))  # noqa: E731
        assert differ(ours, theirs) <= max(1e-3, differ(theirs, exact)), \
            (case, t, differ(ours, theirs), differ(theirs, exact))
        z = theirs
    assert differ(z, x) > 0.5  # the steps moved the images
