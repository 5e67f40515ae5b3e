"""Preemption and crashes: a run killed at several steps resumes to bit-identical weights — RiFT's θ_AT
(PGD-AT) and the RWS zoo's θ_pre, each through the stage runner."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, needs_data

CHECK = os.path.join(ROOT, "tests", "pipeline_check.py")


# mode → (directory of its training stage in the workdir)
STAGE_DIRS = {"at": "at", "zoo": os.path.join("zoo", "pre")}


def _run(mode, workdir, fault=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    env.pop("XLA_FLAGS", None)
    env.pop("RWSJAX_FAULT_AT_STEP", None)
    if fault:
        env["RWSJAX_FAULT_AT_STEP"] = fault
    # 128 training images, batch 64: 2 steps per epoch; 3 epochs = 6 steps, checkpoint after each epoch.
    return subprocess.run([sys.executable, CHECK, mode, workdir, "3"], env=env, capture_output=True, text=True,
                          timeout=900, cwd=ROOT)


def _final_state(stage_dir):
    """(step, training state) of the newest checkpoint: weights, BN statistics, momentum buffers."""
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(os.path.join(stage_dir, "checkpoints"))
    step = manager.latest_step()
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    return step, jax.device_get(out.state)


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["at", "zoo"])
def test_killed_and_preempted_run_resumes_bit_identically(tmp_path, mode):
    """``at``: SIGKILL, then SIGTERM, then, resumed, SIGINT; ``zoo`` (the RWS stage): SIGKILL. The resumed run
    ends bit-identical to an uninterrupted one."""
    interrupted, straight = str(tmp_path / "interrupted"), str(tmp_path / "straight")
    stage = STAGE_DIRS[mode]
    # SIGKILL right after step 2 (end of epoch 1, before its checkpoint): starts over.
    r = _run(mode, interrupted, "2:KILL")
    assert r.returncode == -9, r.stderr[-2000:]
    assert not os.path.exists(os.path.join(interrupted, stage, "checkpoints", "2"))
    last = 0
    if mode == "at":
        # SIGTERM (a preemption notice; exit 143) after step 3 (mid-epoch 2): finishes the step, checkpoints
        # step 3, exits with a message.
        r = _run(mode, interrupted, "3:TERM")
        assert r.returncode == 143, r.stderr[-2000:]
        assert "SIGTERM received: checkpoint written at step 3" in r.stderr
        assert os.path.isdir(os.path.join(interrupted, stage, "checkpoints", "3"))
        # Resumed from step 3, SIGINT (Ctrl-C; exit 130) after step 5: checkpoints step 5.
        r = _run(mode, interrupted, "5:INT")
        assert r.returncode == 130 and "resumed from" in r.stdout and "at step 3" in r.stdout, r.stdout[-2000:]
        assert "SIGINT received: checkpoint written at step 5" in r.stderr
        last = 5
    r = _run(mode, interrupted)
    assert r.returncode == 0, r.stderr[-2000:]
    if last:
        assert f"at step {last}" in r.stdout and "resumed and computed in" in r.stdout  # the runner saw the stage
    assert _run(mode, straight).returncode == 0
    (step_a, a), (step_b, b) = (_final_state(os.path.join(d, stage)) for d in (interrupted, straight))
    assert step_a == step_b == 6
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))  # bit-identical on CPU
    from rwsjax.train import checkpoint
    fa, fb = (checkpoint.load_variables(os.path.join(d, stage, "final")) for d in (interrupted, straight))
    for x, y in zip(jax.tree.leaves(fa), jax.tree.leaves(fb)):
        np.testing.assert_array_equal(x, y)


def _fake_python(tmp_path, statuses):
    """A ``python`` on PATH that exits with the next status of ``statuses`` and logs each call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "statuses").write_text("\n".join(map(str, statuses)) + "\n")
    script = bin_dir / "python"
    script.write_text(f"""#!/usr/bin/env bash
echo "$@" >> {tmp_path}/calls
status=$(head -n1 {tmp_path}/statuses); sed -i 1d {tmp_path}/statuses; exit "$status"
""")
    script.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.parametrize("statuses,expected,calls", [
    ((143, 143, 0), 0, 3),   # preempted twice, then done: resumed each time
    ((143, 130), 130, 2),    # preempted, then Ctrl-C: stops, status 130
    ((143, 1), 1, 2),        # a real failure stops the loop with its status
])
def test_run_until_done_resumes_after_preemption_only(tmp_path, statuses, expected, calls):
    env = _fake_python(tmp_path, statuses)
    r = subprocess.run([os.path.join(ROOT, "launch", "run_until_done.sh"), "configs/rift.py:smoke", "w",
                        "--config.at.epochs=1"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == expected, r.stderr
    lines = (tmp_path / "calls").read_text().splitlines()
    assert lines == ["-m rwsjax.main --config=configs/rift.py:smoke --workdir=w --config.at.epochs=1"] * calls
