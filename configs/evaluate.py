"""Evaluate a saved model: clean, PGD-10 (worst of 3 restarts) and OOD (CIFAR-10-C) test accuracy.

    python -m rwsjax.main --config=configs/evaluate.py:cpu --workdir=runs/eval \
        --config.checkpoint=runs/rift_cpu/at/final

The model, data and attack blocks are those of ``configs/rift.py`` with the
same preset (so a checkpoint of a ``cpu`` run is evaluated with ``:cpu``);
the checkpoint is an Orbax directory of ``{"params", "batch_stats"}`` such as
``WORKDIR/at/final`` or ``WORKDIR/ft/final``, or a PyTorch ``state_dict`` file
(``.pt``/``.pth``/``.safetensors``) of the configured architecture.
"""

import importlib.util
import os

import ml_collections


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("rwsjax_rift_config", os.path.join(os.path.dirname(__file__),
                                                                                   "rift.py"))
    rift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rift)
    c = rift.get_config(preset)
    c.workflow = "evaluate"
    # Stages model, test, ood, autoattack, report are skipped when done; --config.redo=test recomputes test and later.
    del c["init_checkpoint"]
    c.checkpoint = ""                # required: an rwsjax (Orbax) variables directory or a PyTorch state_dict
    for block in ("at", "mrc", "ft", "interp"):  # training/selection settings play no part here
        del c[block]
    c.at = ml_collections.ConfigDict({"val_robust_size": 0})
    return c
