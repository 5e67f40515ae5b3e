"""The training regimes, one table: what each one's inner attack maximizes, where it starts, what the
outer step minimizes, and its papers' CIFAR-10 defaults (β, AWP γ and warm-up).

:func:`rwsjax.train.steps.make_train_step` builds its step from the entry of ``regime``, the config
validation and default resolution read their choices and defaults here, and the reports their labels;
a new regime is one more entry.

The regimes (the paper's Eq. / the official code where the paper leaves a detail open):

- ``standard``: cross-entropy on the clean examples.
- ``pgd_at`` (Madry et al., ICLR 2018, Eq. 2.1): cross-entropy on PGD examples, PGD on the cross-entropy
  from a uniform sample of the ε-ball.
- ``fgsm_rs`` (Wong, Rice & Kolter, ICLR 2020, "Fast is better than free"; official code
  locuslab/fast_adversarial ``CIFAR10/train_fgsm.py``): PGD-AT with a single step of 1.25·ε (10/255 at
  ε = 8/255) from a uniform ε-ball sample, trained with the cyclic learning rate (0 → ``at.learning_rate``
  → 0 over the run, momentum 0.9 → 0.8 → 0.9: PyTorch ``CyclicLR`` as that code uses it, lr-max 0.2,
  15 epochs).  Its attack ignores ``attack.steps`` / ``attack.step_size``; a variant is
  ``at.regime=pgd_at`` with ``attack.steps=1`` and ``at.lr_schedule=cyclic``.
- ``trades`` (Zhang et al., ICML 2019, Eq. 5): CE(f(x), y) + β·KL(f(x) ‖ f(x')), x' from PGD on
  KL(f(x) ‖ f(x')) started at x + 0.001·N(0, I) (the official code); β = 6.
- ``mart`` (Wang et al., ICLR 2020, Eq. 8): boosted CE + β·(1 − p_y(x))·KL, x' from PGD on the
  cross-entropy started at x + 0.001·N(0, I) (the official code); β = 6.
- ``score`` (Pang et al., ICML 2022): squared errors between probability vectors, x' from PGD on
  ‖p(x') − p(x)‖² from a uniform ε-ball sample; β = 4 (the official CIFAR-10 command).

AWP defaults (Wu, Xia & Wang, NeurIPS 2020, official code AT_AWP/train_cifar10.py and
TRADES_AWP/train_trades_cifar10.py): γ = 1e-2 without warm-up for PGD-AT, γ = 5e-3 after a 10-epoch
warm-up for TRADES.  MART and SCORE have no official AWP recipe: MART takes PGD-AT's, SCORE TRADES'
(its TRADES-style loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax

from rwsjax.train import losses

# What the inner PGD may maximize: "ce" is the cross-entropy of the true label; the others are
# ``distance(clean_logits [B,K], adversarial_logits [B,K]) -> [B]`` from the (stop-gradient) clean prediction.
ATTACK_LOSSES = ("ce", "kl", "squared_error")
LR_SCHEDULES = ("piecewise", "cyclic")
PREDICTION_DISTANCES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "kl": losses.kl_divergence,
    "squared_error": losses.squared_error,
}


@dataclass(frozen=True)
class Regime:
    """One training regime.

    Attributes:
      name: the ``at.regime`` config value.
      label: the name reports print (``"PGD-AT"``, ``"TRADES"``…).
      attack_loss: what the training attack (PGD) maximizes: one of :data:`ATTACK_LOSSES`, or ``None``
        for no attack (clean training).
      attack_start: σ of PGD's Gaussian start ``clip(x + σ·N(0, I), 0, 1)`` (pixel units, [0,1] images);
        ``None``: PGD's own start (a uniform ε-ball sample when the attack config's ``random_start``).
      objective: the pair objective ``(logits_nat [B,K], logits_adv [B,K], labels [B], beta) -> scalar``
        minimized on the clean and the adversarial batch (two train-mode passes); ``None``: the mean
        cross-entropy on the examples trained on (the adversarial ones when there is an attack).
      default_beta: the paper's CIFAR-10 β of ``objective`` (``None`` without a pair objective).
      awp_gamma: AWP's relative perturbation size γ for this regime (``0.0``: no AWP recipe).
      awp_warmup: epochs without AWP before γ applies.
      attack_steps: the training attack's number of steps when the regime fixes it (FGSM-RS: 1), with
        step size ``attack_step_ratio`` × ε and a uniform random start; ``None``: the attack config's.
      attack_step_ratio: the step size as a multiple of ε (with ``attack_steps``).
      lr_schedule: the default of ``at.lr_schedule``: ``"piecewise"`` (×``decay_factor`` at
        ``decay_epochs``) or ``"cyclic"`` (:func:`rwsjax.train.state.lr_schedule`).

    Raises:
      ValueError: (at construction) an unknown ``attack_loss``; a pair objective without an attack, or a
        ``default_beta`` given without a pair objective (or missing with one); an ``attack_start`` or an
        AWP γ without an attack; a negative ``awp_gamma`` or ``awp_warmup``; ``attack_steps`` without a
        positive ``attack_step_ratio`` (or the reverse); an unknown ``lr_schedule``.
    """
    name: str
    label: str
    attack_loss: str | None
    attack_start: float | None
    objective: Callable[[jax.Array, jax.Array, jax.Array, float], jax.Array] | None
    default_beta: float | None
    awp_gamma: float
    awp_warmup: int
    attack_steps: int | None = None
    attack_step_ratio: float | None = None
    lr_schedule: str = "piecewise"

    def __post_init__(self):
        problems = []
        if self.attack_loss is not None and self.attack_loss not in ATTACK_LOSSES:
            problems.append(f"attack_loss {self.attack_loss!r} is not one of {ATTACK_LOSSES} or None")
        if self.attack_loss is None and (self.objective is not None or self.attack_start is not None
                                         or self.awp_gamma):
            problems.append("a pair objective, an attack_start or an AWP γ needs an attack_loss")
        if (self.objective is None) != (self.default_beta is None):
            problems.append("default_beta is given exactly when there is a pair objective")
        if (self.attack_steps is None) != (self.attack_step_ratio is None) or (
                self.attack_step_ratio is not None and (self.attack_step_ratio <= 0 or self.attack_steps < 1
                                                        or self.attack_loss is None)):
            problems.append("attack_steps (≥ 1) and a positive attack_step_ratio go together, with an attack_loss")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule {self.lr_schedule!r} is not one of {LR_SCHEDULES}")
        if self.awp_gamma < 0 or self.awp_warmup < 0:
            problems.append(f"awp_gamma={self.awp_gamma} and awp_warmup={self.awp_warmup} must be >= 0")
        if problems:
            raise ValueError(f"regime {self.name!r}: " + "; ".join(problems))

    @property
    def adversarial(self) -> bool:
        """True when the step crafts training attacks (every regime but clean training)."""
        return self.attack_loss is not None

    def attack(self, attack: dict) -> dict:
        """The training attack's PGD keyword arguments: ``attack`` (from the config) with the regime's own
        steps, step size (× ``attack["eps"]``) and random start where it fixes them."""
        if self.attack_steps is None:
            return attack
        return {**attack, "steps": self.attack_steps, "step_size": self.attack_step_ratio * attack["eps"],
                "random_init": True}


REGIMES: dict[str, Regime] = {r.name: r for r in (
    Regime("standard", "standard", attack_loss=None, attack_start=None, objective=None, default_beta=None,
           awp_gamma=0.0, awp_warmup=0),
    Regime("pgd_at", "PGD-AT", attack_loss="ce", attack_start=None, objective=None, default_beta=None,
           awp_gamma=1e-2, awp_warmup=0),
    Regime("fgsm_rs", "FGSM-RS", attack_loss="ce", attack_start=None, objective=None, default_beta=None,
           awp_gamma=0.0, awp_warmup=0, attack_steps=1, attack_step_ratio=1.25, lr_schedule="cyclic"),
    Regime("trades", "TRADES", attack_loss="kl", attack_start=0.001, objective=losses.trades_loss,
           default_beta=6.0, awp_gamma=5e-3, awp_warmup=10),
    Regime("mart", "MART", attack_loss="ce", attack_start=0.001, objective=losses.mart_loss,
           default_beta=6.0, awp_gamma=1e-2, awp_warmup=0),
    Regime("score", "SCORE", attack_loss="squared_error", attack_start=None, objective=losses.score_loss,
           default_beta=4.0, awp_gamma=5e-3, awp_warmup=10),
)}


def get(name: str) -> Regime:
    """The regime called ``name``.

    Raises:
      ValueError: no such regime (the message lists the valid names).
    """
    try:
        return REGIMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown regime {name!r}; valid: {tuple(REGIMES)}") from None
