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


def sgd(
    learning_rate: float,
    *,
    momentum: float,
    weight_decay: float,
    steps_per_epoch: int,
    decay_epochs: Sequence[int] = (),
    decay_factor: float = 0.1,
) -> optax.GradientTransformation:
    """PyTorch-equivalent SGD: ``g += wd·θ``; ``buf = m·buf + g``; ``θ -= lr·buf``.

    The learning rate is piecewise constant: multiplied by ``decay_factor`` at
    the start of each epoch in ``decay_epochs`` (Bag of Tricks: 0.1 at 100 and
    105 of 110 epochs).  Weight decay applies to all parameters, as in
    ``torch.optim.SGD(weight_decay=...)``.
    """
    schedule = lr_schedule(learning_rate, steps_per_epoch=steps_per_epoch, decay_epochs=decay_epochs,
                           decay_factor=decay_factor)
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(schedule, momentum=momentum or None))


def lr_schedule(learning_rate: float, *, steps_per_epoch: int, decay_epochs: Sequence[int] = (),
                decay_factor: float = 0.1) -> optax.Schedule:
    """`sgd`'s learning rate at each step: ``learning_rate`` × ``decay_factor`` per epoch of ``decay_epochs`` passed."""
    return optax.piecewise_constant_schedule(
        learning_rate, {int(e) * steps_per_epoch: decay_factor for e in decay_epochs})
