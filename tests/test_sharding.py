"""Data parallelism: a step sharded over 2 forced CPU devices equals the 1-device step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, needs_data


@needs_data
@pytest.mark.slow
def test_sharded_and_single_device_steps_agree():
    """2 forced CPU devices vs 1: clean and PGD-AT steps agree to float precision.

    The clean step agrees to float rounding (weights and BN statistics).  An adversarial step's attack turns
    last-bit differences into whole pixel steps wherever an example's input gradient is ~0 (``sign(∇x)``):
    with BN on batch statistics inside the training attack (``attack_bn="batch"``) the cross-device BN
    reduction sums in another order from the first step on; with an eval-mode attack the weights of step 1
    differ by ~1e-7, and step 2's attack of a saturated example may move to other pixels.  Those modes are
    compared against how far the two steps moved the weights, ``‖θ_2dev − θ_1dev‖ / ‖θ_1dev − θ_0‖``
    (a wrong batch, key or step count gives O(1)), the same measure as ``tests/test_multiprocess.py``.
    """
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_step_check.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    r = report["standard/batch"]
    assert r["max_abs_diff"] < 1e-5 and r["batch_stats_diff"] < 1e-5, r
    assert r["sharded_loss"] == pytest.approx(r["single_loss"], rel=1e-6)
    for mode, tol in (("standard/batch", 1e-4), ("pgd_at/eval", 5e-2), ("pgd_at/batch", 0.2)):
        r = report[mode]
        assert r["displacement_diff"] < tol, (mode, r)
        assert r["sharded_loss"] == pytest.approx(r["single_loss"], rel=1e-5 if mode != "pgd_at/batch" else 2e-2)
        assert r["sharded_eval"]["clean"] == r["single_eval"]["clean"]
        assert abs(r["sharded_eval"]["robust"] - r["single_eval"]["robust"]) <= 1
    # MRC modules spread over the 2 devices give exactly the rows of the 1-device table.
    assert report["mrc"]["two"] == report["mrc"]["one"]
    assert [r["module"] for r in report["mrc"]["one"]][-1] == "linear"


def test_batch_not_divisible_by_devices_is_a_clear_error():
    import numpy as np
    from rwsjax.train import sharding

    class FakeMesh:  # a 3-device mesh without needing 3 devices
        class devices:
            size = 3
    with pytest.raises(ValueError, match="divisible by 3"):
        sharding.shard_batch(np.zeros((128, 2)), FakeMesh)
