"""Configs are validated up front: each bad value is named with what is allowed."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import ROOT
from rwsjax.config_validation import ConfigError
from rwsjax.workflows import validate


def _config(name, preset="smoke"):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", f"{ROOT}/configs/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


@pytest.mark.parametrize("name", ["rift", "rws", "evaluate"])
@pytest.mark.parametrize("preset", ["paper", "cpu", "smoke", "tinyimagenet", "tinyimagenet_cpu"])
def test_shipped_configs_are_valid(name, preset):
    _valid(name, preset)


@pytest.mark.parametrize("name", ["rift", "evaluate"])
def test_regime_comparison_preset_is_valid(name):
    _valid(name, "cpu_pgd10")


def _valid(name, preset):
    c = _config(name, preset)
    if name == "evaluate":  # the one field a user must give
        with pytest.raises(ConfigError, match="config.checkpoint is empty"):
            validate(c)
        c.checkpoint = ROOT
    validate(c)


@pytest.mark.parametrize("name,field,value,message", [
    ("rift", "model.name", "resnet101", "config.model.name='resnet101' is not one of"),
    ("rift", "data.name", "mnist", "'cifar10'"),
    ("rift", "attack.eps", -0.1, "config.attack.eps=-0.1 must be ≥ 0"),
    ("rift", "eval.step_size", 0.0, "config.eval.step_size=0.0 must be > 0"),
    ("rift", "eval.norm", "l1", "'linf'"),
    ("rift", "interp.alphas", (0.0, 1.5), "must lie in [0, 1]"),
    ("rift", "ft.modules", "random", "'least_critical'"),
    ("rift", "mrc.project_every", "never", "'step'"),
    ("rift", "at.attack_bn", "swap", "'batch'"),
    ("rift", "at.lr_schedule", "cosine", "'cyclic'"),
    ("rift", "ood.corruptions", "gaussian_noise,blizzard", "unknown ['blizzard']"),
    ("rift", "ood.summary", "mean_10", "'mean_15'"),
    ("rift", "eval.restarts", 0, "config.eval.restarts=0 must be ≥ 1"),
    ("rift", "at.batch_size", 0, "positive multiple"),
    ("rift", "at.regime", "fgsm", "'trades'"),
    ("rift", "at.awp_gamma", -0.01, "config.at.awp_gamma=-0.01 must be ≥ 0"),
    ("rift", "eval.apgd_iters", 0, "config.eval.apgd_iters=0 must be ≥ 1"),
    ("rift", "eval.autoattack", "full", "config.eval.autoattack='full' is not one of"),
    ("rws", "corruptions.names", "fog,blizzard", "unknown ['blizzard']"),
    ("rws", "corruptions.severity", 6, "must be in 1..5"),
    ("rws", "signature.bits", 12, "must be in 1..8"),
    ("rws", "signature.bn", "adapt", "'reestimate_corrupted'"),
    ("rws", "signature.compose", "max", "'mean'"),
])
def test_bad_values_are_named(name, field, value, message):
    c = _config(name)
    block, key = field.split(".")
    c[block][key] = value
    with pytest.raises(ConfigError, match="invalid config") as e:
        validate(c)
    assert f"config.{field}" in str(e.value) and message in str(e.value)


def test_all_problems_in_one_message():
    c = _config("rift")
    c.model.name, c.attack.eps = "alexnet", -1.0
    with pytest.raises(ConfigError) as e:
        validate(c)
    assert "config.model.name" in str(e.value) and "config.attack.eps" in str(e.value)
    assert "\n" not in str(e.value) and str(e.value).startswith("invalid config (2 problems): ")


def test_awp_needs_an_adversarial_regime():
    c = _config("rift")
    c.at.regime, c.at.awp = "standard", True
    with pytest.raises(ConfigError, match="config.at.awp=True needs an adversarial config.at.regime"):
        validate(c)
    c.at.regime = "fgsm_rs"  # adversarial, but no AWP recipe: γ must be given
    with pytest.raises(ConfigError, match="config.at.regime=fgsm_rs needs --config.at.awp_gamma"):
        validate(c)
    c.at.awp_gamma = 1e-2
    validate(c)


@pytest.mark.parametrize("regime,field,value,message", [
    ("trades", "attack_bn", "train", "attack_bn=train .* does not apply to config.at.regime=trades"),
    ("pgd_at", "extra_clean_pass", True, "extra_clean_pass=True is TRADES's third pass"),
])
def test_official_switches_only_where_they_apply(regime, field, value, message):
    c = _config("rift")
    c.at.regime, c.at[field] = regime, value
    with pytest.raises(ConfigError, match=message):
        validate(c)


def test_fgsm_rs_defaults_to_the_cyclic_schedule():
    from rwsjax.config_validation import resolve_defaults
    c = _config("rift", "paper")
    c.at.regime = "fgsm_rs"
    validate(c)
    resolve_defaults(c)
    assert c.at.lr_schedule == "cyclic"
    c = _config("rift", "paper")
    resolve_defaults(c)
    assert c.at.lr_schedule == "piecewise"


@pytest.mark.parametrize("regime,awp,expected", [
    ("pgd_at", False, (None, 1e-2, 0)),  # PGD-AT has no β; AT-AWP: γ = 1e-2, no warm-up
    ("trades", True, (6.0, 5e-3, 10)),   # TRADES β = 6; TRADES-AWP: γ = 5e-3 after 10 epochs
    ("mart", False, (6.0, 1e-2, 0)),
    ("score", False, (4.0, 5e-3, 10)),   # SCORE's official command: β = 4
])
def test_regime_defaults_are_the_papers(regime, awp, expected):
    from rwsjax.config_validation import resolve_defaults
    c = _config("rift", "paper")
    c.at.regime, c.at.awp = regime, awp
    validate(c)
    resolve_defaults(c)
    assert (c.at.beta, c.at.awp_gamma, c.at.awp_warmup) == expected
    c.at.beta = 1.0  # an explicit value is kept
    resolve_defaults(c)
    assert c.at.beta == 1.0
