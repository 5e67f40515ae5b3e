"""Training state: a pytree of arrays, nothing else (the optimizer is static)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """``step`` int32 scalar, ``params`` / ``batch_stats`` (Flax collections), ``opt_state`` (optax)."""

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree

    @property
    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats}

    @classmethod
    def create(cls, variables: dict, tx: optax.GradientTransformation) -> "TrainState":
        params = variables["params"]
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


CYCLIC_BASE_MOMENTUM = 0.8  # PyTorch CyclicLR's base_momentum (its max_momentum 0.9 is the config's momentum)


def sgd(
    learning_rate: float,
    *,
    momentum: float,
    weight_decay: float,
    steps_per_epoch: int,
    decay_epochs: Sequence[int] = (),
    decay_factor: float = 0.1,
    schedule: str = "piecewise",
    epochs: int | None = None,
) -> optax.GradientTransformation:
    """PyTorch-equivalent SGD: ``g += wd·θ``; ``buf = m·buf + g``; ``θ -= lr·buf``.

    ``schedule="piecewise"``: the learning rate is multiplied by ``decay_factor`` at the start of each
    epoch in ``decay_epochs`` (Bag of Tricks: 0.1 at 100 and 105 of 110 epochs), momentum constant.
    ``schedule="cyclic"``: PyTorch ``CyclicLR(base_lr=0, max_lr=learning_rate, step_size_up=step_size_down=
    epochs·steps_per_epoch/2)`` with its default momentum cycling (``momentum`` at lr 0, 0.8 at the peak),
    stepped every batch — the schedule of FGSM-RS (Wong et al. 2020, ``CIFAR10/train_fgsm.py:85-88``); it
    needs ``epochs``.  Weight decay applies to all parameters, as in ``torch.optim.SGD(weight_decay=...)``.

    Raises:
      ValueError: an unknown ``schedule``; ``"cyclic"`` without ``epochs``.
    """
    lr = lr_schedule(learning_rate, steps_per_epoch=steps_per_epoch, decay_epochs=decay_epochs,
                     decay_factor=decay_factor, schedule=schedule, epochs=epochs)
    if schedule == "piecewise":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum or None))
    phase = _triangle(steps_per_epoch * epochs)
    cycled = lambda step: momentum - (momentum - CYCLIC_BASE_MOMENTUM) * phase(step)
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=cycled))


def _triangle(total_steps: int) -> optax.Schedule:
    """0 at step 0, 1 at ``total_steps / 2``, 0 at ``total_steps`` (PyTorch ``CyclicLR``'s ``triangular``)."""
    half = total_steps / 2
    return lambda step: jnp.maximum(0.0, 1.0 - jnp.abs(jnp.asarray(step, jnp.float32) / half - 1.0))


def lr_schedule(learning_rate: float, *, steps_per_epoch: int, decay_epochs: Sequence[int] = (),
                decay_factor: float = 0.1, schedule: str = "piecewise", epochs: int | None = None) -> optax.Schedule:
    """`sgd`'s learning rate at each step (``schedule`` and its arguments as in :func:`sgd`).

    Raises:
      ValueError: an unknown ``schedule``; ``"cyclic"`` without ``epochs``.
    """
    if schedule == "piecewise":
        return optax.piecewise_constant_schedule(
            learning_rate, {int(e) * steps_per_epoch: decay_factor for e in decay_epochs})
    if schedule != "cyclic":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; valid: ('piecewise', 'cyclic')")
    if not epochs:
        raise ValueError("the cyclic learning rate needs the number of epochs")
    phase = _triangle(steps_per_epoch * epochs)
    return lambda step: learning_rate * phase(step)
