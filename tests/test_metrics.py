"""Tests of the run's metric log (rwsjax.report.metrics): TensorBoard events, hparams, W&B (a stand-in module)."""

from __future__ import annotations

import glob
import os
import struct
import sys
import types

import ml_collections

from rwsjax.report.metrics import MetricWriter, flat_config


def read_events(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in the TensorBoard event files under `logdir`."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((event.step, v.simple_value))
                else:
                    out.setdefault(v.tag, [])
    return out


def _config():
    c = ml_collections.ConfigDict({"workflow": "rift", "at": {"epochs": 2, "decay_epochs": (1,)},
                                   "log": {"tensorboard": True}})
    return c


def test_flat_config():
    assert flat_config(_config()) == {"workflow": "rift", "at.epochs": 2, "at.decay_epochs": "[1]",
                                      "log.tensorboard": True}


def test_tensorboard_scalars_and_hparams(tmp_path):
    w = MetricWriter(str(tmp_path), _config())
    w.scalars(3, {"at/train_loss": 2.5, "at/train_accuracy": 12.5})
    w.close()
    events = read_events(str(tmp_path / "tensorboard"))
    assert events["at/train_loss"] == [(3, 2.5)] and events["at/train_accuracy"] == [(3, 12.5)]
    assert "config/text_summary" in events  # the config as text
    assert glob.glob(str(tmp_path / "tensorboard" / "hparams" / "events.*"))  # the HParams tab


def test_wandb_gets_the_config_and_every_scalar(tmp_path, monkeypatch):
    calls = []
    run = types.SimpleNamespace(define_metric=lambda *a, **k: calls.append(("define", a, k)),
                                log=lambda d: calls.append(("log", d)), finish=lambda: calls.append(("finish",)))
    fake = types.SimpleNamespace(init=lambda **k: calls.append(("init", k)) or run)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    w = MetricWriter(str(tmp_path), _config(), tensorboard=False, wandb=True, wandb_project="p")
    w.scalars(7, {"at/train_loss": 1.0})
    w.scalars(8, {"at/train_loss": 0.5, "ft/val_clean_accuracy": 80.0})
    w.close()
    init = calls[0][1]
    assert init["project"] == "p" and init["config"]["at.epochs"] == 2 and init["resume"] == "allow"
    assert init["name"] == os.path.basename(str(tmp_path))
    logs = [c[1] for c in calls if c[0] == "log"]
    assert {"at/train_loss": 1.0, "at/step": 7} in logs and {"ft/val_clean_accuracy": 80.0, "ft/step": 8} in logs
    assert sorted(c[1][0] for c in calls if c[0] == "define") == ["at/*", "ft/*"]
    assert calls[-1] == ("finish",)
    assert not os.path.exists(tmp_path / "tensorboard")


def test_wandb_without_the_package_is_a_config_error(monkeypatch):
    import importlib.util

    from rwsjax import config_validation
    from rwsjax.configs import rift

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    c = rift.get_config("smoke")
    c.log.wandb = True
    assert any("pip install wandb" in p for p in config_validation.common(c))
