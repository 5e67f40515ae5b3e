"""The packaged experiment configs: ``--config=rift:cpu`` is ``--config=<this folder>/rift.py:cpu``.

Each module has ``get_config(preset) -> ml_collections.ConfigDict`` and
``PRESETS``; its docstring is the experiment section it reproduces and the
command that runs it. A config file path (``--config=my_configs/rift.py:cpu``)
works as well.
"""

from __future__ import annotations

import importlib
import os

__all__ = ["NAMES", "add_autoattack", "describe_presets", "path", "resolve"]

#: The packaged configs (one per workflow), in the order ``--help`` lists them.
NAMES = ("rift", "rws", "evaluate")


def add_autoattack(e) -> None:
    """The AutoAttack fields of an ``eval`` block (shared by the rift, rws and evaluate configs), in place."""
    import ml_collections
    # AutoAttack (Croce & Hein 2020; rwsjax.attacks.autoattack) in the report: none | standard
    # (RobustBench: APGD-CE, APGD-T ×9, FAB-T ×9, Square 5,000) | plus | rand | lite (APGD-CE + APGD-T) |
    # custom (eval.autoattack_attacks).  Standard costs ≈ 100–1,000× PGD-10: off unless asked for.
    e.autoattack = "none"
    e.autoattack_attacks = ""  # custom: comma list of apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square
    # None: the version's own setting (standard: 100 iterations, 9 targets, 1 restart, 5,000 queries).
    e.apgd_iters = ml_collections.FieldReference(None, field_type=int)     # APGD and FAB iterations
    e.apgd_targets = ml_collections.FieldReference(None, field_type=int)   # APGD-T and FAB-T targets
    e.apgd_restarts = ml_collections.FieldReference(None, field_type=int)  # APGD-CE/-DLR and FAB restarts
    e.square_queries = ml_collections.FieldReference(None, field_type=int)
    e.autoattack_size = ml_collections.FieldReference(None, field_type=int)  # None: the whole test split


def path(name: str) -> str:
    """The file of packaged config `name` (``rift`` -> ``.../rwsjax/configs/rift.py``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")


def resolve(spec: str) -> str:
    """``NAME[:PRESET]`` of a packaged config -> ``FILE[:PRESET]``; anything else is returned unchanged.

    Raises:
      ValueError: `spec` names neither a packaged config nor an existing file
        (the message lists the packaged names and presets).
    """
    name, sep, preset = spec.partition(":")
    if name in NAMES:
        return path(name) + sep + preset
    if not os.path.isfile(name):
        raise ValueError(f"--config={spec}: no config file {name!r} and no packaged config of that name; "
                         f"use one of {', '.join(f'{n}:PRESET' for n in NAMES)} (e.g. --config=rift:cpu) "
                         "or the path of a config file")
    return spec


def describe_presets() -> str:
    """One line per packaged config: its name, presets (the default first) and summary."""
    lines = []
    for name in NAMES:
        module = importlib.import_module(f"rwsjax.configs.{name}")
        summary = (module.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<9} {summary}\n  {'':<9} presets: {module.PRESETS[0]} (default), "
                     f"{', '.join(module.PRESETS[1:])}")
    return "\n".join(lines)
