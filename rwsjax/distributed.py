"""Multi-process (multi-host) runtime on JAX's distributed runtime.

One Python process per host (or per GPU) runs the same program (SPMD).  The
processes are joined by :func:`initialize` (``jax.distributed.initialize``),
after which ``jax.devices()`` lists the devices of every process and one
``jax.jit`` step over a :class:`jax.sharding.Mesh` of all of them is one
data-parallel step of the global batch.  On CPU the collectives go over gloo.

Side effects are split the usual way: every process computes; only process 0
prints, writes reports, figures and TensorBoard events (:func:`is_main`),
and every process passes the same barriers (:func:`barrier`) so that files
written by process 0 are visible to all before anyone reads them.  The
workdir must therefore be on a filesystem every host sees (NFS, Filestore, a
GCS FUSE mount) — :func:`check_shared_workdir` verifies it at start-up.

A single-process run never touches the distributed runtime.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from dataclasses import dataclass

import jax

# Explicit settings (flags of ``rwsjax.main`` or these environment variables).
ENV_COORDINATOR = "RWSJAX_COORDINATOR"
ENV_NUM_PROCESSES = "RWSJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "RWSJAX_PROCESS_ID"


@dataclass(frozen=True)
class Launch:
    """How this process was started: ``kind`` is ``"single"``, ``"explicit"`` or a detected cluster."""
    kind: str
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def detect_cluster(environ=None) -> str | None:
    """The multi-process cluster this process runs in, from its environment, or None.

    Recognized (JAX's own cluster detection then fills in coordinator, process
    count and id): ``"slurm"`` (``srun`` with more than one task),
    ``"openmpi"`` (``mpirun -np N>1``), ``"cloud_tpu"`` (a multi-host TPU VM
    slice: ``TPU_WORKER_HOSTNAMES`` lists several hosts), ``"kubernetes"``
    (a JobSet/indexed Job exporting ``JAX_COORDINATOR_ADDRESS``).
    """
    env = os.environ if environ is None else environ
    if "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in env:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "openmpi"
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "cloud_tpu"
    if "KUBERNETES_SERVICE_HOST" in env and "JAX_COORDINATOR_ADDRESS" in env:
        return "kubernetes"
    return None


def resolve(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
            environ=None) -> Launch:
    """Decide how to start: explicit flags > ``RWSJAX_*`` variables > cluster detection > single process.

    Raises:
      ValueError: only some of coordinator / num_processes / process_id are
        given, or they are inconsistent (message names the missing or bad value).
    """
    env = os.environ if environ is None else environ
    coordinator = coordinator or env.get(ENV_COORDINATOR) or None
    if num_processes is None and env.get(ENV_NUM_PROCESSES):
        num_processes = int(env[ENV_NUM_PROCESSES])
    if process_id is None and env.get(ENV_PROCESS_ID):
        process_id = int(env[ENV_PROCESS_ID])
    given = {"--coordinator": coordinator, "--num_processes": num_processes, "--process_id": process_id}
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"multi-process launch needs {', '.join(given)} together; missing {missing} "
                             f"(flags, or the variables {ENV_COORDINATOR}/{ENV_NUM_PROCESSES}/{ENV_PROCESS_ID})")
        if ":" not in coordinator:
            raise ValueError(f"--coordinator must be HOST:PORT of process 0, got {coordinator!r}")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes; got "
                             f"num_processes={num_processes}, process_id={process_id}")
        if num_processes == 1:
            return Launch("single")
        return Launch("explicit", coordinator, num_processes, process_id)
    cluster = detect_cluster(env)
    return Launch(cluster) if cluster else Launch("single")


CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def set_cpu_devices(n: int, environ=None) -> int:
    """Split this process's CPU into ``n`` JAX devices (``0``: one per core), before JAX starts.

    A data-parallel step then runs one shard of the batch per device, each on its own thread, instead of
    one program whose kernels are not all multi-threaded (XLA:CPU runs several convolutions of a
    width-16 ResNet-18 on one core): measured 1.2-1.3× on the PGD-10 AT step of a 2-core machine
    (``benchmarks/at_step_vs_pytorch.py``).  Results change only by float reassociation: BatchNorm
    statistics are still taken over the whole batch (XLA sums them across devices).  Batch sizes must
    then divide by ``n``.  No effect on GPU/TPU runs (their devices are used, not the host's).

    The count is JAX's ``jax_num_cpu_devices`` option of this process; the environment is only read, so
    a child process gets its own count (its own ``--cpu_devices``, or ``XLA_FLAGS``), not this one's.

    Args:
      n: devices (``>= 0``; ``0``: ``os.cpu_count()``; ``1``, ``--cpu_devices``' default: no split asked
        for, so a count that ``XLA_FLAGS`` sets, as ``launch/local.sh`` does, is kept).
      environ: where to read ``XLA_FLAGS`` (default ``os.environ``).

    Returns:
      the CPU device count: the one ``XLA_FLAGS``' ``--xla_force_host_platform_device_count`` sets if it
      does (then nothing is changed), else ``n`` (the number of cores for ``0``; ``1`` changes nothing).

    Raises:
      ValueError: ``n < 0``; ``n > 1`` and ``XLA_FLAGS`` sets another count; or JAX has already started
        its backends with another count (call this before anything touches a device).
    """
    env = os.environ if environ is None else environ
    if n < 0:
        raise ValueError(f"--cpu_devices must be >= 0 (0 = one device per core), got {n}")
    n = n or os.cpu_count() or 1
    current = [f.split("=", 1)[1] for f in env.get("XLA_FLAGS", "").split() if f.startswith(CPU_DEVICES_FLAG + "=")]
    if current:
        if n != 1 and current[-1] != str(n):
            raise ValueError(f"XLA_FLAGS already sets {CPU_DEVICES_FLAG}={current[-1]}, which contradicts "
                             f"--cpu_devices={n}; drop one of the two")
        return int(current[-1])
    if n == 1:
        return 1
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # JAX's answer once its backends exist with another count
        raise ValueError("--cpu_devices must be applied before JAX starts its backends; call "
                         "distributed.set_cpu_devices first (rwsjax.main does)") from None
    return n


def initialize(launch: Launch, *, quiet_workers: bool = True) -> None:
    """Join the distributed runtime (no-op for ``Launch("single")``).

    Must run before any JAX computation.  With ``quiet_workers`` the
    processes other than 0 write nothing to stdout and show no progress bars
    (errors still go to stderr).
    """
    if launch.kind == "single":
        return
    if launch.kind == "explicit":
        jax.distributed.initialize(launch.coordinator, num_processes=launch.num_processes,
                                   process_id=launch.process_id)
    else:
        jax.distributed.initialize()  # JAX's cluster auto-detection
    if quiet_workers and jax.process_index() != 0:
        os.environ["TQDM_DISABLE"] = "1"
        sys.stdout = open(os.devnull, "w")


def is_main() -> bool:
    """True in process 0 (and in every single-process run): the one process that writes artifacts."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Block until every process reaches the barrier ``name`` (no-op in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def on_main(name: str, fn, *args) -> None:
    """``fn(*args)`` on process 0 only, then a barrier ``name``: its effect (a file) is visible to all."""
    if is_main():
        fn(*args)
    barrier(name)


@contextlib.contextmanager
def main_first(name: str):
    """Process 0 runs the body first; the others run it after it finished (e.g. to reuse a cache it wrote)."""
    if not is_main():
        barrier(name)
    yield
    if is_main():
        barrier(name)


def check_shared_workdir(workdir: str) -> None:
    """Verify that every process sees the files process 0 writes in ``workdir``.

    Raises:
      RuntimeError: (on every process) some process cannot see the file: the workdir is not shared.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    import numpy as np
    token = np.frombuffer(uuid.uuid4().bytes, np.uint8)
    token = multihost_utils.broadcast_one_to_all(token)
    path = os.path.join(workdir, ".rwsjax_shared_check")
    if is_main():
        with open(path, "wb") as f:
            f.write(bytes(np.asarray(token)))
    barrier("shared_workdir_written")
    ok = os.path.exists(path) and open(path, "rb").read() == bytes(np.asarray(token))
    oks = np.asarray(multihost_utils.process_allgather(np.asarray([ok]))).reshape(-1)
    blind = [i for i, v in enumerate(oks) if not v]
    if blind:  # raised on every process, so none waits forever at a later barrier
        raise RuntimeError(
            f"processes {blind} cannot see {path} written by process 0: --workdir must be on a "
            "filesystem shared by all hosts (NFS, Filestore, a GCS FUSE mount)")


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (a collective; e.g. "SIGTERM arrived somewhere")."""
    if jax.process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils
    return bool(np.asarray(multihost_utils.process_allgather(np.asarray([bool(flag)]))).any())


def gather_objects(obj):
    """Every process's ``obj`` (JSON-serializable), as a list indexed by process; exact for floats.

    A collective: every process must call it.  Single process: ``[obj]``.
    """
    if jax.process_count() == 1:
        return [obj]
    import json
    import numpy as np
    from jax.experimental import multihost_utils
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    everyone = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(everyone, sizes)]
