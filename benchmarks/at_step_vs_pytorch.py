"""Issue #8's yardstick in one run: the PGD-10 AT step of rwsjax against PyTorch eager (NCHW) on the same
machine, back to back, at each width — and the CPU variants tried (XLA flags, bfloat16 compute).

    python benchmarks/at_step_vs_pytorch.py --widths=0.25,1.0 --repeats=5 [--rounds=3]

Each variant runs in its own process (XLA flags are read at start-up); the rows are the unchanged output
lines of benchmarks/train_steps.py and benchmarks/pytorch_reference.py, so every optimization has its
before/after line. PyTorch is optional: without it those rows are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH = "torch eager NCHW"  # the PyTorch rows' label

VARIANTS = (  # (label, extra args, extra XLA_FLAGS): each optimization next to its before line
    ("rwsjax fp32, flax BatchNorm (before)", ["--batch_norm=flax"], ""),
    ("rwsjax fp32 (default)", [], ""),
    ("rwsjax fp32, --xla_cpu_use_onednn=true", [], "--xla_cpu_use_onednn=true"),
    ("rwsjax bf16 compute, fp32 weights", ["--dtype=bfloat16"], ""),
    ("rwsjax fp32, --cpu_devices=0 (one per core)", ["--cpu_devices=0"], ""),
)


def rows(cmd: list[str], env: dict) -> list[str]:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        return [f"FAILED ({out.returncode}): {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}"]
    return [ln for ln in out.stdout.splitlines() if "AT step" in ln or ln.startswith(("cpu", "PyTorch"))]


def images_per_s(line: str) -> float | None:
    """The median img/s of a result row of benchmarks/common.line (None for other lines)."""
    fields = line[36:].split()
    try:
        return float(fields[0]) if "AT step" in line[:36] else None
    except (IndexError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="0.25,1.0", help="width multipliers (0.25 = width 16, 1.0 = 64)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run PyTorch and every variant this many times, interleaved, and summarize each "
                         "variant by the median over rounds of its speed relative to PyTorch in the same round")
    ap.add_argument("--variants", default="", help="comma list: run only the variants whose label contains one "
                    "of these (e.g. 'default,cpu_devices')")
    a = ap.parse_args()
    wanted = [v.strip() for v in a.variants.split(",") if v.strip()]
    variants = [v for v in VARIANTS if not wanted or any(w in v[0] for w in wanted)]
    have_torch = importlib.util.find_spec("torch") is not None
    for width in a.widths.split(","):
        print(f"\n== ResNet-18 width ×{width} (base {round(64 * float(width))}), batch {a.batch} ==", flush=True)
        common = [f"--width={width}", f"--batch={a.batch}", f"--repeats={a.repeats}"]
        speeds: dict[str, list[float]] = {}

        def show(label: str, line: str) -> None:
            print(f"  {label}:", line, flush=True)
            if (v := images_per_s(line)) is not None:
                speeds.setdefault(label, []).append(v)

        for r in range(a.rounds):
            if a.rounds > 1:
                print(f"  -- round {r + 1} of {a.rounds}", flush=True)
            if have_torch:
                for ln in rows([sys.executable, os.path.join(HERE, "pytorch_reference.py"), *common,
                                "--only=PGD-10 AT step"], dict(os.environ)):
                    show(TORCH, ln)
            elif r == 0:
                print("  torch eager: not installed (pip install torch --index-url "
                      "https://download.pytorch.org/whl/cpu)")
            for label, extra, flags in variants:
                env = dict(os.environ)
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
                for ln in rows([sys.executable, os.path.join(HERE, "train_steps.py"), *common, *extra,
                                "--only=PGD-10 AT step (unrolled)"], env):
                    show(label, ln)
        if a.rounds > 1:
            summarize(speeds)


def summarize(speeds: dict[str, list]) -> None:
    """Per variant: median img/s over rounds and, where PyTorch ran, the median of the per-round ratios."""
    torch = speeds.get(TORCH)
    print(f"  summary over rounds: {'variant':46s} {'median img/s':>12s} {'× PyTorch (per-round median)':>30s}")
    for label, values in speeds.items():
        ratio = ""
        if torch and label != TORCH and len(torch) == len(values):
            ratios = [v / t for v, t in zip(values, torch)]
            ratio = f"{statistics.median(ratios):.2f} (rounds: {', '.join(f'{q:.2f}' for q in ratios)})"
        print(f"  {'':21s}{label:46s} {statistics.median(values):12.1f} {ratio:>30s}")


if __name__ == "__main__":
    main()
