"""The one stage runner every workflow (RiFT, RWS, evaluate) runs on.

A workflow is a sequence of :class:`Stage` s.  A stage is declared once: its
name, the config fields its result depends on, the artifacts it writes into
the workdir, and ``compute(ctx, results)``, a function that makes the result
from the results of earlier stages (``results["at"]``).  The runner alone
decides, per stage,

* **skip**: its record ``WORKDIR/stages/NAME.json`` exists, its artifacts are
  there and its inputs are the ones it was computed from — its result is then
  read back with ``load(ctx)`` only if a later stage asks for it;
* **refuse**: a recorded config field changed — the run stops before any work
  with one message naming every changed field (old → new) and
  ``--config.redo=STAGE``;
* **compute**: otherwise.  Resumable state (training checkpoints, finished
  MRC rows) is listed in ``partial``; a stage whose partial state exists is
  *started*, its config is recorded when it starts, and it resumes.

``--config.redo=STAGE`` deletes that stage's artifacts, partial state and
record, and those of every later stage, which are then recomputed.  Each
record holds the config fields the stage used, the records of its inputs (a
stage computed from a recomputed input is recomputed) and its wall time in
seconds; a stage that raises leaves no record.  The workdir is locked for the
run (:func:`workdir_lock`): a second run on it stops at once and names the
first; a lock left by a killed run is taken over.

Multi-process runs: every process plans and computes (SPMD); process 0 alone
writes and deletes, and the processes meet at a barrier after each write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from rwsjax import distributed
from rwsjax.report.writers import read_json, write_json

RECORDS = "stages"
LOCK = ".lock"
# How a result is computed, or where its inputs live, not what it is: never a config change.
NOT_RESULT_FIELDS = ("mrc.cache", "mrc.cache_gib", "mrc.threads", "attack.unroll", "eval.unroll", "data.data_dir",
                     "data.manual_dir", "data.download", "corruptions.data_dir", "ood.data_dir", "log", "redo", "preset")


@dataclass(frozen=True)
class Stage:
    """One step of a workflow.

    Attributes:
      name: the name ``--config.redo`` takes (``"mrc"``, ``"cifar10_fog"``).
      depends: config fields or field prefixes (``"at"`` = every ``at.*`` field) the result is a function of.
      outputs: workdir-relative files or directories the stage writes; all exist once it is done.
      compute: ``(ctx, results) -> result``; ``ctx`` is the workflow's context object (built once, only if a
        stage is computed or loaded), ``results[name]`` the result of an earlier stage.
      load: ``ctx -> result`` read back from ``outputs`` when the stage is skipped and a later one needs it
        (None: the stage has no result later stages use).
      inputs: the earlier stages ``compute`` reads; recomputing one of them recomputes this stage.
      partial: resumable state (checkpoints): kept by a killed run, removed by ``redo``.
      stamp: ``config -> {name: value}`` recorded and compared like config fields, for inputs a config field
        only names (e.g. the size and modification time of the file ``config.checkpoint`` points to).
    """
    name: str
    depends: tuple[str, ...]
    outputs: tuple[str, ...]
    compute: Callable[[Any, "Results"], Any]
    load: Callable[[Any], Any] | None = None
    inputs: tuple[str, ...] = ()
    partial: tuple[str, ...] = ()
    stamp: Callable[[Any], dict] | None = None


class StageError(ValueError):
    """The workdir holds results made with another config, is locked by a live run, or ``config.redo`` names
    an unknown stage."""


class Results(Mapping):
    """Results of the stages so far, by name; a skipped stage's result is loaded on first access."""

    def __init__(self, stages: Sequence[Stage], context: Callable[[], Any]):
        self._stages = {s.name: s for s in stages}
        self._context, self._ctx = context, None
        self._values: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}  # wall time of each stage (recorded when it was computed)

    @property
    def ctx(self):
        if self._ctx is None:
            self._ctx = self._context()
        return self._ctx

    def __getitem__(self, name):
        if name not in self._values:
            stage = self._stages[name]
            if stage.load is None:
                raise KeyError(f"stage {name!r} has no result to load")
            self._values[name] = stage.load(self.ctx)
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"at": {"epochs": 2}}`` → ``{"at.epochs": 2}`` (tuples become lists, as JSON stores them)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _covered(key: str, depends: Sequence[str]) -> bool:
    if any(key == f or key.startswith(f + ".") for f in NOT_RESULT_FIELDS):
        return False
    return any(key == d or key.startswith(d + ".") for d in depends)


def fields(config, stage: Stage) -> dict[str, Any]:
    """The config fields ``stage`` depends on, flattened, with their values."""
    flat = flatten(json.loads(config.to_json()))
    out = {k: v for k, v in sorted(flat.items()) if _covered(k, stage.depends)}
    if stage.stamp is not None:
        out.update(stage.stamp(config))
    return out


def _redo_names(config) -> list[str]:
    return [n.strip() for n in (config.get("redo", "") or "").split(",") if n.strip()]


def redo_problems(config, stages: Sequence[Stage]) -> list[str]:
    """Problems with ``config.redo`` (comma-separated stage names; empty: none) — for a workflow's validator."""
    names = _redo_names(config)
    valid = [s.name for s in stages]
    bad = [n for n in names if n not in valid]
    return [f"config.redo names unknown stage(s) {bad}; valid: {valid} (comma separated)"] if bad else []


def _record_path(workdir: str, name: str, started: bool = False) -> str:
    return os.path.join(workdir, RECORDS, f"{name}{'.started' if started else ''}.json")


def _remove(workdir: str, rel: str) -> bool:
    full = os.path.join(workdir, rel)
    if not os.path.lexists(full):
        return False
    shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)
    return True


def _present(workdir: str, paths: Sequence[str]) -> list[str]:
    return [p for p in paths if os.path.lexists(os.path.join(workdir, p))]


def _diff(recorded: dict, current: dict) -> tuple[list[str], list[str]]:
    """(changed ``field: old → new`` lines, fields absent from the record)."""
    changed = [f"{k}: {recorded[k]!r} → {current[k]!r}" for k in sorted(set(recorded) & set(current))
               if recorded[k] != current[k]]
    added = sorted(set(current) - set(recorded))
    return changed, added


def plan(workdir: str, config, stages: Sequence[Stage]) -> dict[str, str]:
    """Apply ``config.redo`` and check every recorded stage against ``config``; nothing is computed.

    Returns:
      ``{stage: status}`` with status ``"done"``, ``"started"`` (partial state only), ``"todo"`` or ``"redo"``.

    Raises:
      StageError: an unknown ``config.redo`` stage; or a done or started stage whose config fields changed —
        one line naming the stage, every ``field: old → new`` and the two ways out
        (``--config.redo=STAGE``, a new ``--workdir``).
    """
    problems = redo_problems(config, stages)
    if problems:
        raise StageError(problems[0])
    redo = _redo_names(config)
    first = min((i for i, s in enumerate(stages) if s.name in redo), default=len(stages))
    legacy_path = os.path.join(workdir, "config.json")
    legacy = None
    status = {}
    for i, stage in enumerate(stages):
        current = fields(config, stage)
        done, started = _record_path(workdir, stage.name), _record_path(workdir, stage.name, started=True)
        if i >= first:
            if distributed.is_main():
                gone = [p for p in (*stage.outputs, *stage.partial) if _remove(workdir, p)]
                for p in (done, started):
                    if os.path.exists(p):
                        os.remove(p)
                if gone:
                    print(f"[stages] redo {stage.name}: removed {', '.join(gone)}")
            status[stage.name] = "redo"
            continue
        record = None
        complete = len(_present(workdir, stage.outputs)) == len(stage.outputs)
        if os.path.exists(done) and complete:
            record, status[stage.name] = read_json(done), "done"
        elif os.path.exists(started):
            record, status[stage.name] = read_json(started), "started"
        elif stage.outputs and complete and os.path.exists(legacy_path):
            # Artifacts of an rwsjax that kept no stage records: their config is the run's config.json.
            legacy = legacy if legacy is not None else flatten(read_json(legacy_path))
            record = {"config": {k: v for k, v in legacy.items() if _covered(k, stage.depends)}, "legacy": True}
            status[stage.name] = "done"
        elif _present(workdir, (*stage.outputs, *stage.partial)):
            status[stage.name] = "started"  # partial state without a record: resumed (nothing to compare)
        else:
            status[stage.name] = "todo"
        if record is None:
            continue
        changed, added = _diff(record["config"], current)
        if changed:
            raise StageError(
                f"stage '{stage.name}' in {workdir} is {status[stage.name]} with a different config "
                f"({'; '.join(changed)}). Recompute it and the stages after it with --config.redo={stage.name}, "
                "or use a new --workdir.")
        if added:
            print(f"[stages] {stage.name}: fields not in its record (newer rwsjax), taken as "
                  + ", ".join(f"{k}={current[k]!r}" for k in added))
        if record.get("legacy") and distributed.is_main():
            write_json(done, {"config": current, "id": uuid.uuid4().hex, "inputs": {}, "seconds": None,
                              "legacy": True})
    distributed.barrier("stages planned")
    return status


def run(workdir: str, config, stages: Sequence[Stage], context: Callable[[], Any], *,
        tag: str = "stages") -> Results:
    """Plan (:func:`plan`), then skip or compute every stage in order, recording each one computed.

    Args:
      workdir: the run's directory (created if missing); ``config.json`` there is rewritten with ``config``
        once the plan is accepted.
      config: the run's ``ml_collections.ConfigDict``.
      stages: the workflow's stages, in order.
      context: builds the object every ``compute``/``load`` receives (called at most once, lazily); its
        ``close()``, if it has one, is called when the run ends.
      tag: prefix of the one line printed per stage.

    Returns:
      :class:`Results`: every computed result, the others loadable (JSON results after the run, too);
      ``results.seconds[name]`` the wall time.

    Raises:
      StageError: see :func:`plan` and :func:`workdir_lock`.
      whatever a stage raises (its record is not written; a started stage keeps its partial state).
    """
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir):
        status = plan(workdir, config, stages)
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
        if distributed.is_main():
            os.makedirs(os.path.join(workdir, RECORDS), exist_ok=True)
        results = Results(stages, context)
        try:
            _run_stages(workdir, config, stages, status, results, tag)
        finally:
            if results._ctx is not None and hasattr(results._ctx, "close"):
                results._ctx.close()
    return results


def _run_stages(workdir, config, stages: Sequence[Stage], status: dict, results: Results, tag: str) -> None:
    """Skip or compute every stage in order (see :func:`run`)."""
    ids: dict[str, str] = {}
    for stage in stages:
        record_file = _record_path(workdir, stage.name)
        inputs = {n: ids.get(n) for n in stage.inputs}
        if status[stage.name] == "done":
            record = read_json(record_file)
            if record.get("legacy") or record.get("inputs", {}) == inputs:
                ids[stage.name] = record["id"]
                results.seconds[stage.name] = record.get("seconds")
                took = "" if record.get("seconds") is None else f" (computed in {record['seconds']:.1f} s)"
                print(f"[{tag}] {stage.name}: done{took}, skipped")
                continue
            stale = [n for n in stage.inputs if record.get("inputs", {}).get(n) != inputs[n]]
            print(f"[{tag}] {stage.name}: {', '.join(stale)} recomputed since: recomputing")
            if distributed.is_main():
                for p in (*stage.outputs, *stage.partial):
                    _remove(workdir, p)
                os.remove(record_file)
            distributed.barrier(f"stale {stage.name}")
        ids[stage.name] = _compute(workdir, config, stage, results, inputs, status[stage.name], tag)


def _compute(workdir, config, stage: Stage, results: Results, inputs: dict, status: str, tag: str) -> str:
    started = _record_path(workdir, stage.name, started=True)
    record = {"config": fields(config, stage), "inputs": inputs}
    write_json(started, record)
    t0 = time.time()
    try:
        value = stage.compute(results.ctx, results)
    except BaseException:
        if distributed.is_main() and not _present(workdir, stage.partial) and os.path.exists(started):
            os.remove(started)  # nothing to resume: leave no record
        raise
    seconds = round(time.time() - t0, 1)
    missing = sorted(set(stage.outputs) - set(_present(workdir, stage.outputs)))
    if missing:
        raise RuntimeError(f"stage {stage.name!r} did not write {missing}")
    record.update(id=uuid.uuid4().hex, seconds=seconds, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    write_json(_record_path(workdir, stage.name), record)
    if distributed.is_main() and os.path.exists(started):
        os.remove(started)
    results._values[stage.name] = value
    results.seconds[stage.name] = seconds
    print(f"[{tag}] {stage.name}: {'resumed and ' if status == 'started' else ''}computed in {seconds:.1f} s")
    return record["id"]


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Hold ``WORKDIR/.lock`` (``flock``) for the duration; released by the kernel when the process dies.

    Only process 0 of a multi-process run takes it.  The file names the holder (pid, host, start time,
    command); a file left by a killed run is taken over with a note.

    Raises:
      StageError: another live process holds the lock (the message names it).
    """
    if not distributed.is_main():
        yield
        return
    path = os.path.join(workdir, LOCK)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise StageError(f"workdir {workdir} is in use by {holder}; wait for that run to finish (or stop it), "
                         "or use another --workdir") from None
    f.seek(0)
    previous = f.read().strip()
    if previous:
        print(f"[stages] taking over {path} from {previous} (no longer running)")
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
            f"({' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]})")
    f.flush()
    try:
        yield
    finally:
        f.seek(0)
        f.truncate()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
