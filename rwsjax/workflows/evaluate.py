"""Evaluate one saved model on the test split: clean, PGD (worst of restarts), OOD and (``eval.autoattack``)
AutoAttack-lite accuracy per attack and combined."""

from __future__ import annotations

import os

from rwsjax.report import tables
from rwsjax.report.writers import write_json, write_text
from rwsjax.train import checkpoint
from rwsjax.workflows import ood
from rwsjax.workflows.common import Setup, load_model


def run(config, workdir: str) -> dict:
    """Load ``config.checkpoint`` and write ``evaluation.json`` / ``evaluation.md`` in ``workdir``.

    Raises:
      ValueError: ``config.checkpoint`` is empty, not a completed Orbax checkpoint nor a PyTorch state_dict
        file, or does not fit the configured model (see :func:`rwsjax.workflows.common.load_model`).
    """
    path = config.checkpoint
    if not path or not (checkpoint.exists(path) or os.path.isfile(path)):
        raise ValueError(f"config.checkpoint={path!r} is not a saved model; pass an rwsjax variables directory "
                         "such as --config.checkpoint=runs/rift_cpu/at/final, or a PyTorch state_dict "
                         "(.pt, .pth, .safetensors)")
    s = Setup(config, workdir)
    variables = load_model(path, s.init_variables, s.model)
    result = s.evaluate(s.eval_step(config.eval.restarts), variables, s.splits["test"], "test")
    result["ood_accuracy"] = None
    if config.ood.enabled:
        out = ood.evaluate_ood(s, {"model": variables}, os.path.join(workdir, "ood.json"))
        result["ood_accuracy"] = out["ood_accuracy"]["model"]
        result["ood"] = out["summary"]["model"]
    header = ["checkpoint", "std acc. (%)", "OOD acc. (%)",
              f"adv. acc. (%) PGD-{config.eval.steps}×{config.eval.restarts}"]
    row = [config.checkpoint, result["clean_accuracy"], result["ood_accuracy"], result["robust_accuracy"]]
    if config.eval.autoattack:
        aa = result["autoattack"] = s.autoattack(variables, "AutoAttack-lite")
        it = config.eval.apgd_iters
        header += [f"APGD-CE-{it} (%)", f"APGD-T-{it}×{config.eval.apgd_targets} (%)", "AA-lite (%)", "AA images"]
        row += [aa["apgd_ce_accuracy"], aa.get("apgd_t_accuracy"), aa["autoattack_accuracy"], aa["n"]]
    result.update(checkpoint=os.path.abspath(config.checkpoint), model=config.model.name, dataset=config.data.name)
    write_json(os.path.join(workdir, "evaluation.json"), result)
    table = tables.markdown_table(header, [row])
    write_text(os.path.join(workdir, "evaluation.md"), table)
    print(table)
    return result
