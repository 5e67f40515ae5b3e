"""RobustBench models by name: ``robustbench:NAME`` as a checkpoint, read from RobustBench's model directory.

    python -m rwsjax.main --config=configs/evaluate.py:cpu --workdir=runs/eval_carmon \
        --config.checkpoint=robustbench:Carmon2019Unlabeled --config.model_dir=models \
        --config.eval.autoattack=standard

``robustbench:NAME`` is the ℓ∞ model ``NAME``; ``robustbench:L2/NAME`` and ``robustbench:corruptions/NAME`` the
other threat models; the dataset is the run's ``data.name`` (``cifar10``, ``cifar100``). The file is where
RobustBench's ``load_model(NAME, model_dir, dataset, threat_model)`` keeps it:
``MODEL_DIR/<dataset>/<threat>/NAME.pt`` (default ``MODEL_DIR`` ``./models``, as RobustBench's), read with
:mod:`rwsjax.models.pytorch_io` (``state_dict`` containers, ``module.``/``model.`` prefixes, TRADES'
``sub_block1`` dropped). The architecture and input normalization come from :data:`MODELS`, which covers
RobustBench's CIFAR-10/100 entries whose network is a plain CNN (RobustBench 1.1.1 ``model_zoo/cifar10.py``,
``cifar100.py``): the TRADES WideResNets (``WideResNet``, any depth/width, inputs unnormalized), the DeepMind
WideResNets and PreAct ResNet-18 with Swish/SiLU (``DMWideResNet``, ``DMPreActResNet``, RobustBench's
mean/std), Wong2020Fast's PreAct ResNet-18 (shortcut from the block input, no final BN), Rice2020Overfitting,
Engstrom2019Robustness (ResNet-50), Hendrycks2020AugMix (WRN-40-2). ``tests/test_robustbench.py`` checks every
entry against the ``robustbench`` package's own table and its architectures' logits.
"""

from __future__ import annotations

import os

from rwsjax.models.registry import create_model

#: RobustBench's input normalizations (``(mean, std)``, [0, 1] pixel scale).
NONE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
C10 = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
C100 = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
C100_RICE = ((0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
             (0.2673342858792401, 0.2564384629170883, 0.27615047132568404))
ENGSTROM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

#: RobustBench's threat models (its directory names).
THREATS = ("Linf", "L2", "corruptions")

#: RobustBench's default model directory (``load_model(model_dir="./models")``).
MODEL_DIR = "models"

#: ``{(dataset, threat): {RobustBench name: (rwsjax architecture, (mean, std))}}``.
MODELS: dict[tuple[str, str], dict[str, tuple[str, tuple]]] = {
    ("cifar10", "Linf"): {
        "Andriushchenko2020Understanding": ("preact_resnet18_rb", NONE),
        "Carmon2019Unlabeled": ("wrn28_10", NONE),
        "Sehwag2020Hydra": ("wrn28_10", NONE),
        "Wang2020Improving": ("wrn28_10", NONE),
        "Rice2020Overfitting": ("wrn34_20", C10),
        "Zhang2019Theoretically": ("wrn34_10", NONE),
        "Engstrom2019Robustness": ("resnet50", ENGSTROM),
        "Huang2020Self": ("wrn34_10", NONE),
        "Wong2020Fast": ("preact_resnet18_rb", C10),
        "Zhang2019You": ("wrn34_10", NONE),
        "Zhang2020Attacks": ("wrn34_10", NONE),
        "Wu2020Adversarial_extra": ("wrn28_10", NONE),
        "Wu2020Adversarial": ("wrn34_10", NONE),
        "Gowal2020Uncovering_70_16": ("dm_wrn70_16_swish", C10),
        "Gowal2020Uncovering_70_16_extra": ("dm_wrn70_16_swish", C10),
        "Gowal2020Uncovering_34_20": ("dm_wrn34_20_swish", C10),
        "Gowal2020Uncovering_28_10_extra": ("dm_wrn28_10_swish", C10),
        "Sitawarin2020Improving": ("wrn34_10", NONE),
        "Cui2020Learnable_34_20": ("wrn34_20", NONE),
        "Cui2020Learnable_34_10": ("wrn34_10", NONE),
        "Zhang2020Geometry": ("wrn28_10", NONE),
        "Rebuffi2021Fixing_28_10_cutmix_ddpm": ("dm_wrn28_10_swish", C10),
        "Rebuffi2021Fixing_106_16_cutmix_ddpm": ("dm_wrn106_16_swish", C10),
        "Rebuffi2021Fixing_70_16_cutmix_ddpm": ("dm_wrn70_16_swish", C10),
        "Rebuffi2021Fixing_70_16_cutmix_extra": ("dm_wrn70_16_swish", C10),
        "Sridhar2021Robust": ("wrn28_10", NONE),
        "Sridhar2021Robust_34_15": ("wrn34_15", NONE),
        "Rebuffi2021Fixing_R18_ddpm": ("dm_preact_resnet18_swish", C10),
        "Rade2021Helper_R18_extra": ("dm_preact_resnet18_swish", C10),
        "Rade2021Helper_R18_ddpm": ("dm_preact_resnet18_swish", C10),
        "Rade2021Helper_extra": ("dm_wrn34_10_swish", C10),
        "Rade2021Helper_ddpm": ("dm_wrn28_10_swish", C10),
        "Gowal2021Improving_70_16_ddpm_100m": ("dm_wrn70_16_swish", C10),
        "Gowal2021Improving_28_10_ddpm_100m": ("dm_wrn28_10_swish", C10),
        "Gowal2021Improving_R18_ddpm_100m": ("dm_preact_resnet18_swish", C10),
        "Chen2021LTD_WRN34_10": ("wrn34_10", NONE),
        "Chen2021LTD_WRN34_20": ("wrn34_20", NONE),
        "Standard": ("wrn28_10", NONE),
        "Jia2022LAS-AT_34_10": ("wrn34_10", NONE),
        "Jia2022LAS-AT_70_16": ("wrn70_16", NONE),
        "Pang2022Robustness_WRN28_10": ("dm_wrn28_10_swish", C10),
        "Pang2022Robustness_WRN70_16": ("dm_wrn70_16_swish", C10),
        "Addepalli2022Efficient_WRN_34_10": ("wrn34_10", NONE),
        "Wang2023Better_WRN-28-10": ("dm_wrn28_10_swish", C10),
        "Wang2023Better_WRN-70-16": ("dm_wrn70_16_swish", C10),
        "Xu2023Exploring_WRN-28-10": ("dm_wrn28_10_swish", C10),
        "Cui2023Decoupled_WRN-28-10": ("dm_wrn28_10_swish", C10),
        "Cui2023Decoupled_WRN-34-10": ("wrn34_10", NONE),
        "Chen2024Data_WRN_34_10": ("wrn34_10", NONE),
        "Chen2024Data_WRN_34_20": ("wrn34_20", NONE),
        "Bartoldson2024Adversarial_WRN-94-16": ("dm_wrn94_16_swish", C10),
        "Bartoldson2024Adversarial_WRN-82-8": ("dm_wrn82_8_swish", C10),
    },
    ("cifar10", "L2"): {
        "Engstrom2019Robustness": ("resnet50", ENGSTROM),
        "Rice2020Overfitting": ("preact_resnet18", C10),
        "Standard": ("wrn28_10", NONE),
        "Wu2020Adversarial": ("wrn34_10", NONE),
        "Gowal2020Uncovering": ("dm_wrn70_16_swish", C10),
        "Gowal2020Uncovering_extra": ("dm_wrn70_16_swish", C10),
        "Rebuffi2021Fixing_70_16_cutmix_ddpm": ("dm_wrn70_16_swish", C10),
        "Rebuffi2021Fixing_28_10_cutmix_ddpm": ("dm_wrn28_10_swish", C10),
        "Rebuffi2021Fixing_70_16_cutmix_extra": ("dm_wrn70_16_swish", C10),
        "Rebuffi2021Fixing_R18_cutmix_ddpm": ("dm_preact_resnet18_swish", C10),
        "Rade2021Helper_R18_ddpm": ("dm_preact_resnet18_swish", C10),
        "Wang2023Better_WRN-28-10": ("dm_wrn28_10_swish", C10),
        "Wang2023Better_WRN-70-16": ("dm_wrn70_16_swish", C10),
    },
    ("cifar10", "corruptions"): {
        "Rebuffi2021Fixing_70_16_cutmix_extra_Linf": ("dm_wrn70_16_swish", C10),
        "Rebuffi2021Fixing_70_16_cutmix_extra_L2": ("dm_wrn70_16_swish", C10),
        "Hendrycks2020AugMix_WRN": ("wrn40_2", HALF),
        "Standard": ("wrn28_10", NONE),
        "Addepalli2022Efficient_WRN_34_10": ("wrn34_10", NONE),
    },
    ("cifar100", "Linf"): {
        "Gowal2020Uncovering": ("dm_wrn70_16_swish", C100),
        "Gowal2020Uncovering_extra": ("dm_wrn70_16_swish", C100),
        "Cui2020Learnable_34_20_LBGAT6": ("wrn34_20", NONE),
        "Cui2020Learnable_34_10_LBGAT0": ("wrn34_10", NONE),
        "Cui2020Learnable_34_10_LBGAT6": ("wrn34_10", NONE),
        "Sehwag2021Proxy": ("wrn34_10", NONE),
        "Sitawarin2020Improving": ("wrn34_10", NONE),
        "Rice2020Overfitting": ("preact_resnet18", C100_RICE),
        "Rebuffi2021Fixing_70_16_cutmix_ddpm": ("dm_wrn70_16_swish", C100),
        "Rebuffi2021Fixing_28_10_cutmix_ddpm": ("dm_wrn28_10_swish", C100),
        "Rebuffi2021Fixing_R18_ddpm": ("dm_preact_resnet18_swish", C100),
        "Rade2021Helper_R18_ddpm": ("dm_preact_resnet18_swish", C100),
        "Chen2021LTD_WRN34_10": ("wrn34_10", NONE),
        "Pang2022Robustness_WRN28_10": ("dm_wrn28_10_swish", C100),
        "Pang2022Robustness_WRN70_16": ("dm_wrn70_16_swish", C100),
        "Jia2022LAS-AT_34_10": ("wrn34_10", NONE),
        "Jia2022LAS-AT_34_20": ("wrn34_20", NONE),
        "Addepalli2022Efficient_WRN_34_10": ("wrn34_10", NONE),
        "Cui2020Learnable_34_10_LBGAT9_eps_8_255": ("wrn34_10", NONE),
        "Wang2023Better_WRN-28-10": ("dm_wrn28_10_swish", C100),
        "Wang2023Better_WRN-70-16": ("dm_wrn70_16_swish", C100),
        "Cui2023Decoupled_WRN-28-10": ("dm_wrn28_10_swish", C100),
        "Cui2023Decoupled_WRN-34-10": ("wrn34_10", NONE),
        "Cui2023Decoupled_WRN-34-10_autoaug": ("wrn34_10", NONE),
        "Chen2024Data_WRN_34_10": ("wrn34_10", NONE),
    },
    ("cifar100", "corruptions"): {
        "Gowal2020Uncovering_Linf": ("dm_wrn70_16_swish", C100),
        "Gowal2020Uncovering_extra_Linf": ("dm_wrn70_16_swish", C100),
        "Hendrycks2020AugMix_WRN": ("wrn40_2", HALF),
        "Addepalli2022Efficient_WRN_34_10": ("wrn34_10", NONE),
    },
}

PREFIX = "robustbench:"


class RobustBenchError(ValueError):
    """An unknown RobustBench name, threat model or dataset, or its file missing (one line, with the fix)."""


def is_spec(path) -> bool:
    """Whether a checkpoint field names a RobustBench model (``robustbench:...``)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str]:
    """``"robustbench:[THREAT/]NAME"`` → ``(threat, name)`` (threat ``Linf`` when not given).

    Raises:
      RobustBenchError: an unknown threat model or an empty name.
    """
    rest = spec[len(PREFIX):]
    threat, _, name = rest.rpartition("/")
    threat = threat or "Linf"
    if threat not in THREATS or not name:
        raise RobustBenchError(f"{spec!r}: give robustbench:NAME (ℓ∞) or robustbench:THREAT/NAME with THREAT one of "
                               f"{', '.join(THREATS)}, e.g. robustbench:Carmon2019Unlabeled")
    return threat, name


def entry(spec: str, dataset: str) -> tuple[str, tuple, tuple]:
    """``(architecture, mean, std)`` of a RobustBench model on ``dataset``.

    Raises:
      RobustBenchError: the name is not in :data:`MODELS` for that dataset and threat (the message lists the
        close names, or says which datasets have it).
    """
    threat, name = parse(spec)
    table = MODELS.get((dataset, threat), {})
    if name in table:
        arch, (mean, std) = table[name]
        return arch, mean, std
    elsewhere = [f"{d}/{t}" for (d, t), names in MODELS.items() if name in names]
    if elsewhere:
        raise RobustBenchError(f"{spec!r} is a RobustBench model of {', '.join(elsewhere)}, not of {dataset}/{threat}: "
                               "set --config.data.name (and the threat as robustbench:THREAT/NAME) to match")
    import difflib
    close = difflib.get_close_matches(name, list(table), n=5, cutoff=0.5)
    raise RobustBenchError(f"{spec!r}: no plain-CNN RobustBench model of that name for {dataset}/{threat}"
                           + (f"; close: {', '.join(close)}" if close else f"; known: {len(table)} names, e.g. "
                              f"{', '.join(list(table)[:4])}") + " (rwsjax.models.robustbench.MODELS lists them)")


def normalization_of(path: str) -> tuple[tuple, tuple] | None:
    """``(mean, std)`` from :data:`MODELS` when ``path`` is a RobustBench file ``…/<dataset>/<threat>/NAME.pt``
    of a listed model (its file holds weights only: the table states the input normalization), else None."""
    parts = os.path.normpath(str(path)).split(os.sep)
    if len(parts) < 3 or not parts[-1].endswith(".pt"):
        return None
    entry_ = MODELS.get((parts[-3], parts[-2]), {}).get(parts[-1][:-3])
    return None if entry_ is None else entry_[1]


def checkpoint_file(spec: str, dataset: str, model_dir: str | None = None) -> str:
    """The file RobustBench keeps the model in: ``MODEL_DIR/<dataset>/<threat>/NAME.pt``.

    Raises:
      RobustBenchError: unknown name (:func:`entry`), or the file is missing (the message gives the path and the
        RobustBench call that downloads it there).
    """
    entry(spec, dataset)
    threat, name = parse(spec)
    model_dir = model_dir or MODEL_DIR
    path = os.path.join(model_dir, dataset, threat, f"{name}.pt")
    if not os.path.isfile(path):
        raise RobustBenchError(
            f"{spec}: {path} does not exist; RobustBench downloads it there with: python -c \"from robustbench.utils "
            f"import load_model; load_model('{name}', model_dir='{model_dir}', dataset='{dataset}', "
            f"threat_model='{threat}')\" (pip install robustbench), or copy the file there, or set "
            "--config.model_dir to the folder that has <dataset>/<threat>/NAME.pt")
    return path


def create(spec: str, dataset: str, num_classes: int, dtype=None):
    """The rwsjax Flax model of a RobustBench name (see :func:`entry`), ``[B, 32, 32, 3]`` in [0, 1] → logits."""
    arch, mean, std = entry(spec, dataset)
    kw = {} if dtype is None else {"dtype": dtype}
    return create_model(arch, num_classes=num_classes, mean=mean, std=std, **kw)
