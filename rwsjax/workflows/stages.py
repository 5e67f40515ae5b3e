"""Pipeline stages in a workdir: which are done, what config they were made with, and redoing them.

A stage is *started* when any of its outputs exists (a checkpoint counts) and
*done* when its first output exists; a re-run skips done stages and resumes
started ones.  Before anything runs, :func:`prepare` compares the config of
the run that produced the existing outputs (``WORKDIR/config.json``) with the
new one: if a field a started stage depends on changed, the run stops and
names the fields, instead of silently mixing two experiments.
``--config.redo=STAGE[,STAGE]`` deletes that stage's outputs and those of
every later stage (they were computed from it), so they are recomputed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Sequence

from rwsjax import distributed


@dataclass(frozen=True)
class Stage:
    """``outputs``: workdir-relative paths, the first marks the stage done; ``depends``: config keys or
    key prefixes (``"at"`` = every ``at.*`` field) whose values the outputs were computed with."""
    name: str
    outputs: tuple[str, ...]
    depends: tuple[str, ...]


class StageError(ValueError):
    """The workdir holds outputs made with another config, or ``config.redo`` names an unknown stage."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# How a result is computed, not what it is (identical numbers either way): never a config change.
PERFORMANCE_FIELDS = ("mrc.cache", "mrc.cache_gib", "mrc.threads", "attack.unroll", "eval.unroll")


def _covered(key: str, depends: Sequence[str]) -> bool:
    return key not in PERFORMANCE_FIELDS and any(key == d or key.startswith(d + ".") for d in depends)


def redo_list(config, stages: Sequence[Stage]) -> list[str]:
    """The stage names in ``config.redo`` (comma separated; empty: none).

    Raises:
      StageError: an unknown stage name (lists the valid ones).
    """
    spec = config.get("redo", "") or ""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    valid = [s.name for s in stages]
    bad = [n for n in names if n not in valid]
    if bad:
        raise StageError(f"config.redo names unknown stage(s) {bad}; valid: {valid} (comma separated)")
    return names


def prepare(workdir: str, config, stages: Sequence[Stage]) -> dict[str, str]:
    """Apply ``config.redo`` and check that started stages match the config; returns ``{stage: status}``.

    Status is ``"done"``, ``"started"`` (e.g. training checkpoints only), ``"todo"`` or ``"redo"``.
    In a multi-process run every process checks; process 0 deletes.

    Raises:
      StageError: unknown ``config.redo`` stage, or a started stage's config fields changed (the message
        lists ``field: old → new`` and the two ways out: ``--config.redo=STAGE`` or a new ``--workdir``).
    """
    redo = redo_list(config, stages)
    first = min((i for i, s in enumerate(stages) if s.name in redo), default=len(stages))
    path = os.path.join(workdir, "config.json")
    previous = _flatten(json.load(open(path))) if os.path.exists(path) else None
    current = _flatten(json.loads(config.to_json()))
    status = {}
    for i, stage in enumerate(stages):
        present = [p for p in stage.outputs if os.path.lexists(os.path.join(workdir, p))]
        if i >= first:
            if present and distributed.is_main():
                for p in present:
                    full = os.path.join(workdir, p)
                    shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)
                print(f"[stages] redo {stage.name}: removed {', '.join(present)}")
            status[stage.name] = "redo"
            continue
        if not present:
            status[stage.name] = "todo"
            continue
        status[stage.name] = "done" if present[0] == stage.outputs[0] else "started"
        if previous is None:
            continue
        # Fields a newer rwsjax added (absent from the recorded config) or removed are not changes: their
        # defaults reproduce the older behaviour.  Only fields present in both are compared.
        added = sorted(k for k in set(current) - set(previous) if _covered(k, stage.depends))
        if added:
            print(f"[stages] {stage.name}: fields not in the recorded config (newer rwsjax), taken as "
                  + ", ".join(f"{k}={current[k]!r}" for k in added))
        changed = sorted(k for k in set(previous) & set(current)
                         if _covered(k, stage.depends) and previous[k] != current[k])
        if changed:
            diff = "; ".join(f"{k}: {previous.get(k)!r} → {current.get(k)!r}" for k in changed)
            raise StageError(
                f"stage '{stage.name}' in {workdir} is {status[stage.name]} with a different config ({diff}). "
                f"Recompute it (and the stages after it) with --config.redo={stage.name}, or use a new "
                "--workdir.")
    distributed.barrier("stages prepared")
    return status
