"""The RWS pipeline end to end on real CIFAR-10/100 with generated corruptions (smoke preset)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, needs_data


@needs_data
@pytest.mark.slow
def test_rws_smoke_pipeline(tmp_path):
    workdir = tmp_path / "rws"
    cmd = [sys.executable, "-m", "rwsjax.main", f"--config={ROOT}/configs/rws.py:smoke", f"--workdir={workdir}",
           "--config.log.tensorboard=False"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    r = json.loads((workdir / "results.json").read_text())
    assert r["corruptions"] == ["gaussian_noise", "fog"]
    assert r["signature_layers"] == ["conv1", "layer1.0.conv1"]  # the k=2 shallowest conv layers of ResNet-18
    assert r["protocol"] == "rwsjax" and r["switches"]["signature.transplant"] is False
    assert r["removal_exact"] is True
    methods = {row["method"] for row in r["table"]}
    assert len(r["table"]) == 2 * len(methods) == 10
    for row in r["table"]:
        assert 0 <= row["ta"] <= 100 and 0 <= row["ra"] <= 100
        clean = next(x for x in r["table"] if x["corruption"] == row["corruption"] and x["method"] == "clean model")
        if row is clean:
            assert "ta_delta" not in row
            continue
        for k in ("ta", "ra"):  # the change from the clean model, with its paired bootstrap interval around it
            ci = row[f"{k}_delta"]
            assert ci["delta"] == pytest.approx(row[k] - clean[k]) and ci["low"] <= ci["delta"] <= ci["high"]
            assert ci["n"] == r["test_images"] and ci["resamples"] == 1000
    assert "paired bootstrap interval" in (workdir / "report.md").read_text()
    # Storage is the real size on disk: the quantized file is smaller than the float one, both ≪ the model.
    for n in r["corruptions"]:
        fp32 = os.path.getsize(workdir / "signatures" / f"cifar10_{n}_k2_fp32.safetensors")
        q4 = os.path.getsize(workdir / "signatures" / f"cifar10_{n}_k2_4bit.safetensors")
        assert q4 < fp32 < r["full_model_mb"] * 1e6
        row = next(x for x in r["table"] if x["corruption"] == n and "fp32" in x["method"])
        assert row["storage_mb"] == pytest.approx(fp32 / 1e6)
    # λ = 0 is the clean model exactly.
    for n in r["corruptions"]:
        clean = next(x for x in r["table"] if x["corruption"] == n and x["method"] == "clean model")
        zero = next(p for p in r["lambda_sweep"][n] if p["lam"] == 0.0)
        assert (zero["ta"], zero["ra"]) == (clean["ta"], clean["ra"])
    assert len(r["transfer"]) == 2 and r["cross_dataset_cosine"] is not None
    for name in ("report.md", "layer_profile.png", "signature_similarity.png", "cross_dataset_similarity.png",
                 "lambda_sweep.png", "k_and_bits.png"):
        assert (workdir / name).exists(), name
    assert set(r["timings_s"]) >= {"pre", "cifar10_clean", "cifar10_fog", "signatures", "table", "analyses"}

    # A changed signature field is refused in one line naming it, its old and new value and the redo flag ...
    p = subprocess.run(cmd + ["--config.signature.k=1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: stage 'signatures' in {workdir} is done with a different config (signature.k: 2 → 1). Recompute it "
        "and the stages after it with --config.redo=signatures, or use a new --workdir."], p.stderr[-2000:]
    assert json.loads((workdir / "results.json").read_text()) == r
    # ... and with it the signatures and everything after them are recomputed, the zoo is not retrained.
    p = subprocess.run(cmd + ["--config.signature.k=1", "--config.redo=signatures"], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    for zoo_model in ("pre", "cifar10_clean", "cifar10_fog", "cifar100_fog", "cifar10_clean_continued"):
        assert f"[rws] {zoo_model}: done (computed in" in p.stdout
    for stage in ("signatures", "table", "sweeps", "transfer", "analyses", "report"):
        assert f"[rws] {stage}: computed in" in p.stdout
    k1 = json.loads((workdir / "results.json").read_text())
    assert k1["signature_layers"] == ["conv1"] and k1["table"] != r["table"]
    assert k1["timings_s"]["cifar10_fog"] == r["timings_s"]["cifar10_fog"]  # the zoo model's recorded time

    # protocol=official: the official code's patch — k counts the stem and residual blocks, every BN and shortcut
    # tensor is the robust models' mean, BN re-estimated on the corrupted training images (mixed in proportion
    # λ below 1), λ applied twice, the mean composition — on the same zoo.
    p = subprocess.run(cmd + ["--config.signature.k=2", "--config.protocol=official", "--config.redo=signatures"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    off = json.loads((workdir / "results.json").read_text())
    assert off["protocol"] == "official" and off["switches"] == {
        "signature.k": 2, "signature.layers": "blocks", "signature.transplant": True,
        "signature.bn": "reestimate_corrupted", "signature.bn_weighting": "sample", "signature.bn_blend": True,
        "signature.lambda_twice": True, "signature.compose": "mean"}
    assert off["signature_layers"] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]  # the stem + one block
    methods = [row["method"] for row in off["table"] if row["corruption"] == "fog"]
    assert methods[2] == "clean + RWS (fp32, k=2 blocks, λ=1)" and "(no weight patch)" in methods[-1]
    fog = {row["method"]: row for row in off["table"] if row["corruption"] == "fog"}
    assert fog[methods[2]] != next(x for x in r["table"] if x["corruption"] == "fog" and "fp32" in x["method"])
    assert "Protocol `official`" in (workdir / "report.md").read_text()

    # AutoAttack of θ_clean and of the composed patch (eval.autoattack): only its stage and the report run.
    official = cmd + ["--config.signature.k=2", "--config.protocol=official"]
    p = subprocess.run(official + ["--config.eval.autoattack=custom", "--config.eval.autoattack_attacks=apgd-ce,square",
                                   "--config.eval.apgd_iters=3", "--config.eval.square_queries=10",
                                   "--config.eval.autoattack_size=40", "--config.redo=autoattack"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "[rws] autoattack: computed in" in p.stdout and "[rws] report: computed in" in p.stdout
    assert "[rws] table: done" in p.stdout
    aa = json.loads((workdir / "results.json").read_text())["autoattack"]
    assert list(aa) == ["clean model", "clean + composed RWS"]
    for m in aa.values():
        assert m["n"] == 40 and list(m["accuracy_after"]) == ["apgd-ce", "square"]
        assert m["clean_accuracy"] >= m["accuracy_after"]["apgd-ce"] >= m["autoattack_accuracy"]
    assert "## AutoAttack" in (workdir / "report.md").read_text()
    assert (workdir / "autoattack_composed.npz").exists()
