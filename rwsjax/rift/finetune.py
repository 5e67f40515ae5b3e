"""RiFT step 2: fine-tune the non-robust-critical module(s) on clean data (Zhu et al. 2023, Sec. 3.2).

Only the chosen modules' parameters (kernel and bias) move; every other
parameter is frozen with a masked optimizer (``optax.multi_transform`` with
``set_to_zero``), so frozen weights stay bit-identical.  BatchNorm running
statistics follow ``ft.bn_mode``: ``train`` (updated, as the official code
does with ``model.train()``) or ``frozen`` (evaluation-mode BN, unchanged).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import optax

from rwsjax.train.state import sgd
from rwsjax.weights.modules import module_mask

PyTree = Any
STRATEGIES = ("least_critical", "top_k", "most_critical", "last", "all")


def choose_modules(rows: Sequence[dict], strategy: str = "least_critical", top_k: int = 1) -> list[str]:
    """Modules to fine-tune from MRC rows (in forward order, as from ``MRC.criticality``).

    ``least_critical`` = argmin MRC (the paper's choice); ``top_k`` = the k
    lowest-MRC modules; ``most_critical`` = argmax MRC and ``last`` = the
    classifier (last module in forward order) for the Table 3/4 ablations;
    ``all`` = every parameter (full fine-tuning).

    Raises:
      ValueError: unknown strategy, or ``top_k`` outside 1..len(rows).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown ft.modules {strategy!r}; valid: {STRATEGIES}")
    by_mrc = sorted(rows, key=lambda r: r["mrc"])
    if strategy == "least_critical":
        return [by_mrc[0]["module"]]
    if strategy == "most_critical":
        return [by_mrc[-1]["module"]]
    if strategy == "last":
        return [rows[-1]["module"]]
    if strategy == "all":
        return [r["module"] for r in rows]
    if not 1 <= top_k <= len(rows):
        raise ValueError(f"ft.top_k must be in 1..{len(rows)}, got {top_k}")
    return [r["module"] for r in by_mrc[:top_k]]


def trainable_mask(params: PyTree, modules: Sequence[str] | str) -> PyTree:
    """Boolean pytree, True on the parameters that fine-tuning may change (``"all"`` = every one)."""
    if modules == "all":
        return jax.tree.map(lambda _: True, params)
    return module_mask(params, modules)


def finetune_optimizer(params: PyTree, modules: Sequence[str] | str, *, learning_rate: float,
                       momentum: float, weight_decay: float, steps_per_epoch: int,
                       decay_epochs: Sequence[int] = (), decay_factor: float = 0.1
                       ) -> optax.GradientTransformation:
    """SGD (momentum, weight decay, step decay) on the masked parameters; zero updates elsewhere."""
    labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask(params, modules))
    inner = sgd(learning_rate, momentum=momentum, weight_decay=weight_decay, steps_per_epoch=steps_per_epoch,
                decay_epochs=decay_epochs, decay_factor=decay_factor)
    return optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()}, labels)
