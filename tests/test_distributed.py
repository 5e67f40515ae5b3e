"""Start-up decisions of the multi-process runtime (no processes started here; see test_multiprocess.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from rwsjax import distributed


def test_single_process_by_default():
    assert distributed.resolve(environ={}) == distributed.Launch("single")
    assert distributed.resolve("h:1", 1, 0, environ={}).kind == "single"  # one process: no runtime


def test_explicit_flags_and_variables():
    assert distributed.resolve("10.0.0.1:1234", 4, 3, environ={}) == distributed.Launch("explicit", "10.0.0.1:1234",
                                                                                          4, 3)
    env = {"RWSJAX_COORDINATOR": "h:99", "RWSJAX_NUM_PROCESSES": "2", "RWSJAX_PROCESS_ID": "1"}
    assert distributed.resolve(environ=env) == distributed.Launch("explicit", "h:99", 2, 1)
    # A flag overrides its variable.
    assert distributed.resolve(process_id=0, environ=env).process_id == 0


@pytest.mark.parametrize("args, match", [
    (("h:1", None, None), r"missing \['--num_processes', '--process_id'\]"),
    ((None, 2, 0), r"missing \['--coordinator'\]"),
    (("hostonly", 2, 0), "HOST:PORT"),
    (("h:1", 2, 2), "0 <= process_id < num_processes"),
    (("h:1", 0, 0), "num_processes >= 1"),
])
def test_incomplete_or_bad_settings_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        distributed.resolve(*args, environ={})


@pytest.mark.parametrize("env, cluster", [
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8", "SLURM_STEP_NODELIST": "n[1-2]"}, "slurm"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_STEP_NODELIST": "n1"}, None),  # one task: single
    ({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "4"}, "openmpi"),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "cloud_tpu"),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, None),  # a single-host TPU VM
    ({"KUBERNETES_SERVICE_HOST": "k", "JAX_COORDINATOR_ADDRESS": "c:1"}, "kubernetes"),
])
def test_cluster_detection(env, cluster):
    assert distributed.detect_cluster(env) == cluster
    assert distributed.resolve(environ=env).kind == (cluster or "single")


def test_single_process_collectives_are_identity(tmp_path):
    assert distributed.is_main()
    assert distributed.gather_objects({"a": 0.1}) == [{"a": 0.1}]
    assert distributed.any_process(True) and not distributed.any_process(False)
    with distributed.main_first("x"):
        pass
    distributed.barrier("y")
    distributed.check_shared_workdir(str(tmp_path))


def test_set_cpu_devices_checks_xla_flags_and_jax_start():
    env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    jax.devices()  # JAX has started: only calls that change no device count may pass
    assert distributed.set_cpu_devices(1, env) == 1 and env["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
    with pytest.raises(ValueError, match="before JAX starts"):
        distributed.set_cpu_devices(2, env)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert distributed.set_cpu_devices(2, env) == 2  # already set, same count: nothing to do
    assert distributed.set_cpu_devices(1, env) == 2  # the default asks for no split: launch/local.sh's count stays
    with pytest.raises(ValueError, match="contradicts --cpu_devices=3"):
        distributed.set_cpu_devices(3, env)
    with pytest.raises(ValueError, match=">= 0"):
        distributed.set_cpu_devices(-1, {})


def test_cpu_devices_flag_splits_the_host(tmp_path):
    """A fresh process: --cpu_devices=0 gives one JAX device per core, 3 gives 3."""
    code = ("import os, sys; from rwsjax import distributed; n = distributed.set_cpu_devices(int(sys.argv[1])); "
            "import jax; print(n, jax.device_count(), os.cpu_count(), 'XLA_FLAGS' in os.environ)")
    for arg in ("0", "3"):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
        out = subprocess.run([sys.executable, "-c", code, arg], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        n, count, cores = map(int, out[:3])
        assert n == count == (cores if arg == "0" else 3)
        assert out[3] == "False"  # the count is this process's JAX option: nothing for child processes
