"""The RiFT pipeline end to end on real CIFAR-10 (smoke preset), killed mid-training and resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from test_metrics import read_events

from conftest import ROOT, needs_data


def _steps(directory):
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


@needs_data
@pytest.mark.slow
def test_smoke_pipeline_end_to_end_with_resume(tmp_path):
    workdir = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "rwsjax.main", f"--config={ROOT}/configs/rift.py:smoke", f"--workdir={workdir}"]
    ckpts = workdir / "at" / "checkpoints"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.time() + 600
        lock = workdir / ".lock"
        while not (lock.exists() and lock.read_text()):  # the first run holds the workdir
            assert first.poll() is None, open(tmp_path / "first.log").read()[-3000:]
            assert time.time() < deadline, "no lock within 10 minutes"
            time.sleep(0.2)
        # A second run on the same workdir stops at once, naming the first.
        t0 = time.time()
        second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert second.returncode == 2 and time.time() - t0 < 30, second.stderr[-2000:]
        assert f"is in use by process {first.pid} on " in second.stderr.strip().splitlines()[-1]
        while not _steps(ckpts):  # wait for the end-of-epoch-1 checkpoint, then kill without warning
            assert first.poll() is None, open(tmp_path / "first.log").read()[-3000:]
            assert time.time() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.2)
        first.kill()
        first.wait()
    killed_at = _steps(ckpts)[-1]
    assert killed_at > 0 and not (workdir / "at" / "final").exists()

    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert f"[at] resumed from {ckpts} at step {killed_at}" in out  # resumed instead of starting over
    assert f"taking over {workdir}/.lock from process {first.pid}" in out  # the killed run's lock

    results = json.loads((workdir / "results.json").read_text())
    assert len(results["mrc"]) == 21
    assert results["mrc"][0]["module"] == "conv1" and results["mrc"][-1]["module"] == "linear"
    assert all(r["mrc"] >= 0 for r in results["mrc"])
    least = min(results["mrc"], key=lambda r: r["mrc"])["module"]
    assert results["finetuned_modules"] == [least]
    assert results["alpha_star"] in (0.0, 0.5, 1.0)
    for model in ("at", "rift"):
        m = results[model]
        assert 0 <= m["robust_accuracy"] <= m["clean_accuracy"] <= 100
        assert m["n"] == 100
        # the worst of the 2 whole PGD runs (the paper's way) is ≥ the per-example worst case
        runs = [m["robust_run0_accuracy"], m["robust_run1_accuracy"]]
        assert m["robust_worst_run_accuracy"] == min(runs) >= m["robust_accuracy"]
        # The smoke preset corrupts with 4 of the 15 benchmark corruptions: the 15-mean is "not computed".
        assert m["ood_accuracy"] is None
    # Every Δ with its paired bootstrap interval over the 100 test images (no OOD mean: no OOD interval).
    assert set(results["intervals"]) == {"clean_accuracy", "robust_accuracy"}
    for key, ci in results["intervals"].items():
        assert ci["delta"] == pytest.approx(results["rift"][key] - results["at"][key])
        assert ci["low"] <= ci["delta"] <= ci["high"] and ci["n"] == 100 and ci["resamples"] == 1000
    assert "95% paired bootstrap interval" in (workdir / "report.md").read_text()
    ood = json.loads((workdir / "ood.json").read_text())
    sets = [f"{c}_{v}" for c in ("gaussian_noise", "glass_blur", "fog", "jpeg_compression") for v in range(1, 6)]
    for model in ("at", "rift"):
        assert sorted(ood["per_set"][model]) == sorted(sets)
        assert all(0 <= a <= 100 for a in ood["per_set"][model].values())
        assert set(ood["summary"][model]["per_corruption"]) == {"gaussian_noise", "glass_blur", "fog",
                                                                "jpeg_compression"}
    history = json.loads((workdir / "at" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    # TensorBoard: losses, accuracies in %, the learning rate; no counts.
    events = read_events(str(workdir / "tensorboard"))
    for stage in ("at", "ft"):
        for name in ("train_loss", "train_accuracy", "val_clean_accuracy", "learning_rate"):
            assert events.get(f"{stage}/{name}"), (stage, name, sorted(events))
    assert events["at/val_robust_accuracy"]
    assert not [t for t in events if t.endswith(("_n", "count", "seconds"))], sorted(events)
    assert dict(events["at/val_clean_accuracy"])[max(dict(events["at/val_clean_accuracy"]))] == pytest.approx(
        history[-1]["val_clean_accuracy"], abs=1e-4)
    assert max(v for _, v in events["at/train_accuracy"]) > 1  # %, not a fraction
    lrs = dict(events["at/learning_rate"])
    assert lrs[max(lrs)] == pytest.approx(0.01) and set(map(lambda v: round(v, 6), lrs.values())) <= {0.1, 0.01}
    for name in ("config.json", "report.md", "mrc.md", "mrc.png", "interpolation.png", "interpolation.json"):
        assert (workdir / name).exists(), name
    assert "| AT + RiFT" in (workdir / "report.md").read_text()
    assert "worst of the 2 whole PGD runs" in (workdir / "report.md").read_text()

    # A changed MRC field is refused in one line; with --config.redo=mrc, MRC and every later stage are
    # recomputed from the recorded θ_AT, which is not retrained.
    p = subprocess.run(cmd + ["--config.mrc.eps=0.2"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: stage 'mrc' in {workdir} is done with a different config (mrc.eps: 0.1 → 0.2). Recompute it and "
        "the stages after it with --config.redo=mrc, or use a new --workdir."], p.stderr[-2000:]
    # The redo runs the official RiFT protocol (rwsjax.protocols): MRC examples from the test split, crafting
    # step 2/225, projection per epoch, the last smaller batch an ascent step, no floor; the report says so.
    p = subprocess.run(cmd + ["--config.mrc.eps=0.2", "--config.protocol=official", "--config.redo=mrc"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "[rift] at: done (computed in" in p.stdout
    for stage in ("mrc", "ft", "interp", "ood", "report"):
        assert f"[rift] {stage}: computed in" in p.stdout, stage
    redone = json.loads((workdir / "results.json").read_text())
    mrc = json.loads((workdir / "mrc.json").read_text())
    assert mrc["eps"] == 0.2 and mrc["split"] == "test" and mrc["examples"] == 64
    config = json.loads((workdir / "config.json").read_text())
    assert config["mrc"]["project_every"] == "epoch" and config["mrc"]["attack_step_size"] == pytest.approx(2 / 225)
    assert config["mrc"]["batch_size"] == 32  # set by the smoke preset: an explicit field wins over the protocol
    assert "**Module selection used the test split**" in (workdir / "report.md").read_text()
    assert redone["protocol"] == "official" and redone["mrc_split"] == "test"
    assert redone["at"] == results["at"] and redone["timings_s"]["at"] == results["timings_s"]["at"]

    # The evaluate workflow on the saved θ_AT reproduces the report's clean/adversarial test numbers. The model
    # comes from the directory's own record: the cpu preset's width (×0.25) is replaced by the run's (×0.0625);
    # the overrides only set the smoke run's test subset and attack.
    evaluate = [sys.executable, "-m", "rwsjax.main", f"--config={ROOT}/configs/evaluate.py:cpu",
                f"--workdir={tmp_path / 'eval'}", f"--config.checkpoint={workdir / 'at' / 'final'}",
                "--config.data.test_size=100", "--config.eval.steps=2", "--config.eval.restarts=2",
                "--config.eval.batch_size=100", "--config.log.tensorboard=False", "--config.ood.enabled=False",
                "--config.eval.autoattack=standard", "--config.eval.apgd_iters=3", "--config.eval.apgd_targets=2",
                "--config.eval.square_queries=50", "--config.eval.autoattack_size=40"]
    ev = subprocess.run(evaluate, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert ev.returncode == 0, (ev.stdout + ev.stderr)[-4000:]
    assert "resnet18 ×0.0625 on cifar10 (its record); set model.width_multiplier=0.0625" in ev.stdout
    # Its stages are recorded too: the same command skips them all, another attack is refused.
    again = subprocess.run(evaluate, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0 and all(f"[evaluate] {st}: done" in again.stdout
                                         for st in ("model", "test", "ood", "autoattack", "report")), again.stdout
    other = subprocess.run(evaluate + ["--config.eval.restarts=3"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
    assert other.returncode == 2 and "stage 'test'" in other.stderr and "eval.restarts: 2 → 3" in other.stderr
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["clean_accuracy"] == results["at"]["clean_accuracy"]
    assert evaluation["robust_accuracy"] == results["at"]["robust_accuracy"]
    aa = evaluation["autoattack"]  # standard AutoAttack (shortened), accuracy after each attack, 40-image subset
    assert aa["n"] == 40 and aa["settings"]["n_iter"] == 3 and aa["settings"]["square_queries"] == 50
    after = list(aa["accuracy_after"].values())
    assert list(aa["accuracy_after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa["clean_accuracy"] >= after[0] and after == sorted(after, reverse=True)
    assert aa["autoattack_accuracy"] == after[-1]
    adv = np.load(aa["adversarial_examples"])
    assert adv["x_adv"].shape == (40, 32, 32, 3) and adv["robust"].sum() == round(0.4 * aa["autoattack_accuracy"])
    assert adv["x_adv"].min() >= 0 and adv["x_adv"].max() <= 1 and len(adv["indices"]) == 40
    assert "AA standard (%)" in (tmp_path / "eval" / "evaluation.md").read_text()
