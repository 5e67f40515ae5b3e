"""The run's metric log: TensorBoard (tensorboardX, no TensorFlow) and, optionally, Weights & Biases.

One writer per run (``WORKDIR/tensorboard``), opened on process 0 only:

* scalars ``STAGE/NAME`` against that stage's step: ``at/train_loss``,
  ``at/train_accuracy``, ``at/val_clean_accuracy``, ``at/val_robust_accuracy``,
  ``at/learning_rate`` (and the same for ``ft`` and each RWS zoo model);
  accuracies are in % everywhere;
* the config as hyperparameters (the HParams tab) and as text.

``--config.log.wandb=True`` also sends every scalar and the config to Weights
& Biases (needs ``pip install wandb``; project ``log.wandb_project``, run name
= the workdir's name, resumed with the workdir).
"""

from __future__ import annotations

import hashlib
import json
import os

__all__ = ["MetricWriter", "flat_config"]


def flat_config(config) -> dict:
    """``{"at.epochs": 110, ...}``: the config's leaves, tuples as text (what HParams and W&B take)."""
    out = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node if isinstance(node, (bool, int, float, str)) else json.dumps(node)
    walk("", json.loads(config.to_json()))
    return out


class MetricWriter:
    """Scalars to TensorBoard and (optionally) W&B.

    Args:
      workdir: the run's directory (TensorBoard writes ``workdir/tensorboard``).
      config: the run's ConfigDict (logged as hyperparameters).
      tensorboard: log to TensorBoard.
      wandb: log to Weights & Biases.
      wandb_project: its project name.

    Raises:
      ImportError: `wandb` without the ``wandb`` package (the config validator reports it first).
    """

    def __init__(self, workdir: str, config, *, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "rwsjax"):
        hparams = flat_config(config)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            self._tb.add_text("config", "```\n" + config.to_json(indent=2) + "\n```")
            self._tb.add_hparams(hparams, {}, name="hparams")
        self._wandb, self._prefixes = None, set()
        if wandb:
            import wandb as wandb_module

            run_id = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:16]
            self._wandb = wandb_module.init(project=wandb_project, name=os.path.basename(os.path.abspath(workdir)),
                                            id=run_id, resume="allow", dir=workdir, config=hparams)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Logs ``{"STAGE/NAME": value}`` at ``step`` of that stage."""
        for tag, value in values.items() if self._tb is not None else ():
            self._tb.add_scalar(tag, float(value), int(step))
        if self._wandb is not None:
            by_stage: dict[str, dict] = {}
            for tag, value in values.items():
                by_stage.setdefault(tag.split("/", 1)[0], {})[tag] = float(value)
            for prefix, logged in by_stage.items():
                if prefix not in self._prefixes:
                    self._wandb.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
                    self._prefixes.add(prefix)
                self._wandb.log({**logged, f"{prefix}/step": int(step)})

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
