"""Command line: ``rwsjax run --config=rift:cpu --workdir=DIR`` (also ``python -m rwsjax.main ...``).

``--config`` is a packaged config (``rift``, ``rws``, ``evaluate``; see
:mod:`rwsjax.configs`) or a config file, with ``:PRESET``; its
``get_config(preset)`` builds an ``ml_collections`` ConfigDict; any field can
be overridden (``--config.at.epochs=5``).  The
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

def _config_help() -> str:
    from rwsjax.configs import describe_presets
    return ("NAME:PRESET of a packaged config, or FILE:PRESET of a config file (e.g. --config=rift:cpu). "
            "Packaged configs and their presets (the first is the default):\n" + describe_presets())


_CONFIG = config_flags.DEFINE_config_file("config", None, _config_help(), lock_config=True)
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


def _cpu_warning(config) -> str | None:
    """A paper-scale RiFT run on a CPU-only machine: its estimated duration, and the preset to use instead."""
    import jax
    if jax.devices()[0].platform != "cpu" or config.get("preset") != "paper" or config.workflow != "rift":
        return None
    from rwsjax.data.sources import DATASETS
    n = config.data.train_size or 50_000 - config.data.val_size
    width = config.model.width_multiplier
    # ResNet-18 (width 64) PGD-10 AT step on a CPU: ≈ 2.5 img/s per core (benchmarks/train_steps.py), cost ∝ width²
    # and image area; the MRC, fine-tuning and evaluation stages add about a fifth.
    ips = 2.5 * (os.cpu_count() or 1) / max(width, 1 / 16) ** 2 / (DATASETS[config.data.name].image_shape[0] / 32) ** 2
    days = 1.2 * config.at.epochs * n / ips / 86_400
    return (f"warning: the paper preset on a CPU-only machine: {config.at.epochs} epochs of PGD-10 AT on {n:,} images "
            f"take about {days:,.0f} days here. --config=rift:cpu runs the whole pipeline at reduced scale "
            "in < 45 min (README, Presets); a GPU or TPU runs the paper preset.")


def _run(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    config = _CONFIG.value
    if config is None:
        _fail("--config is required, e.g. --config=rift:cpu (--help lists the packaged configs and their presets)")
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
    warning = _cpu_warning(config)
    if warning:
        print(warning, file=sys.stderr)
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


def _load_config(spec: str):
    """The ConfigDict of ``FILE[:PRESET]`` without overrides (None when it cannot be built)."""
    import importlib.util
    path, _, preset = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("rwsjax_user_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.get_config(preset) if preset else module.get_config()
    except Exception:  # noqa: BLE001 — absl's own message says what is wrong with the file
        return None


def _unknown_override(config, overrides: list[str]) -> str | None:
    """The first ``--config.a.b=v`` naming a section or field that `config` lacks, explained, or None."""
    import difflib
    import ml_collections
    for override in overrides:
        key = override[len("--config."):].split("=", 1)[0]
        node, walked = config, "config"
        for part in key.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                names = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                close = difflib.get_close_matches(part, names, n=1)
                hint = f"did you mean {walked}.{close[0]}? " if close else ""
                where = f"the {config.workflow} config" if config.get("workflow") else "the config"
                return (f"{override}: {where} has no {walked}.{part} ({hint}{walked} has: {', '.join(names)}); "
                        "remove the override or use a config that has it (rwsjax run --help lists them)")
            node, walked = node[part], f"{walked}.{part}"
    return None


def _parse_flags(argv):
    """absl flag parsing, with a bad ``--config`` or override reported in one line instead of a traceback.

    ``--config=NAME[:PRESET]`` of a packaged config is resolved to its file first.
    """
    from rwsjax.configs import resolve
    argv = list(argv)
    resolved = None
    for i, a in enumerate(argv[1:], 1):
        if a.startswith("--config="):
            try:
                argv[i] = "--config=" + resolve(a.split("=", 1)[1])
            except ValueError as e:
                _fail(str(e))
            resolved = argv[i].split("=", 1)[1]
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        config = _load_config(resolved) if resolved else None
        unknown = _unknown_override(config, overrides) if config is not None else None
        if unknown:
            _fail(unknown)
        detail = str(e)
        if "Traceback (most recent call last)" in detail:  # an error inside the config file: keep its last line
            head = detail.split("Traceback (most recent call last)")[0].strip()
            last = [line for line in detail.replace("\\n", "\n").splitlines() if line.strip()][-1].strip()
            detail = f"{head} {last}"
        if len(detail) > 1 and detail[0] == detail[-1] == "'":  # AttributeError repr of a KeyError message
            detail = detail[1:-1]
        detail = detail.replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
        what = f"override among {overrides}" if overrides else "--config"
        _fail(f"bad {what}: {detail}")


def main(argv=None, prog: str = "python -m rwsjax.main"):
    """Runs the command line on `argv` (default ``sys.argv[1:]``); exits with the run's status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("--help", "-h", "--helpshort", "--helpfull") for a in argv):
        print(f"usage: {prog} --config=NAME[:PRESET] --workdir=DIR [--config.FIELD=VALUE ...] [flags]\n\n"
              f"{__doc__.split(chr(10) + chr(10), 1)[1].strip()}\n\nflags:\n{flags.FLAGS.module_help(__name__)}")
        sys.exit(0)
    app.run(_run, argv=[prog, *argv], flags_parser=_parse_flags)


if __name__ == "__main__":
    main()
