"""Pure, jitted train and evaluation steps.

Every train step is ``f(state, images_u8, labels, key) -> (state', metrics)`` and is
compiled once per shape with the batch sharded over the mesh and the state
replicated (see :mod:`rwsjax.train.sharding`).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rwsjax.attacks import pgd as pgd_lib
from rwsjax.data.augment import random_crop_flip
from rwsjax.train import awp as awp_lib
from rwsjax.train import regimes, sharding
from rwsjax.train.state import TrainState

ATTACK_BN_MODES = ("batch", "eval", "train")
BN_MODES = ("train", "frozen")


def resolve_unroll(unroll: bool | None) -> bool:
    """``None`` (auto) → unrolled attack loops on XLA:CPU (measured 5–8× faster there) and rolled ones on
    GPU/TPU (the same speed there, and 3× faster to compile); a bool is kept."""
    return jax.default_backend() == "cpu" if unroll is None else bool(unroll)


def attack_kwargs(cfg) -> dict:
    """PGD keyword arguments from an ``attack`` config block (eps/step in pixel units)."""
    return dict(eps=float(cfg.eps), step_size=float(cfg.step_size), steps=int(cfg.steps),
                norm=cfg.norm, random_init=bool(cfg.random_start), unroll=resolve_unroll(cfg.get("unroll")))


def eval_logits_fn(model: nn.Module, variables: dict) -> Callable[[jax.Array], jax.Array]:
    """Logits with BatchNorm on running statistics (evaluation mode)."""
    return lambda x: model.apply(variables, x, train=False)


def batch_stats_logits_fn(model: nn.Module, variables: dict) -> Callable[[jax.Array], jax.Array]:
    """Logits with BatchNorm on the current batch's statistics, running averages untouched."""
    return lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"])[0]


def _images(images_u8: jax.Array) -> jax.Array:
    return images_u8.astype(jnp.float32) / 255.0


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    mesh,
    *,
    regime: str = "standard",
    attack: dict | None = None,
    attack_bn: str = "batch",
    bn_mode: str = "train",
    augment: bool = True,
    beta: float = 6.0,
    awp_gamma: float = 0.0,
    awp_warmup_steps: int = 0,
    clip_start: bool = True,
    extra_clean_pass: bool = False,
) -> Callable:
    """Build the jitted training step.

    Args:
      model: Flax model taking [0,1] images ``[B, H, W, C]``.
      tx: optax optimizer (a masked one freezes parameters, see ``rift.finetune``).
      mesh: device mesh; batch sharded over ``"data"``, state replicated.
      regime: a name of :data:`rwsjax.train.regimes.REGIMES`: ``"standard"``
        (clean cross-entropy), ``"pgd_at"`` (Madry et al. 2018: cross-entropy
        on PGD examples, Eq. 2.1), ``"trades"`` (Zhang et al. 2019, Eq. 5: CE +
        β·KL, x' from PGD on the KL), ``"mart"`` (Wang et al. 2020: boosted CE +
        β·weighted KL, x' from PGD on the CE), ``"fgsm_rs"`` (Wong et al. 2020: PGD-AT with one
        step of 1.25·ε from a uniform start, whatever ``attack`` says of steps and step size) or ``"score"`` (Pang et al. 2022:
        squared errors between probability vectors, x' from PGD on
        ‖p(x') − p(x)‖²; see :mod:`rwsjax.train.losses`).  The entry gives the
        attack's loss and start (TRADES/MART: x + 0.001·N(0, I), as in their
        official code; PGD-AT/SCORE: a uniform ε-ball sample) and the
        objective; here the pair objectives (TRADES/MART/SCORE) run the clean
        and the adversarial batch as two train-mode passes (BN statistics
        updated by both).
      attack: PGD keyword arguments (:func:`attack_kwargs`) for the adversarial regimes.
      attack_bn: BatchNorm while crafting training attacks: ``"batch"`` (batch
        statistics, running averages not updated; rwsjax's default), ``"eval"``
        (running statistics; the official TRADES/MART code, Bag of Tricks'
        ``--BNeval``) or ``"train"`` (batch statistics, and the running averages
        updated by every attack forward pass — each iterate and the final
        example, as Bag of Tricks' default ``attack_pgd``, ``train_cifar.py:140,
        209`` — before the training pass; regimes without a pair objective only).
      bn_mode: ``"train"`` (batch statistics, running averages updated) or
        ``"frozen"`` (running statistics used and kept).
      augment: pad-4 reflect random crop + horizontal flip on device.
      beta: the TRADES/MART/SCORE trade-off β (the papers' values are each
        regime's ``default_beta``: 6, 6, 4; this argument does not default to them).
      awp_gamma: adversarial weight perturbation γ (Wu et al. 2020; 0 = off):
        the gradient is taken at w + v with v from :func:`rwsjax.train.awp.perturbation`
        of the same objective, and applied to w.  Needs an adversarial regime.
      awp_warmup_steps: AWP is off (v = 0) while ``state.step`` is below this.
      clip_start: the regimes with a Gaussian start (TRADES/MART): clip it to [0, 1] before the first
        gradient (``False``: the official code, see :func:`rwsjax.attacks.pgd.pgd`).
      extra_clean_pass: TRADES: a third train-mode pass on the clean batch (the official code's KL
        target, ``trades.py:79-82``): the same logits and gradient, one more running-average update.

    Returns:
      ``step(state, images_u8 [B,H,W,C] uint8, labels [B] int32, key) ->
      (state, {"loss", "accuracy"})`` — accuracy is on the examples trained on
      (adversarial ones for ``pgd_at``), in [0, 1].  ``key`` is the run's base
      key, the same every step: the step's own randomness (augmentation,
      attack start) is ``fold_in(key, state.step)``, made inside the step, so a
      loop passes one device array and a resumed run draws what an
      uninterrupted one would.

    Raises:
      ValueError: unknown ``regime``, ``attack_bn`` or ``bn_mode``; AWP with a regime without attack
        (``"standard"``); ``attack_bn="train"`` with a pair objective; ``extra_clean_pass`` without one.
    """
    spec = regimes.get(regime)
    for value, valid, what in ((attack_bn, ATTACK_BN_MODES, "attack_bn"), (bn_mode, BN_MODES, "bn_mode")):
        if value not in valid:
            raise ValueError(f"unknown {what} {value!r}; valid: {valid}")
    if attack_bn == "train" and spec.objective is not None:
        raise ValueError(f"attack_bn='train' is Bag of Tricks' PGD-AT mode; {spec.label} crafts its attack with "
                         "'batch' or 'eval' (its official code: eval)")
    if extra_clean_pass and spec.objective is None:
        raise ValueError(f"extra_clean_pass is TRADES's third train-mode pass; {spec.label} has no pair objective")
    if awp_gamma and not spec.adversarial:
        names = [n for n, r in regimes.REGIMES.items() if r.adversarial]
        raise ValueError(f"AWP perturbs the weights against an adversarial loss; it needs regime "
                         f"{', '.join(names[:-1])} or {names[-1]}, not {regime!r}")

    def step(state: TrainState, images_u8, labels, key):
        k_aug, k_adv = jax.random.split(jax.random.fold_in(key, state.step))
        x = _images(images_u8)
        if augment:
            x = random_crop_flip(k_aug, x)
        x_adv = None
        batch_stats = state.batch_stats
        if spec.adversarial:
            v = state.variables
            fn = eval_logits_fn(model, v) if attack_bn == "eval" else batch_stats_logits_fn(model, v)
            attack_loss = None  # "ce": PGD's own cross-entropy of the labels
            if spec.attack_loss != "ce":  # move the prediction away from the clean one
                clean = jax.lax.stop_gradient(fn(x))
                distance = regimes.PREDICTION_DISTANCES[spec.attack_loss]
                attack_loss = lambda logits, _: distance(clean, logits)
            crafted = pgd_lib.pgd(fn, x, labels, k_adv, **spec.attack(attack), gaussian_start=spec.attack_start,
                                  loss_fn=attack_loss, clip_start=clip_start, iterates=attack_bn == "train")
            if attack_bn == "train":  # every attack forward pass moves the running averages (Bag of Tricks)
                crafted, seen = crafted
                for z in [*seen, crafted]:
                    batch_stats = model.apply({"params": state.params, "batch_stats": batch_stats}, z, train=True,
                                              mutable=["batch_stats"])[1]["batch_stats"]
            if spec.objective is None:  # train on the adversarial examples alone
                x = crafted
            else:
                x_adv = crafted

        def loss_fn(params):
            variables = {"params": params, "batch_stats": batch_stats}
            if x_adv is not None:  # pair objective: clean and adversarial batches, two train-mode passes
                nat, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
                adv, upd = model.apply({"params": params, **upd}, x_adv, train=True, mutable=["batch_stats"])
                if extra_clean_pass:  # TRADES's KL target: the same logits again, one more running-average update
                    upd = model.apply({"params": params, **upd}, x, train=True, mutable=["batch_stats"])[1]
                return spec.objective(nat, adv, labels, beta), (adv, upd["batch_stats"])
            if bn_mode == "train":
                logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
                new_stats = updates["batch_stats"]
            else:
                logits, new_stats = model.apply(variables, x, train=False), batch_stats
            loss = jnp.mean(pgd_lib.cross_entropy(logits, labels))
            return loss, (logits, new_stats)

        at = state.params
        if awp_gamma:  # AWP: gradient at w + v (v from one ascent step of the same objective), applied to w
            gamma = jnp.where(state.step >= awp_warmup_steps, awp_gamma, 0.0)
            ascent = jax.grad(lambda p: loss_fn(p)[0])(state.params)
            at = jax.tree.map(jnp.add, state.params, awp_lib.perturbation(state.params, ascent, gamma))
        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(at)
        updates, opt_state = tx.update(grads, state.opt_state, at)  # weight decay on w + v, as the official code
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                                  opt_state=opt_state)
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
        return new_state, metrics

    rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data, data, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,))


def make_eval_step(model: nn.Module, mesh, *, attack: dict | None = None, restarts: int = 1) -> Callable:
    """Build the jitted evaluation step (BatchNorm on running statistics).

    Returns:
      ``evaluate(variables, images_u8 [B,H,W,C], labels [B], mask [B] bool, key)
      -> {"clean": int, "robust": int, "loss": float, "per_example": {...}}`` — counts of correct
      masked examples (robust = correct under every one of ``restarts`` PGD
      runs; no ``robust`` entry when ``attack`` is None) and the summed clean loss;
      with several restarts also ``"robust_run{i}"``: correct under run i alone.  ``per_example``:
      the same as bool ``[B]`` arrays of the whole (global) batch, replicated, with its ``"mask"``.
    """

    def evaluate(variables, images_u8, labels, mask, key):
        fn = eval_logits_fn(model, variables)
        x = _images(images_u8)
        logits = fn(x)
        clean = jnp.argmax(logits, -1) == labels
        loss = jnp.sum(jnp.where(mask, pgd_lib.cross_entropy(logits, labels), 0.0))
        out = {"clean": jnp.sum(clean & mask), "loss": loss}
        per_example = {"clean": clean, "mask": mask}
        if attack is not None:
            _, robust, runs = pgd_lib.robust_correct(fn, x, labels, key, restarts=restarts, per_run=True, **attack)
            out["robust"] = jnp.sum(robust & mask)
            per_example["robust"] = robust
            if restarts > 1:
                out.update({f"robust_run{i}": jnp.sum(r & mask) for i, r in enumerate(runs)})
        out["per_example"] = per_example
        return out

    rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(evaluate, in_shardings=(rep, data, data, data, rep), out_shardings=rep)


def make_adversarial_examples(model: nn.Module, mesh, *, attack: dict) -> Callable:
    """Jitted ``(variables, images_u8, labels, key) -> x_adv`` float32 [0,1], BN in eval mode.

    The batch goes in sharded; ``x_adv`` comes out whole (replicated) on every device and process.
    """

    def craft(variables, images_u8, labels, key):
        return pgd_lib.pgd(eval_logits_fn(model, variables), _images(images_u8), labels, key, **attack)

    rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(craft, in_shardings=(rep, data, data, rep), out_shardings=rep)
