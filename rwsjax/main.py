"""Command line: ``python -m rwsjax.main --config=configs/rift.py:cpu --workdir=DIR``.

The config file's ``get_config(preset)`` builds an ``ml_collections``
ConfigDict; any field can be overridden (``--config.at.epochs=5``).  The
resolved config is printed and written to ``DIR/config.json``; the workflow
named by ``config.workflow`` then runs (or resumes) in ``DIR``.

Multi-process (multi-host) runs start one such process per host (or per
GPU): on Cloud TPU, SLURM and Open MPI the processes find each other by
themselves; elsewhere pass ``--coordinator=HOST:PORT --num_processes=N
--process_id=I`` (or the ``RWSJAX_*`` variables of :mod:`rwsjax.distributed`).
See ``launch/``.
"""

from __future__ import annotations

import importlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rwsjax.report.writers import write_json

WORKFLOWS = ("rift", "evaluate", "rws")

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


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/rift.py:cpu")
    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required, e.g. --workdir=runs/rift_cpu")
    if config.workflow not in WORKFLOWS:
        raise app.UsageError(f"unknown config.workflow {config.workflow!r}; valid: {WORKFLOWS}")
    from rwsjax import distributed
    try:
        launch = distributed.resolve(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    try:
        distributed.set_cpu_devices(_CPU_DEVICES.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    distributed.initialize(launch)  # before anything touches a JAX device
    from rwsjax.config_validation import ConfigError, resolve_defaults, validate
    try:
        validate(config)
    except ConfigError as e:
        raise app.UsageError(str(e)) from None
    resolve_defaults(config)
    workdir = os.path.abspath(_WORKDIR.value)
    os.makedirs(workdir, exist_ok=True)
    distributed.check_shared_workdir(workdir)
    workflow = importlib.import_module(f"rwsjax.workflows.{config.workflow}")
    if hasattr(workflow, "STAGES"):
        from rwsjax.workflows import stages
        try:
            status = stages.prepare(workdir, config, workflow.STAGES)
        except stages.StageError as e:
            raise app.UsageError(str(e)) from None
        print("[stages] " + ", ".join(f"{k}: {v}" for k, v in status.items()))
    print(config)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    from rwsjax.train.loop import Preempted
    try:
        workflow.run(config, workdir)
    except Preempted as e:
        print(e, file=sys.stderr)
        sys.exit(143)
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
