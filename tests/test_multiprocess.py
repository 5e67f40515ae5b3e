"""Multi-process runs: 2 processes x 2 CPU devices (gloo) agree with 1 process x 1 device.

The processes are started by ``launch/local.sh`` (the users' local launcher)
and run ``tests/pipeline_check.py``: PGD-AT, then the RiFT pipeline, on
real CIFAR-10 (smoke preset).  Then a checkpoint written by the 4-device run
is restored by a 1-device run, which continues training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from conftest import ROOT, needs_data

CHECK = os.path.join(ROOT, "tests", "pipeline_check.py")


def _run(args, env_extra, timeout=900):
    env = dict(os.environ, **env_extra)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _multi(mode, workdir, log_dir, *extra):
    return _run([os.path.join(ROOT, "launch", "local.sh"), "2", "2", sys.executable, CHECK, mode, workdir,
                 *extra], {"LOG_DIR": log_dir, "TQDM_DISABLE": "1"})


def _single(mode, workdir, *extra):
    return _run([sys.executable, CHECK, mode, workdir, *extra],
                {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                 "TQDM_DISABLE": "1"})


def _variables(path):
    from rwsjax.train import checkpoint
    return checkpoint.load_variables(path)


def _init_params():
    """θ_0 of the check's config (what ``workflows.common.Task`` initializes)."""
    import jax
    import jax.numpy as jnp
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    import rift as rift_config
    from rwsjax.models.registry import create_model
    c = rift_config.get_config("smoke")
    model = create_model(c.model.name, num_classes=10, width_multiplier=c.model.width_multiplier)
    return jax.device_get(jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(
        jax.random.PRNGKey(c.seed)))["params"]


def assert_same_training(a, b, init, tol=5e-2):
    """Two runs of the same training steps agree to float tolerance.

    Measured against how far training moved the weights: ``‖θ_a − θ_b‖ ≤ tol·‖θ_b − θ_0‖``
    (over all parameters), and BN statistics to ``tol`` relative.  A wrong batch, key or
    step count moves the weights by O(‖θ_b − θ_0‖).  Reassociated float sums alone leave
    ~1e-7 after one step, but the weight gradient of a conv followed by train-mode BN is a
    difference of nearly equal terms and amplifies them, and from the second step on an example whose
    input gradient is ~0 (saturated) takes its PGD direction from those last bits: after 2 steps the
    ratio was ~2e-3 with flax.linen.BatchNorm and 2.2e-2 with rwsjax's BatchNorm (the same float64
    error, tests/test_batch_norm.py), the same for 1 process × 4 devices vs 1 × 1 as for 2 × 2.
    """
    import jax
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    pa, pb, p0 = flat(a["params"]), flat(b["params"]), flat(init)
    moved = np.linalg.norm(pb - p0)
    assert moved > 0
    assert np.linalg.norm(pa - pb) <= tol * moved, (np.linalg.norm(pa - pb), moved)
    chex.assert_trees_all_close(a["batch_stats"], b["batch_stats"], rtol=tol, atol=tol)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """single: the pipeline on 1 device.  at: PGD-AT alone on 2 processes × 2 devices.
    multi: the pipeline on 2 × 2 from the single run's θ_AT, so MRC, fine-tuning and the
    α sweep start from the same weights and can be compared tightly."""
    root = tmp_path_factory.mktemp("multiprocess")
    single, at, multi = str(root / "single"), str(root / "at"), str(root / "multi")
    _single("rift", single)
    _multi("at", at, str(root / "logs_at"))
    os.makedirs(os.path.join(multi, "at"))
    shutil.copytree(os.path.join(single, "at", "final"), os.path.join(multi, "at", "final"))
    shutil.copytree(os.path.join(single, "stages"), os.path.join(multi, "stages"))  # θ_AT's stage record
    for name in os.listdir(os.path.join(multi, "stages")):
        if name != "at.json":
            os.remove(os.path.join(multi, "stages", name))
    out = _multi("rift", multi, str(root / "logs"))
    return root, multi, single, out


@needs_data
@pytest.mark.slow
def test_two_processes_match_one_device(runs):
    root, multi, single, _ = runs
    at = str(root / "at")
    theta_at = _variables(os.path.join(single, "at", "final"))
    # PGD-AT steps on 2 × 2 devices vs 1.
    assert_same_training(_variables(os.path.join(at, "at", "final")), theta_at, _init_params())
    # From the same θ_AT: MRC per module (each on one device) is the same number however many devices
    # share the table; fine-tuning the chosen module agrees to float tolerance.
    m, s = (json.load(open(os.path.join(d, "mrc.json"))) for d in (multi, single))
    assert [r["module"] for r in m["modules"]] == [r["module"] for r in s["modules"]]
    assert len(m["modules"]) == 21  # every ResNet-18 kernel, computed on 4 devices of 2 processes
    # XLA:CPU shares its thread pool among the forced host devices, so a 1-device and a 2-device process
    # sum convolutions in different orders; the lr-1 ascent carries that to ~2e-3 in a few modules. With the
    # same devices per process, spreading modules gives bit-identical rows (test_sharding.py).
    np.testing.assert_array_equal([r["loss_at"] for r in m["modules"]][0], [r["loss_at"] for r in s["modules"]][0])
    for key in ("mrc", "loss_max"):
        np.testing.assert_allclose([r[key] for r in m["modules"]], [r[key] for r in s["modules"]],
                                   rtol=1e-2, atol=1e-6, err_msg=key)
    assert_same_training(_variables(os.path.join(multi, "ft", "final")),
                         _variables(os.path.join(single, "ft", "final")), theta_at["params"], tol=1e-2)
    mr, sr = (json.load(open(os.path.join(d, "results.json"))) for d in (multi, single))
    assert len(mr["devices"]) == 4 and len(sr["devices"]) == 1
    assert mr["at"]["n"] == sr["at"]["n"] == 100  # every test example counted once across the processes
    assert abs(mr["at"]["clean_accuracy"] - sr["at"]["clean_accuracy"]) <= 1.0  # at most one image
    assert mr["finetuned_modules"] == sr["finetuned_modules"]


@needs_data
def test_only_process_zero_writes(runs):
    root, multi, _, out = runs
    logs = [json.load(open(os.path.join(d, "writes", f"process_{i}.json")))
            for d in (multi, str(root / "at")) for i in (0, 1)]
    assert all(log["devices"] == 4 and log["processes"] == 2 for log in logs)
    assert {"results.json", "report.md", "mrc.json"} <= set(logs[0]["writes"])
    assert "at/history.json" in logs[2]["writes"]
    # Process 1 writes only its own progress: the MRC rows of the modules it computed (resumable).
    assert logs[3]["writes"] == [] and logs[1]["writes"]
    assert all(w.startswith("mrc_partial/") for w in logs[1]["writes"])
    events = [f for _, _, files in os.walk(os.path.join(multi, "tensorboard")) for f in files]
    assert len(events) == 2 and all(f.startswith("events.out.tfevents.") for f in events)  # process 0's: scalars, hparams
    assert "[mrc]" in out.stdout and "RiFT" not in open(os.path.join(root, "logs", "process_1.log")).read()


@needs_data
def test_checkpoint_from_four_devices_continues_on_one(runs, tmp_path):
    root = runs[0]
    resumed = str(tmp_path / "resumed")
    os.makedirs(os.path.join(resumed, "at"))
    # The 4-device run's AT checkpoint (end of its only epoch, step 2); a 2-epoch 1-device run continues it.
    shutil.copytree(os.path.join(root, "at", "at", "checkpoints"), os.path.join(resumed, "at", "checkpoints"))
    proc = _single("at", resumed, "2")
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout, proc.stdout[-2000:]
    assert "epoch 2/2" in proc.stdout and "epoch 1/2" not in proc.stdout
    history = json.load(open(os.path.join(resumed, "at", "history.json")))
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 1 from the 4-device run, epoch 2 trained here
    # The 1-device run checkpointed step 4, with weights moved on from the 4-device run's step 2.
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(os.path.join(resumed, "at", "checkpoints"))
    assert manager.latest_step() == 4
    state = manager.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    manager.close()
    theta_4 = _variables(os.path.join(root, "at", "at", "final"))  # the 4-device run's only epoch
    assert int(state["step"]) == 4
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(theta_4["params"]),
                                                         jax.tree.leaves(jax.device_get(state["params"]))))
