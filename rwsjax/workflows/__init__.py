"""The workflows ``python -m rwsjax.main`` runs, chosen by ``config.workflow``.

Each is a module with ``stages(config)`` (its :class:`~rwsjax.workflows.stages.Stage` list),
``validate(config) -> list[str]`` (problems with its own fields) and ``run(config, workdir)``.
"""

from __future__ import annotations

import importlib

WORKFLOWS = ("rift", "rws", "evaluate")


def get(name: str):
    """The workflow module ``rwsjax.workflows.<name>``.

    Raises:
      ValueError: an unknown name (lists the valid ones).
    """
    if name not in WORKFLOWS:
        raise ValueError(f"unknown config.workflow {name!r}; valid: {WORKFLOWS}")
    return importlib.import_module(f"rwsjax.workflows.{name}")


def validate(config) -> None:
    """Check a config before anything runs: the shared fields, then the workflow's own.

    Raises:
      ConfigError: one message listing every bad field, its value and what is allowed.
    """
    from rwsjax import config_validation
    try:
        workflow = get(config.get("workflow"))
    except ValueError as e:
        config_validation.raise_problems([str(e)])
    config_validation.raise_problems(config_validation.common(config) + workflow.validate(config))
