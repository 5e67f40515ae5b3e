"""Evaluate one saved model on the test split as resumable stages:

    model (``config.checkpoint`` read once, its fingerprint recorded) → test (clean, PGD worst of restarts)
      → ood (corrupted test sets) → autoattack (``eval.autoattack``: AutoAttack, accuracy after each attack)
      → report (``evaluation.json``, ``evaluation.md``)

The stages run on :mod:`rwsjax.workflows.stages`: a second run with the same config skips them, a changed
field (another checkpoint, attack or corruption list) is refused, ``--config.redo=STAGE`` recomputes.
"""

from __future__ import annotations

import datetime
import hashlib
import os

import jax
import numpy as np

from rwsjax.report import tables
from rwsjax.report.writers import read_json, write_json, write_text
from rwsjax.train import checkpoint
from rwsjax.workflows import ood
from rwsjax.workflows import stages as stage_runner
from rwsjax.workflows.common import Task, describe_autoattack, json_artifact, load_model
from rwsjax.workflows.stages import Stage, redo_problems


def fingerprint(variables) -> str:
    """SHA-256 of every array of ``variables`` (path, dtype, shape and bytes, in tree order), hex."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _model(s: Task, r) -> dict:
    """Stage 1: the checkpoint as rwsjax variables in ``model/`` (a copy: later stages and re-runs read it)."""
    variables = load_model(s.config.checkpoint, s.init_variables, s.model)
    checkpoint.save_variables(os.path.join(s.workdir, "model"), variables, info=s.info)
    write_json(os.path.join(s.workdir, "model.json"), {"checkpoint": os.path.abspath(s.config.checkpoint),
                                                       "sha256": fingerprint(variables)})
    return variables


def _test(s: Task, r) -> dict:
    """Stage 2: clean and PGD (worst case over ``eval.restarts``) accuracy on the test split → test.json."""
    out = s.evaluate(s.eval_step(s.config.eval.restarts), r["model"], s.splits["test"], "test")
    write_json(os.path.join(s.workdir, "test.json"), out)
    return out


def _ood(s: Task, r) -> dict:
    """Stage 3: accuracy on every corrupted test set of ``config.ood`` → ood.json (``{}`` when disabled)."""
    if not s.config.ood.enabled:
        write_json(os.path.join(s.workdir, "ood.json"), {})
        return {}
    return ood.evaluate_ood(s, {"model": r["model"]}, os.path.join(s.workdir, "ood.json"))


def _autoattack(s: Task, r) -> dict:
    """Stage 4: AutoAttack (``eval.autoattack``) → autoattack.json (+ autoattack_model.npz; ``{}`` when none)."""
    out = s.autoattack(r["model"], "model") if s.config.eval.autoattack != "none" else {}
    write_json(os.path.join(s.workdir, "autoattack.json"), out)
    return out


def _report(s: Task, r) -> dict:
    """Stage 5: one table of every number → evaluation.json, evaluation.md."""
    c = s.config
    result = dict(r["test"])
    out = r["ood"]
    result["ood_accuracy"] = out["ood_accuracy"]["model"] if out else None
    if out:
        result["ood"] = out["summary"]["model"]
        result["ood_description"] = ood.describe(out, c.data.name)
    header = ["checkpoint", "std acc. (%)", "OOD acc. (%)", f"adv. acc. (%) PGD-{c.eval.steps}×{c.eval.restarts}"]
    row = [c.checkpoint, result["clean_accuracy"], result["ood_accuracy"], result["robust_accuracy"]]
    if r["autoattack"]:
        aa = result["autoattack"] = r["autoattack"]
        header += [f"after {a.upper()} (%)" for a in aa["accuracy_after"]] + [f"AA {aa['version']} (%)", "AA images",
                                                                                 "AA wall s"]
        row += [*aa["accuracy_after"].values(), aa["autoattack_accuracy"], aa["n"], round(aa["seconds"])]
    result.update(checkpoint=os.path.abspath(c.checkpoint), model=c.model.name, dataset=c.data.name,
                  sha256=read_json(os.path.join(s.workdir, "model.json"))["sha256"], timings_s=dict(r.seconds))
    write_json(os.path.join(s.workdir, "evaluation.json"), result)
    table = tables.markdown_table(header, [row])
    notes = [ood.describe(out, c.data.name)] if out else []
    if r["autoattack"]:
        notes.append(describe_autoattack(r["autoattack"]) + "; after X = accuracy after each attack in order.")
    write_text(os.path.join(s.workdir, "evaluation.md"), "\n\n".join([table, *notes]) + "\n")
    print(table)
    return result


def file_stamp(path: str) -> dict:
    """``{"checkpoint.bytes", "checkpoint.modified"}`` of a file, or of every file under a directory (summed size,
    newest modification time): a model rewritten at the same path is not the one evaluated before."""
    files = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    stats = [os.stat(f) for f in files if os.path.exists(f)]
    newest = max((st.st_mtime_ns for st in stats), default=0)
    return {"checkpoint.bytes": sum(st.st_size for st in stats),
            "checkpoint.modified": datetime.datetime.fromtimestamp(newest / 1e9).isoformat(timespec="microseconds")}


_DATA = ("seed", "data", "model", "checkpoint")
_ATTACK = ("eval.norm", "eval.eps", "eval.step_size", "eval.steps", "eval.random_start", "eval.batch_size")
STAGES = (
    Stage("model", ("model", "checkpoint"), ("model", "model.json"), _model,
          lambda s: checkpoint.load_variables(os.path.join(s.workdir, "model"), like=s.init_variables),
          stamp=lambda c: file_stamp(c.checkpoint)),
    Stage("test", (*_DATA, *_ATTACK, "eval.restarts"), ("test.json",), _test, json_artifact("test.json"),
          inputs=("model",)),
    Stage("ood", (*_DATA, "ood", "eval.batch_size"), ("ood.json",), _ood, json_artifact("ood.json"), inputs=("model",)),
    Stage("autoattack", (*_DATA, "eval"), ("autoattack.json",), _autoattack, json_artifact("autoattack.json"),
          inputs=("model",)),
    Stage("report", (*_DATA, "eval", "ood"), ("evaluation.json", "evaluation.md"), _report,
          json_artifact("evaluation.json"), inputs=("model", "test", "ood", "autoattack")),
)


def stages(config) -> tuple[Stage, ...]:
    """The evaluate stages (the same for every config)."""
    return STAGES


def validate(config) -> list[str]:
    """``config.checkpoint`` is required; ``redo`` names evaluate stages."""
    p = []
    if not config.get("checkpoint"):
        p.append("config.checkpoint is empty: pass the model to evaluate, e.g. "
                 "--config.checkpoint=runs/rift_cpu/at/final (an rwsjax variables directory) or a PyTorch "
                 "state_dict (.pt, .pth, .safetensors)")
    return p + redo_problems(config, STAGES)


def adopt_record(config) -> None:
    """Set ``model.name``/``width_multiplier``/``mean``/``std`` and ``data.name`` from the record of an rwsjax
    variables directory (:func:`rwsjax.train.checkpoint.read_info`), so ``--config.checkpoint`` alone names the
    model; a checkpoint without a record (a PyTorch file, an older rwsjax) keeps the configured fields."""
    info = checkpoint.read_info(config.checkpoint) if os.path.isdir(config.checkpoint) else None
    if info is None:
        return
    wanted = {"model.name": info["architecture"], "model.width_multiplier": info["width_multiplier"],
              "model.mean": tuple(info["mean"]), "model.std": tuple(info["std"]), "data.name": info["dataset"]}
    changed = []
    for field, value in wanted.items():
        block, key = field.split(".")
        current = config[block][key]
        if (tuple(current) if isinstance(current, (list, tuple)) else current) != value:
            changed.append(f"{field}={value!r}")
            config[block][key] = value
    print(f"[evaluate] {config.checkpoint}: {info['architecture']} ×{info['width_multiplier']:g} on "
          f"{info['dataset']} (its record)" + (f"; set {', '.join(changed)}" if changed else ""))


def run(config, workdir: str) -> dict:
    """Evaluate ``config.checkpoint``; writes ``evaluation.json`` / ``evaluation.md`` in ``workdir``.

    Returns:
      ``{"clean_accuracy", "robust_accuracy", "ood_accuracy", "autoattack"?: %, "n", "checkpoint", "sha256",
      ...}``.

    Raises:
      ValueError: ``config.checkpoint`` is not a completed Orbax checkpoint nor a PyTorch state_dict file, or
        does not fit the configured model (see :func:`rwsjax.workflows.common.load_model`).
      StageError: see :func:`rwsjax.workflows.stages.run`.
    """
    from rwsjax.config_validation import resolve_defaults
    resolve_defaults(config)  # idempotent (main has run it): robustbench:NAME → its file and architecture
    path = config.checkpoint
    if not path or not (checkpoint.exists(path) or os.path.isfile(path)):
        raise ValueError(f"config.checkpoint={path!r} is not a saved model; pass an rwsjax variables directory "
                         "such as --config.checkpoint=runs/rift_cpu/at/final, or a PyTorch state_dict "
                         "(.pt, .pth, .safetensors)")
    adopt_record(config)
    return stage_runner.run(workdir, config, STAGES, lambda: Task(config, workdir), tag="evaluate")["report"]
