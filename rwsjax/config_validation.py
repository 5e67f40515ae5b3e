"""Up-front config validation: every problem in one message, before any data is read or model trained.

The fields every workflow shares are checked here (:func:`common`); each workflow checks its own
(``rwsjax.workflows.<name>.validate``), and :func:`rwsjax.workflows.validate` joins the two.
"""

from __future__ import annotations

import os

import jax

from rwsjax.attacks.pgd import NORMS
from rwsjax.data.sources import DATASETS
from rwsjax.models.registry import is_model, valid_names


class ConfigError(ValueError):
    """The config cannot run; the message lists every problem found and the valid choices."""


def get(config, dotted: str):
    """``config.a.b`` for ``"a.b"``, or None when a block or field is absent."""
    node = config
    for part in dotted.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def choice(problems: list[str], config, field: str, valid) -> None:
    """Append a problem when ``field`` is set to a value outside ``valid`` (listed sorted)."""
    value = get(config, field)
    if value is not None and value not in valid:
        problems.append(f"config.{field}={value!r} is not one of {sorted(valid)}")


def at_least(problems: list[str], config, field: str, low, strict: bool = False) -> None:
    """Append a problem when ``field`` is set and below ``low`` (``strict``: not above it)."""
    value = get(config, field)
    if value is not None and (value <= low if strict else value < low):
        problems.append(f"config.{field}={value!r} must be {'>' if strict else '≥'} {low}")


def common(config) -> list[str]:
    """Problems with the fields every workflow shares (``data``, ``model``, ``attack``/``eval``, ``ood``,
    checkpoints, batch sizes), one line each with the valid choices."""
    from rwsjax.workflows.ood import SOURCES, SUMMARIES, corruption_list

    problems: list[str] = []
    for field in ("data.name", "pre.dataset", "transfer.dataset"):
        choice(problems, config, field, DATASETS)
    name = get(config, "model.name")
    if name is not None and not is_model(name):
        problems.append(f"config.model.name={name!r} is not one of {valid_names()}")
    at_least(problems, config, "model.width_multiplier", 0, strict=True)
    for field, example in (("model.mean", "0,0,0"), ("model.std", "1,1,1")):
        value = get(config, field)
        if value is not None and (len(value) != 3 or (field == "model.std" and min(value) <= 0)):
            problems.append(f"config.{field}={tuple(value)} must be 3 per-channel values in [0, 1] pixel scale"
                            f"{' (all > 0)' if field == 'model.std' else ''}, e.g. --config.{field}={example}")
    from rwsjax.models import robustbench
    from rwsjax.train.checkpoint import CheckpointError, checkpoint_path
    for field in ("init_checkpoint", "checkpoint"):
        path = get(config, field)
        if robustbench.is_spec(path):
            try:
                robustbench.checkpoint_file(path, _checkpoint_dataset(config, field), get(config, "model_dir"))
            except robustbench.RobustBenchError as e:
                problems.append(f"config.{field}: {e}")
            continue
        try:
            path = checkpoint_path(path)
        except CheckpointError as e:
            problems.append(f"config.{field}: {e}")
            continue
        if path and not os.path.exists(path):
            problems.append(f"config.{field}={path!r} does not exist: give an rwsjax variables directory "
                            "(WORKDIR/at/final) or a PyTorch state_dict file (.pt, .pth, .safetensors)")
    from rwsjax.protocols import PROTOCOLS
    choice(problems, config, "protocol", PROTOCOLS)
    if get(config, "log.wandb"):
        import importlib.util
        if importlib.util.find_spec("wandb") is None:
            problems.append("config.log.wandb=True needs the wandb package: pip install wandb (or leave it False)")
    manual = get(config, "data.manual_dir")
    if manual and not os.path.exists(manual):
        problems.append(f"config.data.manual_dir={manual!r} does not exist: give the downloaded archive "
                        "(cifar-10-python.tar.gz, cifar-100-python.tar.gz, tiny-imagenet-200.zip) or its folder")
    for block in ("attack", "eval"):
        choice(problems, config, f"{block}.norm", NORMS)
        at_least(problems, config, f"{block}.eps", 0)
        at_least(problems, config, f"{block}.step_size", 0, strict=True)
        at_least(problems, config, f"{block}.steps", 0)
    at_least(problems, config, "eval.restarts", 1)
    from rwsjax.attacks.autoattack import ATTACKS, CONFIG_VERSIONS
    choice(problems, config, "eval.autoattack", CONFIG_VERSIONS)
    if get(config, "eval.autoattack") == "custom":
        listed = [a.strip() for a in str(get(config, "eval.autoattack_attacks") or "").split(",") if a.strip()]
        if not listed or any(a not in ATTACKS for a in listed):
            problems.append(f"config.eval.autoattack_attacks={get(config, 'eval.autoattack_attacks')!r} must be a comma "
                            f"list of {', '.join(ATTACKS)} (eval.autoattack=custom)")
    for field in ("apgd_iters", "apgd_targets", "apgd_restarts", "square_queries"):
        at_least(problems, config, f"eval.{field}", 1)
    at_least(problems, config, "eval.autoattack_size", 1)
    if get(config, "ood.enabled"):
        choice(problems, config, "ood.summary", SUMMARIES)
        choice(problems, config, "ood.source", SOURCES)
        if any(int(s) not in range(1, 6) for s in (get(config, "ood.severities") or ())):
            problems.append(f"config.ood.severities={tuple(get(config, 'ood.severities'))} must be in 1..5")
        try:
            corruption_list(get(config, "ood.corruptions"), "ood.corruptions")
        except ValueError as e:
            problems.append(str(e))
    n = jax.device_count()
    for block in ("at", "ft", "pre", "finetune", "eval"):
        bs = get(config, f"{block}.batch_size")
        if bs is not None and (bs < 1 or bs % n):
            problems.append(f"config.{block}.batch_size={bs} must be a positive multiple of the {n} device(s)")
    return problems


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`ConfigError` naming every problem on one line (nothing when the list is empty)."""
    if len(problems) == 1:
        raise ConfigError(f"invalid config: {problems[0]}")
    if problems:
        raise ConfigError(f"invalid config ({len(problems)} problems): " + "; ".join(problems))


def _checkpoint_dataset(config, field: str) -> str:
    """The dataset a checkpoint field's model was trained on: RWS's θ_pre (``init_checkpoint``) on
    ``pre.dataset``, every other on ``data.name``."""
    if field == "init_checkpoint" and get(config, "pre.dataset"):
        return get(config, "pre.dataset")
    return get(config, "data.name")


def adopt_robustbench(config) -> None:
    """``robustbench:NAME`` in ``checkpoint``/``init_checkpoint`` → that file (``model_dir/<dataset>/<threat>/
    NAME.pt``), and ``model.name``/``width_multiplier``/``mean``/``std`` set to its architecture
    (:mod:`rwsjax.models.robustbench`), in place; printed.  Idempotent (the field then holds the file)."""
    from rwsjax.models import robustbench
    for field in ("init_checkpoint", "checkpoint"):
        spec = config.get(field)
        if not robustbench.is_spec(spec):
            continue
        dataset = _checkpoint_dataset(config, field)
        arch, mean, std = robustbench.entry(spec, dataset)
        path = robustbench.checkpoint_file(spec, dataset, config.get("model_dir"))
        config.model.name, config.model.width_multiplier = arch, 1.0
        config.model.mean, config.model.std = tuple(mean), tuple(std)
        config[field] = path
        print(f"[robustbench] {spec}: {arch}, mean={tuple(mean)}, std={tuple(std)}, from {path}")


def resolve_defaults(config) -> None:
    """Fill the fields whose default depends on another field, in place (after validation).

    ``robustbench:NAME`` checkpoints → their file and architecture (:func:`adopt_robustbench`);
    ``at.beta`` None → the regime's paper β (TRADES 6, MART 6, SCORE 4; unused by PGD-AT);
    ``at.lr_schedule`` None → the regime's (cyclic for FGSM-RS, piecewise otherwise);
    ``at.awp_gamma`` / ``at.awp_warmup`` None → the AWP paper's γ and warm-up epochs for the regime
    (:data:`rwsjax.train.regimes.REGIMES`); the fields of :mod:`rwsjax.protocols` None → the value of
    ``config.protocol``.  The resolved values are what stage records compare.
    """
    from rwsjax import protocols
    from rwsjax.train import regimes
    adopt_robustbench(config)
    protocols.resolve(config)
    at = config.get("at")
    if at is None or "regime" not in at:
        return
    regime = regimes.get(at.regime)
    if "lr_schedule" in at and at.lr_schedule is None:
        at.lr_schedule = regime.lr_schedule
    if "beta" in at and at.beta is None:
        at.beta = regime.default_beta  # None: the regime has no β
    if "awp" in at:
        if at.awp_gamma is None:
            at.awp_gamma = regime.awp_gamma
        if at.awp_warmup is None:
            at.awp_warmup = regime.awp_warmup
