"""rwsjax.models.batch_norm: the hand-written backward pass equals autodiff of the definition, and the
module is a drop-in for flax.linen.BatchNorm (same variables, outputs, gradients, running averages)."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rwsjax.models import common
from rwsjax.models.batch_norm import BatchNorm, batch_norm_train


def test_hand_computed_case():
    # one channel, values 1 and 3: mean 2, biased variance 1 -> x̂ = ∓1/sqrt(1 + eps)
    x = jnp.array([1.0, 3.0]).reshape(2, 1, 1, 1)
    y, mean, var = batch_norm_train(x, jnp.array([2.0]), jnp.array([0.5]), 1e-5)
    s = 1 / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(np.asarray(y).ravel(), [0.5 - 2 * s, 0.5 + 2 * s], rtol=1e-6)
    np.testing.assert_allclose([float(mean[0]), float(var[0])], [2.0, 1.0], rtol=1e-6)
    # Σ y is 2β whatever x is, so d(Σ y)/dx = 0 and d(Σ y)/dβ = 2
    gx, gb = jax.grad(lambda x, b: jnp.sum(batch_norm_train(x, jnp.array([2.0]), b, 1e-5)[0]), (0, 1))(
        x, jnp.array([0.5]))
    np.testing.assert_allclose(np.asarray(gx), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), [2.0], rtol=1e-6)


def test_backward_matches_numerical_gradient():
    """All three outputs (y, mean, var) differentiated, against finite differences in float64."""
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.PRNGKey(0), 5)
        x = jax.random.normal(k[0], (4, 3, 3, 5), jnp.float64) * 2 + 0.7
        scale = jax.random.uniform(k[1], (5,), jnp.float64, 0.5, 1.5)
        bias = jax.random.normal(k[2], (5,), jnp.float64)
        w = jax.random.normal(k[3], x.shape, jnp.float64)
        u = jax.random.normal(k[4], (2, 5), jnp.float64)

        def f(x, scale, bias):
            y, mean, var = batch_norm_train(x, scale, bias, 1e-5)
            return jnp.sum(jnp.tanh(y) * w) + jnp.dot(u[0], mean) + jnp.dot(u[1], var)

        check_grads(f, (x, scale, bias), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def _variables(c=6):
    return {"params": {"scale": jnp.linspace(0.5, 2.0, c), "bias": jnp.linspace(-1.0, 1.0, c)},
            "batch_stats": {"mean": jnp.full((c,), 0.3), "var": jnp.full((c,), 2.0)}}


@pytest.mark.parametrize("transform", [jax.jit, lambda f: f], ids=["jit", "no-jit"])
def test_drop_in_for_flax_batch_norm(transform):
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 5, 5, 6)) * 3 + 1.5
    w = jax.random.normal(jax.random.PRNGKey(2), x.shape)
    v = _variables()
    ref = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    new = BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    assert jax.tree.map(jnp.shape, new.init(jax.random.PRNGKey(1), x)) == \
        jax.tree.map(jnp.shape, ref.init(jax.random.PRNGKey(1), x))

    def loss(module):
        def f(params, x):
            y, upd = module.apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                                  mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y) * w), upd
        return transform(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(v["params"], x)

    chex.assert_trees_all_close(loss(new), loss(ref), rtol=1e-5, atol=1e-5)
    # evaluation mode: the running averages
    ev = transform(lambda x: BatchNorm(use_running_average=True).apply(v, x))(x)
    chex.assert_trees_all_close(ev, nn.BatchNorm(use_running_average=True).apply(v, x), rtol=1e-6, atol=1e-6)


def test_bfloat16_output_float32_statistics():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 3)).astype(jnp.bfloat16)
    y, upd = BatchNorm(dtype=jnp.bfloat16).apply(_variables(3), x, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert upd["batch_stats"]["mean"].dtype == jnp.float32


@pytest.mark.parametrize("impl", ["rwsjax", "flax"])
def test_models_build_either_implementation(monkeypatch, impl):
    monkeypatch.setattr(common, "BATCH_NORM_IMPL", impl)
    expected = BatchNorm if impl == "rwsjax" else nn.BatchNorm
    assert type(common.batch_norm(True)) is expected


def test_as_accurate_as_flax_against_float64():
    """The closed-form backward pass loses no precision: float32 gradients of rwsjax's and Flax's BatchNorm
    have the same error against a float64 reference (activations with an offset, where E[x²] − E[x]²
    and the backward sums cancel most)."""
    k = jax.random.split(jax.random.PRNGKey(0), 2)
    x = jax.random.normal(k[0], (32, 8, 8, 8)) * 2 + 3.0
    w = jax.random.normal(k[1], x.shape)
    p = {"scale": jnp.linspace(0.5, 2, 8), "bias": jnp.linspace(-1, 1, 8)}
    stats = {"mean": jnp.zeros(8), "var": jnp.ones(8)}

    def grads(module, p, x, w):
        def f(p, x):
            y = module.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])[0]
            return jnp.sum(jnp.tanh(y) * w)
        return jax.device_get(jax.jit(jax.grad(f, argnums=(0, 1)))(p, x))

    with jax.enable_x64(True):
        f64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)  # noqa: E731
        ref = grads(nn.BatchNorm(use_running_average=False, dtype=jnp.float64, param_dtype=jnp.float64),
                    f64(p), f64(x), f64(w))

    def error(g):
        return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in
                   zip(jax.tree.leaves(g), jax.tree.leaves(ref)))

    ours, theirs = error(grads(BatchNorm(), p, x, w)), error(grads(nn.BatchNorm(use_running_average=False), p, x, w))
    assert ours < 1e-5 and ours <= 2 * theirs, (ours, theirs)
