"""Adversarial-training objectives beyond PGD-AT, as pure per-batch functions of logits.

All take logits ``[B, K]`` (float) and int labels ``[B]`` and return a scalar (mean over the batch)
unless noted; probabilities are softmaxes of the logits.  The inner maximizations that produce
``logits_adv`` live with the training step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rwsjax.attacks.pgd import cross_entropy


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """KL(p ‖ q) = Σ_k p_k (log p_k − log q_k) per example ``[B]`` (p, q = softmax of the logits)."""
    log_p = jax.nn.log_softmax(p_logits.astype(jnp.float32), -1)
    log_q = jax.nn.log_softmax(q_logits.astype(jnp.float32), -1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)


def squared_error(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """‖softmax(q) − softmax(p)‖₂² per example ``[B]`` (SCORE's SE distance between predictions)."""
    p = jax.nn.softmax(p_logits.astype(jnp.float32), -1)
    q = jax.nn.softmax(q_logits.astype(jnp.float32), -1)
    return jnp.sum(jnp.square(q - p), -1)


def trades_loss(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array, beta: float) -> jax.Array:
    """TRADES (Zhang et al., ICML 2019, Eq. 5): CE(f(x), y) + β · KL(f(x) ‖ f(x')), batch means.

    ``x'`` maximizes KL(f(x) ‖ f(x')) in the ε-ball (the official code: PGD on that KL from
    x + 0.001·N(0, I)).  Paper/official CIFAR-10: β = 6.
    """
    return jnp.mean(cross_entropy(logits_nat, labels)) + beta * jnp.mean(kl_divergence(logits_nat, logits_adv))


def mart_loss(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array, beta: float) -> jax.Array:
    """MART (Wang et al., ICLR 2020, Eq. 8 and the official code):

        BCE(p(x'), y) + β · KL(p(x) ‖ p(x')) · (1 − p_y(x)),
        BCE(p(x'), y) = −log p_y(x') − log(1 − max_{k≠y} p_k(x')),

    batch means; ``x'`` from PGD on the cross-entropy.  The official constants are kept: 1.0001 inside
    the second log, 1e-12 inside the KL's log q, 1.0000001 in the weight.  CIFAR-10: β = 6 (λ in the paper).
    """
    logits_adv = logits_adv.astype(jnp.float32)
    probs_adv = jax.nn.softmax(logits_adv, -1)
    k = logits_adv.shape[-1]
    others = jnp.where(jax.nn.one_hot(labels, k, dtype=bool), -1.0, probs_adv)
    rival = jnp.argmax(others, -1)  # the most likely wrong class on x'
    p_rival = jnp.take_along_axis(probs_adv, rival[:, None], -1)[:, 0]
    bce = cross_entropy(logits_adv, labels) - jnp.log(1.0001 - p_rival + 1e-12)
    probs_nat = jax.nn.softmax(logits_nat.astype(jnp.float32), -1)
    kl = jnp.sum(probs_nat * (jnp.log(probs_nat + 1e-30) - jnp.log(probs_adv + 1e-12)), -1)
    p_true = jnp.take_along_axis(probs_nat, labels[:, None], -1)[:, 0]
    return jnp.mean(bce) + beta * jnp.mean(kl * (1.0000001 - p_true))


def score_loss(logits_nat: jax.Array, logits_adv: jax.Array, labels: jax.Array, beta: float) -> jax.Array:
    """SCORE (Pang et al., ICML 2022; the objective of the official ``trades_loss_LSE``, ``--LSE --ls 0``):

        ‖p(x) − e_y‖₂² + β · ‖p(x') − p(x)‖₂²,

    batch means, p = softmax, e_y the one-hot label: TRADES with both the CE and the KL replaced by the
    squared error between probability vectors, which makes the robust term a proper (symmetric, bounded)
    distance — the self-consistent robust error the paper argues for.  ``x'`` maximizes
    ‖p(x') − p(x)‖₂² by PGD from a uniform start.  Official CIFAR-10 command: β = 4.  The paper's other
    ingredients (1M DDPM-generated images, weight averaging, Swish WRNs) are out of scope here.
    """
    k = logits_nat.shape[-1]
    p_nat = jax.nn.softmax(logits_nat.astype(jnp.float32), -1)
    natural = jnp.sum(jnp.square(p_nat - jax.nn.one_hot(labels, k, dtype=jnp.float32)), -1)
    return jnp.mean(natural) + beta * jnp.mean(squared_error(logits_nat, logits_adv))
