"""Pure, jitted train and evaluation steps.

Every step is ``f(state, images_u8, labels, key) -> (state', metrics)`` and is
compiled once per shape with the batch sharded over the mesh and the state
replicated (see :mod:`rwsjax.train.sharding`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rwsjax.attacks import pgd as pgd_lib
from rwsjax.data.augment import random_crop_flip
from rwsjax.train import losses, sharding
from rwsjax.train.state import TrainState

REGIMES = ("standard", "pgd_at", "trades", "mart")
ATTACK_BN_MODES = ("batch", "eval")
BN_MODES = ("train", "frozen")


def attack_kwargs(cfg) -> dict:
    """PGD keyword arguments from an ``attack`` config block (eps/step in pixel units)."""
    return dict(eps=float(cfg.eps), step_size=float(cfg.step_size), steps=int(cfg.steps),
                norm=cfg.norm, random_init=bool(cfg.random_start), unroll=bool(cfg.unroll))


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
) -> Callable:
    """Build the jitted training step.

    Args:
      model: Flax model taking [0,1] images ``[B, H, W, C]``.
      tx: optax optimizer (a masked one freezes parameters, see ``rift.finetune``).
      mesh: device mesh; batch sharded over ``"data"``, state replicated.
      regime: ``"standard"`` (clean cross-entropy), ``"pgd_at"`` (Madry et
        al. 2018: minimize the cross-entropy on PGD examples, Eq. 2.1),
        ``"trades"`` (Zhang et al. 2019, Eq. 5: CE + β·KL, x' from PGD on the
        KL) or ``"mart"`` (Wang et al. 2020: boosted CE + β·weighted KL, x' from
        PGD on the CE); TRADES/MART start their attack at x + 0.001·N(0, I) as
        the official code does, and run the clean and adversarial batches as
        two train-mode passes (BN statistics updated by both).
      attack: PGD keyword arguments (:func:`attack_kwargs`) for ``pgd_at``.
      attack_bn: BatchNorm while crafting training attacks: ``"batch"`` (batch
        statistics, running averages not updated — Bag of Tricks practice) or
        ``"eval"`` (running statistics).
      bn_mode: ``"train"`` (batch statistics, running averages updated) or
        ``"frozen"`` (running statistics used and kept).
      augment: pad-4 reflect random crop + horizontal flip on device.
      beta: the TRADES/MART trade-off β (both papers: 6 on CIFAR-10).

    Returns:
      ``step(state, images_u8 [B,H,W,C] uint8, labels [B] int32, key) ->
      (state, {"loss", "accuracy"})`` — accuracy is on the examples trained on
      (adversarial ones for ``pgd_at``), in [0, 1].

    Raises:
      ValueError: unknown ``regime``, ``attack_bn`` or ``bn_mode``.
    """
    for value, valid, what in ((regime, REGIMES, "regime"), (attack_bn, ATTACK_BN_MODES, "attack_bn"),
                               (bn_mode, BN_MODES, "bn_mode")):
        if value not in valid:
            raise ValueError(f"unknown {what} {value!r}; valid: {valid}")

    def step(state: TrainState, images_u8, labels, key):
        k_aug, k_adv = jax.random.split(key)
        x = _images(images_u8)
        if augment:
            x = random_crop_flip(k_aug, x)
        x_adv = None
        if regime != "standard":
            v = state.variables
            fn = batch_stats_logits_fn(model, v) if attack_bn == "batch" else eval_logits_fn(model, v)
            if regime == "pgd_at":
                x = pgd_lib.pgd(fn, x, labels, k_adv, **attack)
            elif regime == "trades":
                clean = jax.lax.stop_gradient(fn(x))
                x_adv = pgd_lib.pgd(fn, x, labels, k_adv, **attack, gaussian_start=0.001,
                                    loss_fn=lambda logits, _: losses.kl_divergence(clean, logits))
            else:
                x_adv = pgd_lib.pgd(fn, x, labels, k_adv, **attack, gaussian_start=0.001)

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            if x_adv is not None:  # TRADES / MART: clean and adversarial batches, two train-mode passes
                nat, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
                adv, upd = model.apply({"params": params, **upd}, x_adv, train=True, mutable=["batch_stats"])
                objective = losses.trades_loss if regime == "trades" else losses.mart_loss
                return objective(nat, adv, labels, beta), (adv, upd["batch_stats"])
            if bn_mode == "train":
                logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
                new_stats = updates["batch_stats"]
            else:
                logits, new_stats = model.apply(variables, x, train=False), state.batch_stats
            loss = jnp.mean(pgd_lib.cross_entropy(logits, labels))
            return loss, (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
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
      -> {"clean": int, "robust": int, "loss": float}`` — counts of correct
      masked examples (robust = correct under every one of ``restarts`` PGD
      runs; no ``robust`` entry when ``attack`` is None) and the summed clean loss.
    """

    def evaluate(variables, images_u8, labels, mask, key):
        fn = eval_logits_fn(model, variables)
        x = _images(images_u8)
        logits = fn(x)
        clean = jnp.argmax(logits, -1) == labels
        loss = jnp.sum(jnp.where(mask, pgd_lib.cross_entropy(logits, labels), 0.0))
        out = {"clean": jnp.sum(clean & mask), "loss": loss}
        if attack is not None:
            _, robust = pgd_lib.robust_correct(fn, x, labels, key, restarts=restarts, **attack)
            out["robust"] = jnp.sum(robust & mask)
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
