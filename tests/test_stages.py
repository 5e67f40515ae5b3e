"""Workdir stages: skip what is done, refuse a changed config, redo a stage and everything after it."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from conftest import ROOT
from rwsjax.workflows.rift import STAGES
from rwsjax.workflows.stages import StageError, prepare


def _config():
    spec = importlib.util.spec_from_file_location("cfg_rift", f"{ROOT}/configs/rift.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("smoke")


def _workdir(tmp_path, config, outputs):
    for rel in outputs:
        path = tmp_path / rel
        if rel.endswith((".json", ".md", ".png")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        else:
            path.mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    return str(tmp_path)


def test_status_and_unchanged_config(tmp_path):
    c = _config()
    w = _workdir(tmp_path, c, ["at/final", "at/checkpoints", "mrc_partial", "ft/checkpoints"])
    assert prepare(w, c, STAGES) == {"at": "done", "mrc": "started", "ft": "started", "interp": "todo",
                                     "report": "todo"}


def test_changed_field_of_a_started_stage_is_refused(tmp_path):
    c = _config()
    w = _workdir(tmp_path, c, ["at/final", "ft/checkpoints"])
    c.ft.learning_rate = 0.5
    with pytest.raises(StageError, match=r"stage 'ft'.*ft\.learning_rate: 0\.001 → 0\.5.*--config\.redo=ft"):
        prepare(w, c, STAGES)
    # A field of a stage not yet started may change freely.
    c = _config()
    c.interp.tolerance = 0.5
    c.ood.severities = (5,)
    prepare(w, c, STAGES)


def test_redo_removes_the_stage_and_later_ones_only(tmp_path):
    c = _config()
    w = _workdir(tmp_path, c, ["at/final", "at/history.json", "mrc.json", "mrc_partial", "ft/final",
                               "interpolation.json", "results.json"])
    c.redo = "mrc"
    c.mrc.epochs = 9  # allowed: MRC is being recomputed
    status = prepare(w, c, STAGES)
    assert status == {"at": "done", "mrc": "redo", "ft": "redo", "interp": "redo", "report": "redo"}
    assert sorted(os.listdir(w)) == ["at", "config.json", "ft"] and os.listdir(os.path.join(w, "ft")) == []
    assert sorted(os.listdir(os.path.join(w, "at"))) == ["final", "history.json"]


def test_unknown_redo_stage(tmp_path):
    c = _config()
    c.redo = "mrc,training"
    with pytest.raises(StageError, match=r"unknown stage\(s\) \['training'\]; valid: \['at', 'mrc', 'ft'"):
        prepare(str(tmp_path), c, STAGES)


def test_performance_fields_and_new_fields_are_not_changes(tmp_path):
    """How a result is computed (loop unrolling, MRC cache/threads) is not what it is; a field added by a newer
    rwsjax (absent from the recorded config) is taken at its default. A real change is still refused."""
    c = _config()
    recorded = c.to_dict()
    del recorded["at"]["awp_gamma"]  # written by an older version
    w = _workdir(tmp_path, c, ["at/final", "mrc.json", "ft/final"])
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    c.attack.unroll, c.eval.unroll, c.mrc.threads, c.mrc.cache = False, False, 1, False
    assert prepare(w, c, STAGES)["mrc"] == "done"
    c.mrc.eps = 0.2
    with pytest.raises(StageError, match=r"mrc\.eps: 0\.1 → 0\.2"):
        prepare(w, c, STAGES)


def test_unroll_auto_follows_the_backend():
    import jax
    from rwsjax.train.steps import resolve_unroll
    assert resolve_unroll(None) == (jax.default_backend() == "cpu")
    assert resolve_unroll(False) is False and resolve_unroll(True) is True
