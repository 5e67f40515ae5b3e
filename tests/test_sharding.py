"""Data parallelism: a step sharded over 2 forced CPU devices equals the 1-device step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, needs_data


@needs_data
def test_sharded_and_single_device_steps_agree():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_step_check.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["max_abs_diff"] < 1e-4, r
    assert r["sharded_loss"] == pytest.approx(r["single_loss"], rel=1e-4)
    assert r["sharded_eval"]["clean"] == r["single_eval"]["clean"]
    assert abs(r["sharded_eval"]["robust"] - r["single_eval"]["robust"]) <= 1


def test_batch_not_divisible_by_devices_is_a_clear_error():
    import numpy as np
    from rwsjax.train import sharding

    class FakeMesh:  # a 3-device mesh without needing 3 devices
        class devices:
            size = 3
    with pytest.raises(ValueError, match="divisible by 3"):
        sharding.shard_batch(np.zeros((128, 2)), FakeMesh)
