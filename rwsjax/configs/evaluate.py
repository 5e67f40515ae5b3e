"""Evaluate a saved model: clean, PGD-10 (worst of 3 restarts) and OOD (CIFAR-10-C) test accuracy.

    rwsjax run --config=evaluate:cpu --workdir=runs/eval \
        --config.checkpoint=runs/rift_cpu/at/final

The model, data and attack blocks are those of the rift config with the
same preset (so a checkpoint of a ``cpu`` run is evaluated with ``:cpu``);
the checkpoint is an Orbax directory of ``{"params", "batch_stats"}`` such as
``WORKDIR/at/final`` or ``WORKDIR/ft/final``, or a PyTorch ``state_dict`` file
(``.pt``/``.pth``/``.safetensors``) of the configured architecture.
"""

import ml_collections

from rwsjax.configs import rift

PRESETS = rift.PRESETS


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
    c = rift.get_config(preset)
    c.workflow = "evaluate"
    # Stages model, test, ood, autoattack, report are skipped when done; --config.redo=test recomputes test and later.
    del c["init_checkpoint"]
    c.checkpoint = ""                # required: an rwsjax (Orbax) variables directory or a PyTorch state_dict
    for block in ("at", "mrc", "ft", "interp"):  # training/selection settings play no part here
        del c[block]
    c.at = ml_collections.ConfigDict({"val_robust_size": 0})
    return c
