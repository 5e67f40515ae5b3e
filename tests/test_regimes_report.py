"""The Table-2 report: one row per regime, θ_AT vs θ_RiFT and their change, from runs' results.json."""

from __future__ import annotations

import json

import pytest

from rwsjax.report import regimes
from rwsjax.report.tables import regime_label, regimes_table


def _result(regime=None, clean=(40.0, 41.5), ood=(30.0, None), adv=(25.0, 24.9)):
    r = {"model": "resnet18", "width_multiplier": 0.25, "alpha_star": 0.3, "finetuned_modules": ["conv1"],
         "at": {"clean_accuracy": clean[0], "ood_accuracy": ood[0], "robust_accuracy": adv[0]},
         "rift": {"clean_accuracy": clean[1], "ood_accuracy": ood[1], "robust_accuracy": adv[1]}}
    if regime:
        r["regime"] = regime
    return r


def test_regime_labels():
    assert regime_label({"regime": "pgd_at", "beta": None, "awp": False}) == "PGD-AT"
    assert regime_label({"regime": "trades", "beta": 6.0}) == "TRADES (β=6)"
    assert regime_label({"regime": "pgd_at", "awp": True, "awp_gamma": 0.01}) == "PGD-AT + AWP (γ=0.01)"
    assert regime_label({"regime": "score", "beta": 4.0, "awp": True, "awp_gamma": 0.005}) == \
        "SCORE (β=4) + AWP (γ=0.005)"


def test_table_rows_and_deltas():
    table = regimes_table([_result("TRADES (β=6)")])
    row = table.strip().splitlines()[2].split(" | ")
    assert row[0] == "| TRADES (β=6)" and row[2] == "0.3" and row[3] == "conv1"
    assert row[4:7] == ["40.00", "41.50", "+1.50"]
    assert row[7:10] == ["30.00", "n/c", "n/c"]  # OOD not computed for θ_RiFT: no Δ
    assert row[10:13] == ["25.00", "24.90", "-0.10 |"]


def test_load_labels_old_runs_from_their_config(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps(_result()))
    (old / "config.json").write_text(json.dumps({"at": {"regime": "mart", "beta": 6.0}}))
    assert regimes.load([str(old)])[0]["regime"] == "MART (β=6)"
    with pytest.raises(FileNotFoundError, match="report stage"):
        regimes.load([str(tmp_path / "missing")])
    assert regimes.main([str(tmp_path / "missing")]) == 2
