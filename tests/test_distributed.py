"""Start-up decisions of the multi-process runtime (no processes started here; see test_multiprocess.py)."""

from __future__ import annotations

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
