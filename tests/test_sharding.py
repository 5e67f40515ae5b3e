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
    """2 forced CPU devices vs 1: clean and PGD-AT steps agree to float precision.

    With BN on batch statistics inside the training attack (``attack_bn="batch"``) the
    cross-device BN reduction sums in another order; ``sign(∇x)`` turns those last-bit
    differences into different pixels wherever the input gradient is ~0 (an untrained
    model), so that mode agrees only approximately — asserted separately.  An eval-mode training
    attack sees the same last-bit differences from the second step on (the weights of step 1 differ by
    ~1e-7), so a saturated example, whose input gradient is ~0, may move to other pixels: measured
    2.5e-7 (flax.linen.BatchNorm) and 3.6e-5 (rwsjax BatchNorm, same float64 error) after 2 steps.
    """
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_step_check.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for mode, tol in (("standard/batch", 1e-5), ("pgd_at/eval", 1e-4)):
        r = report[mode]
        assert r["max_abs_diff"] < tol, (mode, r)
        assert r["sharded_loss"] == pytest.approx(r["single_loss"], rel=1e-5)
        assert r["sharded_eval"]["clean"] == r["single_eval"]["clean"]
        assert abs(r["sharded_eval"]["robust"] - r["single_eval"]["robust"]) <= 1
    r = report["pgd_at/batch"]
    assert r["relative_diff"] < 0.02 and r["sharded_loss"] == pytest.approx(r["single_loss"], rel=0.02), r
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
