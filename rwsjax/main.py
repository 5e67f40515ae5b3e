"""Command line: ``python -m rwsjax.main --config=configs/rift.py:cpu --workdir=DIR``.

The config file's ``get_config(preset)`` builds an ``ml_collections``
ConfigDict; any field can be overridden (``--config.at.epochs=5``).  The
resolved config is printed; the workflow named by ``config.workflow`` then
runs (or resumes) its stages in ``DIR`` (:mod:`rwsjax.workflows.stages`).

Multi-process (multi-host) runs start one such process per host (or per
GPU): on Cloud TPU, SLURM and Open MPI the processes find each other by
themselves; elsewhere pass ``--coordinator=HOST:PORT --num_processes=N
--process_id=I`` (or the ``RWSJAX_*`` variables of :mod:`rwsjax.distributed`).
See ``launch/``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/rift.py:cpu.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, reports and figures "
                               "(re-running with the same workdir resumes).")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "Multi-process: HOST:PORT of process 0 (not needed "
                                   "on Cloud TPU / SLURM / Open MPI, which are detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index, 0..N-1.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 1, "CPU runs: split the host into this many JAX devices "
                                    "and shard every batch over them (0 = one per core; faster on XLA:CPU, "
                                    "see README 'Benchmarks'). Batch sizes must divide by it.")


def _fail(message: str) -> None:
    """A user error: the message alone on stderr (no traceback, no flag help), exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    config = _CONFIG.value
    if config is None:
        _fail("--config is required, e.g. --config=configs/rift.py:cpu")
    if _WORKDIR.value is None:
        _fail("--workdir is required, e.g. --workdir=runs/rift_cpu")
    from rwsjax import distributed, workflows
    try:
        launch = distributed.resolve(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except ValueError as e:
        _fail(str(e))
    try:
        distributed.set_cpu_devices(_CPU_DEVICES.value)
    except ValueError as e:
        _fail(str(e))
    distributed.initialize(launch)  # before anything touches a JAX device
    from rwsjax.config_validation import ConfigError, resolve_defaults
    try:
        workflows.validate(config)
    except ConfigError as e:
        _fail(str(e))
    resolve_defaults(config)
    workdir = os.path.abspath(_WORKDIR.value)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        _fail(f"--workdir={_WORKDIR.value} is a file; give a directory (new or of an earlier run)")
    os.makedirs(workdir, exist_ok=True)
    distributed.check_shared_workdir(workdir)
    print(config)
    from rwsjax.data.sources import DatasetNotFoundError
    from rwsjax.rws.patching import SignatureMismatchError
    from rwsjax.rws.signatures import SignatureFormatError
    from rwsjax.train.checkpoint import CheckpointError
    from rwsjax.train.loop import Preempted
    from rwsjax.workflows.stages import StageError
    # What a user can fix (the message says how): one line, no traceback.  FloatingPointError: a NaN/inf loss
    # stopped training with the last good checkpoint kept.
    user_errors = (StageError, DatasetNotFoundError, CheckpointError, SignatureFormatError, SignatureMismatchError,
                   FloatingPointError)
    try:
        workflows.get(config.workflow).run(config, workdir)
    except user_errors as e:
        _fail(str(e))
    except Preempted as e:  # checkpointed: 130 after Ctrl-C (the user's stop), 143 after a preemption notice
        print(e, file=sys.stderr)
        sys.exit(e.exit_status)
    print(f"done: results in {workdir}")


def _parse_flags(argv):
    """absl flag parsing, with a bad ``--config.*`` override reported in one line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config")]
        detail = str(e)
        if "Traceback (most recent call last)" in detail:  # an error inside the config file: keep its last line
            head = detail.split("Traceback (most recent call last)")[0].strip()
            last = [line for line in detail.replace("\\n", "\n").splitlines() if line.strip()][-1].strip()
            detail = f"{head} {last}"
        if len(detail) > 1 and detail[0] == detail[-1] == "'":  # AttributeError repr of a KeyError message
            detail = detail[1:-1]
        detail = detail.replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
        sys.exit(f"error: bad --config or override among {overrides}: {detail}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
