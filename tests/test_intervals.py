"""Paired bootstrap intervals (rwsjax.report.intervals): hand-computable cases, the module's examples,
scipy's bootstrap as an independent reference, and the per-example results they are computed from."""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.report import intervals
from rwsjax.report.intervals import format_delta, paired_bootstrap
from conftest import DATA_DIR, needs_data


def test_module_examples():
    assert doctest.testmod(intervals).failed == 0


def test_hand_computable_cases():
    """Identical models: Δ = 0 and every resample 0; one model right everywhere the other is wrong: Δ = 100
    with no spread; a constant per-image difference has no spread either."""
    a = np.array([1, 0, 1, 1, 0] * 40, bool)
    same = paired_bootstrap(a, a)
    assert (same["delta"], same["low"], same["high"], same["contains_zero"]) == (0.0, 0.0, 0.0, True)
    flip = paired_bootstrap(np.zeros(50), np.ones(50))
    assert (flip["delta"], flip["low"], flip["high"], flip["contains_zero"]) == (100.0, 100.0, 100.0, False)
    half = paired_bootstrap(np.full(30, 0.25), np.full(30, 0.75))
    assert half["delta"] == pytest.approx(50.0) and half["low"] == pytest.approx(50.0)
    assert format_delta(flip) == "+100.00 [+100.00, +100.00]" and format_delta(None) is None
    # Δ is the accuracy difference in points, whatever the resampling
    rng = np.random.default_rng(1)
    x, y = rng.random(1000) < 0.6, rng.random(1000) < 0.65
    assert paired_bootstrap(x, y)["delta"] == pytest.approx(100 * (y.mean() - x.mean()))


def test_seeded_and_paired():
    """The same seed gives the same interval; pairing matters: two models that agree on most images have a
    much narrower interval than independent samples with the same accuracies."""
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.7
    b = a.copy()
    flip = rng.choice(2000, 40, replace=False)
    b[flip] = ~b[flip]
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    paired = paired_bootstrap(a, b)
    unpaired = paired_bootstrap(a, rng.permutation(b))
    assert paired["high"] - paired["low"] < 0.3 * (unpaired["high"] - unpaired["low"])


def test_matches_scipy_bootstrap():
    """scipy.stats.bootstrap (percentile method, paired: resampling the per-image differences) as the
    reference: the same interval up to Monte-Carlo error (10,000 resamples each, ≤ 0.15 points)."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    a = rng.random(2000) < 0.55
    b = np.where(rng.random(2000) < 0.9, a, rng.random(2000) < 0.6)
    ours = paired_bootstrap(a, b, resamples=10_000, seed=0)
    ref = stats.bootstrap((100.0 * (b.astype(float) - a),), np.mean, n_resamples=10_000, method="percentile",
                          confidence_level=0.95, rng=np.random.default_rng(1)).confidence_interval
    assert ours["low"] == pytest.approx(ref.low, abs=0.15) and ours["high"] == pytest.approx(ref.high, abs=0.15)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_bootstrap([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        paired_bootstrap([2, 0], [1, 0])
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        paired_bootstrap([1, 0], [1, 0], resamples=0)


@needs_data
def test_per_example_results_are_the_counts():
    """evaluate(per_example=True): one bool per image in the split's order (the padded last batch cut),
    whose means are the reported accuracies, for clean and PGD results."""
    from rwsjax.data.sources import load_split
    from rwsjax.models.registry import create_model
    from rwsjax.train import sharding, steps
    from rwsjax.train.evaluate import evaluate
    split = load_split("cifar10", "test", data_dir=DATA_DIR, indices=np.arange(70), progress=False)
    model = create_model("resnet18", num_classes=10, width_multiplier=0.0625)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.PRNGKey(0))
    mesh = sharding.make_mesh(jax.devices()[:1])
    attack = dict(eps=8 / 255, step_size=2 / 255, steps=2, norm="linf", random_init=True)
    step = steps.make_eval_step(model, mesh, attack=attack, restarts=2)
    out = evaluate(step, variables, split, batch_size=32, mesh=mesh, per_example=True)
    plain = evaluate(step, variables, split, batch_size=32, mesh=mesh)
    assert "per_example" not in plain
    pe = out["per_example"]
    assert set(pe) == {"clean", "robust"} and pe["clean"].shape == (70,) and pe["clean"].dtype == bool
    assert 100 * pe["clean"].mean() == pytest.approx(out["clean_accuracy"])
    assert 100 * pe["robust"].mean() == pytest.approx(out["robust_accuracy"])
    assert not (pe["robust"] & ~pe["clean"]).any()
    logits = model.apply(variables, split.images.astype(np.float32) / 255, train=False)
    np.testing.assert_array_equal(pe["clean"], np.argmax(logits, -1) == split.labels)
