"""Standard AutoAttack on a saved model: the rwsjax command line next to the reference code (``pyautoattack``,
fra31's AutoAttack) on the model's PyTorch twin, the same test images, one run each, wall time included.

    python benchmarks/autoattack_evaluate.py --checkpoint=runs/cpu/at/final --n=500 --workdir=runs/aa_eval \\
        --write=docs/autoattack_cpu.md

Runs ``python -m rwsjax.main --config=configs/evaluate.py:cpu --config.checkpoint=CHECKPOINT
--config.eval.autoattack=standard --config.data.test_size=N --config.eval.autoattack_size=N
--config.ood.enabled=false`` (clean and PGD-10 on the same N images; they are recorded in
``WORKDIR/autoattack_model.npz``), then
``pyautoattack.AutoAttack(twin, norm='Linf', eps=8/255, version='standard', seed=0)`` on the same images,
where the twin is the exported ``state_dict`` in the PyTorch ResNet of ``tests/torch_models.py``.  Prints
per-attack robust accuracy (%), the final one and the wall times; ``--write`` also writes them as markdown.
Needs torch and ``pip install --no-deps pyautoattack``; TFDS_DATA_DIR holding the prepared CIFAR-10.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import common  # noqa: E402

NAMES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}


class _Lines(logging.Handler):
    """Keeps the reference logger's messages (its per-attack robust accuracy lines)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True, help="an rwsjax variables directory (e.g. WORKDIR/at/final)")
    parser.add_argument("--n", type=int, default=500, help="test images (eval.autoattack_size)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--write", default="", help="also write the table to this markdown file")
    parser.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR"))
    a = parser.parse_args()

    command = [sys.executable, "-m", "rwsjax.main", "--config=configs/evaluate.py:cpu", f"--workdir={a.workdir}",
               f"--config.checkpoint={a.checkpoint}", "--config.eval.autoattack=standard",
               f"--config.data.test_size={a.n}", f"--config.eval.autoattack_size={a.n}", "--config.ood.enabled=false"]
    t = time.time()
    subprocess.run(command, check=True)
    ours_s = time.time() - t
    with open(os.path.join(a.workdir, "evaluation.json")) as f:
        aa = json.load(f)["autoattack"]
    saved = np.load(glob.glob(os.path.join(a.workdir, "autoattack_*.npz"))[0])

    import torch
    import pyautoattack
    import torch_models
    import rwsjax
    from rwsjax.data.sources import DATASETS, load_split
    from rwsjax.models.pytorch_io import export_state_dict

    torch.set_num_threads(os.cpu_count() or 1)
    model, variables = rwsjax.load(a.checkpoint)
    info = DATASETS["cifar10"]
    width = model.width_multiplier if hasattr(model, "width_multiplier") else 1.0
    twin = torch_models.resnet18(width=width, norm="normalize", mean=info.mean, std=info.std)
    sd = export_state_dict(variables, mean=info.mean, std=info.std)
    twin.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in sd.items()}, strict=True)
    twin.eval()
    test = load_split("cifar10", "test", a.data_dir, saved["indices"], progress=False)
    xt = torch.tensor(test.images.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    yt = torch.tensor(test.labels.astype(np.int64))
    ref = pyautoattack.AutoAttack(twin, norm="Linf", eps=8 / 255, version="standard", seed=0)
    lines = _Lines()
    ref.logger.addHandler(lines)
    ref.logger.setLevel(logging.DEBUG)
    t = time.time()
    with torch.no_grad():
        ref_clean = 100.0 * float((twin(xt).argmax(1) == yt).float().mean())
    x_ref, _ = ref.run_standard_evaluation(xt, yt, batch_size=500)
    ref_s = time.time() - t
    with torch.no_grad():
        ref_final = 100.0 * float((twin(x_ref).argmax(1) == yt).float().mean())
    text = "\n".join(lines.lines)
    ref_after = {k: float(m.group(1)) for k in NAMES
                 if (m := re.search(rf"robust accuracy after {k.upper()}: ([0-9.]+)%", text))}

    rows = [("clean", aa["clean_accuracy"], ref_clean)]
    rows += [(f"after {NAMES[k]}", aa["accuracy_after"].get(k), ref_after.get(k)) for k in NAMES]
    rows += [("AutoAttack (final)", aa["autoattack_accuracy"], ref_final)]
    fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"{a.n} CIFAR-10 test images (the seeded subset of `evaluate:cpu`), standard AutoAttack, ℓ∞ ε = 8/255; "
             f"{common.banner()}", "",
             "| % | rwsjax | pyautoattack |", "|---|---:|---:|"]
    lines += [f"| {name} | {fmt(o)} | {fmt(r)} |" for name, o, r in rows]
    lines += [f"| wall time (s) | {ours_s:.0f} (the whole command) | {ref_s:.0f} |"]
    print("\n".join(lines))
    if a.write:
        with open(a.write, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
