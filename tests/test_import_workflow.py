"""Workflows starting from an imported model: ``init_checkpoint`` (RiFT's θ_AT, RWS's θ_pre) and
``checkpoint`` (evaluate) accept a PyTorch state_dict file; the export CLI writes one from a run."""

from __future__ import annotations

import importlib.util
import json
import os

import chex
import jax
import numpy as np
import pytest

from conftest import ROOT, needs_data
from rwsjax.models import pytorch_io
from rwsjax.models.export_pytorch import main as export_main
from rwsjax.train import checkpoint
from rwsjax.workflows.common import build_model, init_variables, load_model


def _config(preset="smoke", name="rift.py"):
    spec = importlib.util.spec_from_file_location("cfg_" + name[:-3], os.path.join(ROOT, "configs", name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


def _shifted(variables, by=0.01):
    """Variables that differ from any freshly initialized model's."""
    return jax.tree.map(lambda a: np.asarray(a) + np.float32(by), variables)


@pytest.fixture(scope="module")
def smoke_model():
    c = _config()
    model, example = build_model(c, "cifar10")
    return c, model, init_variables(model, example, 0)


def test_load_model_reads_orbax_dirs_and_pytorch_files_alike(smoke_model, tmp_path):
    _, model, like = smoke_model
    v = _shifted(like)
    checkpoint.save_variables(str(tmp_path / "orbax"), v)
    pytorch_io.save_state_dict(pytorch_io.export_state_dict(v), str(tmp_path / "m.safetensors"))
    chex.assert_trees_all_equal(load_model(str(tmp_path / "orbax"), like, model), v)
    chex.assert_trees_all_equal(load_model(str(tmp_path / "m.safetensors"), like, model), v)
    with pytest.raises(ValueError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"), like, model)


def test_load_model_refuses_a_file_normalized_otherwise_and_names_the_fix(smoke_model, tmp_path):
    _, model, like = smoke_model
    path = str(tmp_path / "raw.safetensors")
    pytorch_io.save_state_dict(pytorch_io.export_state_dict(like, mean=(0, 0, 0), std=(1, 1, 1)), path)
    with pytest.raises(ValueError, match=r"--config.model.mean=0,0,0 --config.model.std=1,1,1"):
        load_model(path, like, model)
    c = _config()
    c.model.mean, c.model.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    raw_model, _ = build_model(c, "cifar10")
    chex.assert_trees_all_equal(load_model(path, like, raw_model), like)


def test_partial_import_keeps_the_initial_head_when_the_class_count_differs(smoke_model, tmp_path):
    c, model, like = smoke_model
    model100, example = build_model(c, "cifar100")
    like100 = init_variables(model100, example, 1)
    path = str(tmp_path / "c100.safetensors")
    pytorch_io.save_state_dict(pytorch_io.export_state_dict(_shifted(like100)), path)
    with pytest.raises(ValueError, match="linear"):
        load_model(path, like, model)
    got = load_model(path, like, model, partial=True)
    chex.assert_trees_all_equal(got["params"]["linear"], like["params"]["linear"])
    chex.assert_trees_all_equal(got["params"]["conv1"], _shifted(like100)["params"]["conv1"])


@needs_data
def test_rift_adopts_init_checkpoint_as_theta_at(smoke_model, tmp_path):
    from rwsjax.workflows.common import Task
    from rwsjax.workflows.rift import adversarial_training
    c, _, like = smoke_model
    v = _shifted(like)
    c.init_checkpoint = str(tmp_path / "at.safetensors")
    c.log.tensorboard = False
    pytorch_io.save_state_dict(pytorch_io.export_state_dict(v), c.init_checkpoint)
    s = Task(c, str(tmp_path / "run"))
    chex.assert_trees_all_equal(adversarial_training(s, {}), v)
    assert checkpoint.exists(str(tmp_path / "run" / "at" / "final"))
    assert not os.path.exists(tmp_path / "run" / "at" / "checkpoints")  # nothing was trained


def test_export_cli_writes_the_runs_model_with_its_normalization(smoke_model, tmp_path, capsys):
    c, model, like = smoke_model
    v = _shifted(like)
    run = tmp_path / "run"
    checkpoint.save_variables(str(run / "at" / "final"), v)
    (run / "config.json").write_text(json.dumps(c.to_dict()))
    out = str(tmp_path / "at.safetensors")
    assert export_main([str(run / "at" / "final"), out, "--normalization"]) == 0
    assert "mean=(0.4914, 0.4822, 0.4465)" in capsys.readouterr().out
    result = pytorch_io.load_pytorch_checkpoint(out, like)
    np.testing.assert_allclose(result.mean, (0.4914, 0.4822, 0.4465), rtol=1e-6)
    chex.assert_trees_all_equal(result.variables, v)
    assert export_main([str(tmp_path / "nothing"), out]) == 1


def test_saved_directories_say_what_they_hold(smoke_model, tmp_path):
    """rwsjax.load rebuilds the model from a directory's own record; a directory without one (an older rwsjax)
    and a PyTorch file load with the architecture given; a request that contradicts the record is refused."""
    import rwsjax
    from rwsjax.workflows.common import describe
    c, model, like = smoke_model
    v = _shifted(like)
    path = str(tmp_path / "final")
    checkpoint.save_variables(path, v, info=describe(c, "cifar10"))
    info = checkpoint.read_info(path)
    assert info["architecture"] == "resnet18" and info["width_multiplier"] == 0.0625 and info["num_classes"] == 10
    assert info["dataset"] == "cifar10" and info["config"]["workflow"] == "rift"
    assert info["mean"] == [0.4914, 0.4822, 0.4465] and info["rwsjax_version"] == rwsjax.__version__
    got_model, got = rwsjax.load(path)
    assert got_model == model  # same architecture, width, classes and normalization
    chex.assert_trees_all_equal(got, v)
    with pytest.raises(ValueError, match=r"width_multiplier=0.25 \(the file records 0.0625\)"):
        rwsjax.load(path, width_multiplier=0.25)

    old = str(tmp_path / "old")
    checkpoint.save_variables(old, v)  # no record
    assert checkpoint.read_info(old) is None
    with pytest.raises(ValueError, match="does not record its model: pass architecture="):
        rwsjax.load(old)
    pt = str(tmp_path / "m.safetensors")
    pytorch_io.save_state_dict(pytorch_io.export_state_dict(v), pt)
    for source in (old, pt):
        got_model, got = rwsjax.load(source, architecture="resnet18", dataset="cifar10", width_multiplier=0.0625)
        assert got_model == model
        chex.assert_trees_all_equal(got, v)


def test_packaged_checkpoints_resolve_or_name_the_pip_command(monkeypatch):
    """``pyautoattack:model_test.pt`` is the file inside the installed package; without the package, one line
    with the pip command; an unknown packaged name lists the known ones; other paths pass through."""
    import importlib.util

    from rwsjax.train.checkpoint import CheckpointError
    from rwsjax.train.checkpoint import checkpoint_path
    assert checkpoint_path("runs/rift_cpu/at/final") == "runs/rift_cpu/at/final"
    if importlib.util.find_spec("pyautoattack") is not None:
        path = checkpoint_path("pyautoattack:model_test.pt")
        assert path.endswith(os.path.join("pyautoattack", "examples", "model_test.pt")) and os.path.isfile(path)
    with pytest.raises(CheckpointError, match=r"unknown packaged model; known: \['pyautoattack:model_test.pt'\]"):
        checkpoint_path("pyautoattack:other.pt")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyautoattack" else real(name, *a))
    with pytest.raises(CheckpointError, match="not installed: pip install --no-deps pyautoattack"):
        checkpoint_path("pyautoattack:model_test.pt")
