"""The protocol switches (rwsjax.protocols): resolution, the documented table, and what each switch changes."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from conftest import ROOT

from rwsjax import protocols
from rwsjax.config_validation import resolve_defaults
from rwsjax.configs import rift
from rwsjax.models.registry import create_model
from rwsjax.rift.mrc import MRC
from rwsjax.weights.modules import kernels


def test_fields_resolve_to_the_protocol_and_explicit_values_win():
    c = rift.get_config("cpu")
    resolve_defaults(c)
    assert (c.mrc.split, c.mrc.batch_size, c.mrc.project_every, c.mrc.drop_remainder, c.mrc.floor) == (
        "train", 128, "step", True, True)
    assert c.mrc.attack_step_size == c.eval.step_size == pytest.approx(2 / 255)
    c = rift.get_config("cpu")
    c.protocol, c.mrc.batch_size = "official", 64
    resolve_defaults(c)
    assert (c.mrc.split, c.mrc.batch_size, c.mrc.project_every, c.mrc.drop_remainder, c.mrc.floor) == (
        "test", 64, "epoch", False, False)
    assert c.mrc.attack_step_size == pytest.approx(2 / 225)


def test_rws_fields_resolve_to_the_protocol():
    from rwsjax.configs import rws
    c = rws.get_config("cpu")
    resolve_defaults(c)
    sc = c.signature
    assert (sc.k, sc.layers, sc.transplant, sc.bn, sc.bn_weighting, sc.bn_blend, sc.lambda_twice, sc.compose) == (
        5, "convs", False, "target", "batch", False, False, "sum")
    c = rws.get_config("cpu")
    c.protocol, c.signature.bn = "official", "target"
    resolve_defaults(c)
    sc = c.signature
    assert (sc.k, sc.layers, sc.transplant, sc.bn, sc.bn_weighting, sc.bn_blend, sc.lambda_twice, sc.compose) == (
        7, "blocks", True, "target", "sample", True, True, "mean")


def test_unknown_protocol_is_a_config_error():
    from rwsjax.config_validation import ConfigError
    from rwsjax.workflows import validate
    c = rift.get_config("smoke")
    c.protocol = "paper"
    with pytest.raises(ConfigError, match=r"config.protocol='paper' is not one of \['official', 'rwsjax'\]"):
        validate(c)


def test_docs_list_every_deviation():
    with open(os.path.join(ROOT, "docs", "protocols.md")) as f:
        text = f.read()
    for deviations in (protocols.RIFT, protocols.RWS):
        assert protocols.table(deviations) in text
        for d in deviations:
            assert f"`--config.{d.field}`" in text


@pytest.fixture(scope="module")
def tiny():
    model = create_model("resnet18", num_classes=10, width_multiplier=0.0625)
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (40, 32, 32, 3)))
    y = np.arange(40) % 10
    variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)
    return model, variables, x, y, kernels(variables["params"])


def test_floor_off_lets_mrc_go_negative(tiny):
    """Gradient *descent* (a small lr < 0) lowers the loss: MRC is 0 with the floor (Δ = 0 is in the ball) and
    exactly the largest epoch loss − L(θ_AT) < 0 without it (the official code's definition)."""
    model, variables, x, y, table = tiny
    path = {"linear": table["linear"]}
    kw = dict(eps=0.5, lr=-1e-3, epochs=2, batch_size=8, cache=False)
    (floored,) = MRC(model, variables, x, y, **kw).criticality(path)
    (raw,) = MRC(model, variables, x, y, floor=False, **kw).criticality(path)
    assert floored["mrc"] == 0.0 and floored["loss_max"] == floored["loss_at"]
    assert raw["mrc"] < 0
    assert raw["mrc"] == pytest.approx(max(h["loss"] for h in raw["history"]) - raw["loss_at"], abs=1e-7)


def test_drop_remainder_off_adds_the_last_smaller_batch(tiny):
    model, variables, x, y, _ = tiny
    dropped = MRC(model, variables, x, y, batch_size=16, epochs=2, cache=False)
    kept = MRC(model, variables, x, y, batch_size=16, epochs=2, cache=False, drop_remainder=False)
    assert [[len(b) for b in e] for e in dropped._orders] == [[16, 16]] * 2
    assert [[len(b) for b in e] for e in kept._orders] == [[16, 16, 8]] * 2
    for epoch in kept._orders:  # every example once per epoch
        assert sorted(np.concatenate(epoch).tolist()) == list(range(40))
    with pytest.raises(ValueError, match="at least one batch"):
        MRC(model, variables, x[:8], y[:8], batch_size=16)
    assert [len(b) for b in MRC(model, variables, x[:8], y[:8], batch_size=16, drop_remainder=False)._orders[0]] == [8]
