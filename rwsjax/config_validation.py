"""Up-front config validation: every problem in one message, before any data is read or model trained."""

from __future__ import annotations

import os

import jax

from rwsjax.attacks.pgd import NORMS
from rwsjax.data.sources import DATASETS
from rwsjax.models.registry import MODELS


class ConfigError(ValueError):
    """The config cannot run; the message lists every problem found and the valid choices."""


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def validate(config) -> None:
    """Check names, ranges and batch/device divisibility of a RiFT, RWS or evaluate config.

    Raises:
      ConfigError: one message listing each bad field, its value and what is allowed.
    """
    from rwsjax.rift.finetune import STRATEGIES
    from rwsjax.rift.mrc import PROJECT_EVERY
    from rwsjax.train.steps import ATTACK_BN_MODES, BN_MODES, REGIMES
    from rwsjax.workflows.ood import SOURCES, SUMMARIES, corruption_list

    problems: list[str] = []

    def choice(field, valid):
        value = _get(config, field)
        if value is not None and value not in valid:
            problems.append(f"config.{field}={value!r} is not one of {sorted(valid)}")

    def at_least(field, low, strict=False):
        value = _get(config, field)
        if value is not None and (value <= low if strict else value < low):
            problems.append(f"config.{field}={value!r} must be {'>' if strict else '≥'} {low}")

    for field in ("data.name", "pre.dataset", "transfer.dataset"):
        choice(field, DATASETS)
    choice("model.name", MODELS)
    at_least("model.width_multiplier", 0, strict=True)
    for field, example in (("model.mean", "0,0,0"), ("model.std", "1,1,1")):
        value = _get(config, field)
        if value is not None and (len(value) != 3 or (field == "model.std" and min(value) <= 0)):
            problems.append(f"config.{field}={tuple(value)} must be 3 per-channel values in [0, 1] pixel scale"
                            f"{' (all > 0)' if field == 'model.std' else ''}, e.g. --config.{field}={example}")
    for field in ("init_checkpoint", "checkpoint"):
        path = _get(config, field)
        if path and not os.path.exists(path):
            problems.append(f"config.{field}={path!r} does not exist: give an rwsjax variables directory "
                            "(WORKDIR/at/final) or a PyTorch state_dict file (.pt, .pth, .safetensors)")
    for block in ("attack", "eval"):
        choice(f"{block}.norm", NORMS)
        at_least(f"{block}.eps", 0)
        at_least(f"{block}.step_size", 0, strict=True)
        at_least(f"{block}.steps", 0)
    at_least("eval.restarts", 1)
    at_least("eval.apgd_iters", 1)
    at_least("eval.apgd_targets", 0)  # 0: APGD-CE only
    at_least("eval.apgd_restarts", 1)
    at_least("eval.autoattack_size", 1)
    choice("at.regime", REGIMES)
    at_least("at.beta", 0)
    at_least("at.awp_gamma", 0)
    at_least("at.awp_warmup", 0)
    if _get(config, "at.awp") and _get(config, "at.regime") == "standard":
        problems.append("config.at.awp=True needs an adversarial config.at.regime (pgd_at, trades, mart or score)")
    choice("at.attack_bn", ATTACK_BN_MODES)
    choice("ft.bn_mode", BN_MODES)
    choice("ft.modules", STRATEGIES)
    choice("mrc.project_every", PROJECT_EVERY)
    at_least("mrc.eps", 0)
    at_least("mrc.threads", 1)
    at_least("mrc.cache_gib", 0)
    for block in ("at", "ft", "pre", "finetune", "mrc"):
        at_least(f"{block}.epochs", 0)
        at_least(f"{block}.learning_rate", 0)
    alphas = _get(config, "interp.alphas")
    if alphas is not None and any(not 0.0 <= a <= 1.0 for a in alphas):
        problems.append(f"config.interp.alphas={tuple(alphas)} must lie in [0, 1]")
    if _get(config, "ood.enabled"):
        choice("ood.summary", SUMMARIES)
        choice("ood.source", SOURCES)
        if any(int(s) not in range(1, 6) for s in (_get(config, "ood.severities") or ())):
            problems.append(f"config.ood.severities={tuple(_get(config, 'ood.severities'))} must be in 1..5")
    for field in ("ood.corruptions", "corruptions.names"):
        spec = _get(config, field)
        if spec is not None and (field != "ood.corruptions" or _get(config, "ood.enabled")):
            try:
                corruption_list(spec, field)
            except ValueError as e:
                problems.append(str(e))
    severity = _get(config, "corruptions.severity")
    if severity is not None and severity not in range(1, 6):
        problems.append(f"config.corruptions.severity={severity!r} must be in 1..5")
    bits = _get(config, "signature.bits")
    if bits is not None and bits not in range(1, 9):
        problems.append(f"config.signature.bits={bits!r} must be in 1..8")
    choice("signature.compose", ("sum", "mean"))
    choice("signature.bn", ("target", "reestimate_clean", "reestimate_corrupted"))
    at_least("signature.k", 1)
    n = jax.device_count()
    if _get(config, "redo") and config.get("workflow") == "rift":
        from rwsjax.workflows.rift import STAGES
        from rwsjax.workflows.stages import StageError, redo_list
        try:
            redo_list(config, STAGES)
        except StageError as e:
            problems.append(str(e))
    at_least("mrc.batch_size", 1)  # MRC runs each module whole on one device: any batch size
    for block in ("at", "ft", "pre", "finetune", "eval"):
        bs = _get(config, f"{block}.batch_size")
        if bs is not None and (bs < 1 or bs % n):
            problems.append(f"config.{block}.batch_size={bs} must be a positive multiple of the {n} device(s)")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def resolve_defaults(config) -> None:
    """Fill the fields whose default depends on another field, in place (after :func:`validate`).

    ``at.beta`` None → the regime's paper β (TRADES 6, MART 6, SCORE 4; unused by PGD-AT);
    ``at.awp_gamma`` / ``at.awp_warmup`` None → the AWP paper's γ and warm-up epochs for the regime.
    The resolved values are what ``config.json`` records and stage records compare.
    """
    from rwsjax.train import awp, steps
    at = config.get("at")
    if at is None or "regime" not in at:
        return
    if "beta" in at and at.beta is None:
        at.beta = steps.DEFAULT_BETA.get(at.regime)  # None: the regime has no β
    if "awp" in at:
        gamma, warmup = awp.DEFAULTS.get(at.regime, (0.0, 0))
        if at.awp_gamma is None:
            at.awp_gamma = gamma
        if at.awp_warmup is None:
            at.awp_warmup = warmup
