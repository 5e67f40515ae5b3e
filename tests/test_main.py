"""The command line: clear errors for bad invocations, resolved config printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


def _run(*args):
    return subprocess.run([sys.executable, "-m", "rwsjax.main", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_missing_workdir_is_a_usage_error():
    p = _run("--config=configs/rift.py:smoke")
    assert p.returncode != 0 and "--workdir is required" in p.stderr


def test_unknown_preset_lists_valid_ones(tmp_path):
    p = _run("--config=configs/rift.py:laptop", f"--workdir={tmp_path}")
    assert p.returncode != 0
    assert "unknown preset 'laptop'" in p.stderr and "'cpu'" in p.stderr


def test_unknown_override_key_is_rejected(tmp_path):
    p = _run("--config=configs/rift.py:smoke", f"--workdir={tmp_path}", "--config.at.epoch=3")
    assert p.returncode != 0 and "--config.at.epoch=3" in p.stderr and "did you mean config.at.epochs?" in p.stderr
    assert "Traceback" not in p.stderr


def test_the_rwsjax_command_lists_commands_workflows_and_presets(tmp_path):
    p = subprocess.run(["rwsjax", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0
    for words in ("run", "evaluate", "prepare", "corrupt", "export", "regimes", "rift", "rws",
                  "presets: paper (default), cpu, external_cpu, smoke, tinyimagenet, tinyimagenet_cpu"):
        assert words in p.stdout, words
    p = subprocess.run(["rwsjax", "run", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0 and "NAME:PRESET of a packaged config" in p.stdout and "tinyimagenet_cpu" in p.stdout
    p = subprocess.run(["rwsjax", "train"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: unknown command 'train'")


def test_paper_preset_on_a_cpu_warns_with_its_duration(tmp_path):
    """From a directory outside the repository, by packaged name; no data and no network: two lines, exit 2."""
    closed = "http://127.0.0.1:9"
    env = dict(__import__("os").environ, TFDS_DATA_DIR=str(tmp_path / "empty"), https_proxy=closed,
               HTTPS_PROXY=closed, no_proxy="", NO_PROXY="")
    p = subprocess.run(["rwsjax", "run", "--config=rift", f"--workdir={tmp_path}/w"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120, env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("warning: the paper preset on a CPU-only machine: 110 epochs of PGD-10 AT on 49,000 "
                               "images take about ") and "days here. --config=rift:cpu" in lines[0]
    assert lines[-1].startswith("error: cifar10 is not prepared in ") and len(lines) == 2


@pytest.mark.parametrize("preset", ["paper", "cpu", "smoke"])
def test_presets_follow_the_papers_recipe(preset):
    import importlib.util
    spec = importlib.util.spec_from_file_location("rift_config", f"{ROOT}/configs/rift.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(preset)
    assert c.attack.eps == pytest.approx(8 / 255) and c.eval.step_size == pytest.approx(2 / 255)
    assert c.mrc.eps == 0.1 and c.mrc.learning_rate == 1.0
    assert c.ft.learning_rate == 1e-3 and c.ft.momentum == 0.9 and c.ft.weight_decay == 5e-4
    assert c.interp.tolerance == 0.1 and c.eval.restarts >= 2
    if preset == "paper":
        assert (c.at.epochs, tuple(c.at.decay_epochs), c.at.batch_size, c.at.learning_rate) == (110, (100, 105), 128, 0.1)
        assert c.eval.restarts == 3 and c.mrc.epochs == 10 and c.ft.epochs == 10 and tuple(c.ft.decay_epochs) == (5,)
        assert list(c.interp.alphas) == [round(0.1 * i, 1) for i in range(11)]
        assert c.model.name == "resnet18" and c.model.width_multiplier == 1.0
