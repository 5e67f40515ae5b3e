"""Host loops: device-made per-step keys, late fetching, and no implicit host↔device copies in the loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA_DIR, needs_data
from rwsjax.train import dispatch, sharding


@pytest.mark.parametrize("start", [0, 7, 2**31 + 5])
@pytest.mark.parametrize("on_mesh", [False, True])
def test_fold_in_keys_equal_per_step_fold_in(start, on_mesh):
    key = jax.random.PRNGKey(3)
    mesh = sharding.make_mesh() if on_mesh else None
    keys = dispatch.fold_in_keys(key, start, 4, mesh)
    assert len(keys) == 4
    for j, k in enumerate(keys):
        np.testing.assert_array_equal(k, jax.random.fold_in(key, start + j))
        if on_mesh:
            assert k.sharding.is_equivalent_to(sharding.replicated(mesh), 1)
    assert dispatch.fold_in_keys(key, 0, 0) == ()


def test_fetch_lagged_keeps_order_and_queues_depth_items_ahead():
    produced = []

    def results():
        for i in range(5):
            produced.append(i)
            yield {"i": jnp.asarray(i)}

    for depth in (0, 1, 2):
        produced.clear()
        seen = []
        for out in dispatch.fetch_lagged(results(), depth):
            assert isinstance(out["i"], np.ndarray)  # on the host
            seen.append(int(out["i"]))
            # item i comes back only once item i + depth was produced (or the input ran out)
            assert len(produced) == min(5, seen[-1] + 1 + depth)
        assert seen == list(range(5))
    with pytest.raises(ValueError, match="depth must be >= 0"):
        list(dispatch.fetch_lagged([], -1))


def test_guard_turns_implicit_copies_into_errors(monkeypatch):
    key = jax.random.PRNGKey(0)
    monkeypatch.setenv(dispatch.GUARD_ENV, "disallow")
    with dispatch.guard():
        with pytest.raises(Exception, match="Disallowed host-to-device transfer"):
            jax.random.fold_in(key, 5)  # a Python int becomes a device scalar
        jax.device_get(jax.device_put(np.ones(3)))  # explicit copies pass
    monkeypatch.delenv(dispatch.GUARD_ENV)
    with dispatch.guard():
        jax.random.fold_in(key, 5)
    monkeypatch.setenv(dispatch.GUARD_ENV, "strict")
    with pytest.raises(ValueError, match="RWSJAX_TRANSFER_GUARD='strict' is not a jax.transfer_guard level"):
        dispatch.guard()


@needs_data
def test_fit_and_evaluate_copy_nothing_implicitly_and_read_results_late(tmp_path, monkeypatch):
    """The training and evaluation loops under RWSJAX_TRANSFER_GUARD=disallow; a step queued ahead changes
    neither the weights nor the metrics (in_flight=1 vs 0)."""
    from rwsjax.data.sources import load_split
    from rwsjax.models.registry import create_model
    from rwsjax.train import steps
    from rwsjax.train.evaluate import evaluate
    from rwsjax.train.loop import fit
    from rwsjax.train.state import TrainState, sgd
    monkeypatch.setenv(dispatch.GUARD_ENV, "disallow")
    split = load_split("cifar10", "test", data_dir=DATA_DIR, indices=np.arange(96), progress=False)
    model = create_model("resnet18", num_classes=10, width_multiplier=0.0625)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.PRNGKey(0))
    tx = sgd(0.05, momentum=0.9, weight_decay=5e-4, steps_per_epoch=3)
    mesh = sharding.make_mesh(jax.devices()[:1])
    attack = dict(eps=8 / 255, step_size=2 / 255, steps=2, norm="linf", random_init=True)
    step = steps.make_train_step(model, tx, mesh, regime="pgd_at", attack=attack)
    eval_step = steps.make_eval_step(model, mesh, attack=attack)
    runs = []
    for in_flight in (0, 1):
        best, history = fit(name="at", directory=str(tmp_path / f"f{in_flight}"),
                            state=TrainState.create(jax.device_get(variables), tx), train_step=step, train=split,
                            batch_size=32, epochs=2, seed=0, mesh=mesh, select="robust_accuracy",
                            validate=lambda v: evaluate(eval_step, v, split, batch_size=40, mesh=mesh),
                            in_flight=in_flight)
        runs.append((best, history))
    (a, hist_a), (b, hist_b) = runs
    assert hist_a == hist_b and len(hist_a) == 2 and hist_a[-1]["val_n"] == 96
    jax.tree.map(np.testing.assert_array_equal, a, b)
    with pytest.raises(ValueError, match="in_flight must be >= 0"):
        fit(name="at", directory=str(tmp_path / "bad"), state=TrainState.create(jax.device_get(variables), tx),
            train_step=step, train=split, batch_size=32, epochs=1, seed=0, mesh=mesh, select="accuracy",
            validate=lambda v: {}, in_flight=-1)
