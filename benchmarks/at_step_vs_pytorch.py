"""The PGD-10 AT step of rwsjax against PyTorch eager (NCHW) on the same machine, back to back, at each
width — with the CPU variants next to the default (XLA flags, bfloat16 compute, BatchNorm backward forms).

    python benchmarks/at_step_vs_pytorch.py --widths=0.25,1.0 --repeats=5 [--rounds=3]
    python benchmarks/at_step_vs_pytorch.py --widths=0.25 --interleave=20 --variants=...

Each variant runs in its own process (XLA flags are read at start-up); the rows are the unchanged output
lines of benchmarks/train_steps.py and benchmarks/pytorch_reference.py. PyTorch is optional: without it those rows are skipped.

``--interleave=N`` is the measurement to trust on a shared machine: every process (PyTorch and each variant)
is started and warmed up, then they take turns one AT step at a time (``--serve`` of the two scripts), N
turns each, so a slow spell of the machine hits all of them alike; each variant is summarized by the median
over turns of its speed relative to PyTorch's step in the same turn.
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

VARIANTS = (  # (label, extra args, extra XLA_FLAGS): the default and the alternatives it is compared with
    ("rwsjax fp32, flax.linen.BatchNorm", ["--batch_norm=flax"], ""),
    ("rwsjax fp32, BatchNorm backward with x - mean written out", ["--batch_norm=centered"], ""),
    ("rwsjax fp32 (default)", [], ""),
    ("rwsjax fp32, --xla_cpu_use_onednn=true", [], "--xla_cpu_use_onednn=true"),
    ("rwsjax bf16 compute, fp32 weights", ["--dtype=bfloat16"], ""),
    ("rwsjax fp32, x - mean written out, --cpu_devices=0", ["--batch_norm=centered", "--cpu_devices=0"], ""),
    ("rwsjax fp32, --cpu_devices=0 (one per core)", ["--cpu_devices=0"], ""),
    ("rwsjax fp32, YNNPACK off", [], "--xla_cpu_experimental_ynn_fusion_type="),
)


def rows(cmd: list[str], env: dict) -> list[str]:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        return [f"FAILED ({out.returncode}): {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}"]
    return [ln for ln in out.stdout.splitlines() if "AT step" in ln or ln.startswith(("cpu", "PyTorch"))]


def commands(common: list[str], variants, have_torch: bool) -> dict[str, tuple[list[str], dict]]:
    """``label -> (command, environment)`` of the PyTorch row (where installed) and of every variant."""
    procs = {}
    if have_torch:
        procs[TORCH] = ([sys.executable, os.path.join(HERE, "pytorch_reference.py"), *common,
                         "--only=PGD-10 AT step"], dict(os.environ))
    for label, extra, flags in variants:
        env = dict(os.environ)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
        procs[label] = ([sys.executable, os.path.join(HERE, "train_steps.py"), *common, *extra,
                         "--only=PGD-10 AT step (unrolled)"], env)
    return procs


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
    ap.add_argument("--interleave", type=int, default=0,
                    help="take turns one step at a time, this many turns per process (see the module docstring)")
    ap.add_argument("--variants", default="", help="comma list: run only the variants whose label contains one "
                    "of these (e.g. 'default,cpu_devices')")
    a = ap.parse_args()
    wanted = [v.strip() for v in a.variants.split(",") if v.strip()]
    variants = [v for v in VARIANTS if not wanted or any(w in v[0] for w in wanted)]
    have_torch = importlib.util.find_spec("torch") is not None
    if a.interleave:
        for width in a.widths.split(","):
            interleave(width, a.batch, a.interleave, variants, have_torch)
        return
    for width in a.widths.split(","):
        print(f"\n== ResNet-18 width ×{width} (base {round(64 * float(width))}), batch {a.batch} ==", flush=True)
        common = [f"--width={width}", f"--batch={a.batch}", f"--repeats={a.repeats}"]
        speeds: dict[str, list[float]] = {}

        def show(label: str, line: str) -> None:
            print(f"  {label}:", line, flush=True)
            if (v := images_per_s(line)) is not None:
                speeds.setdefault(label, []).append(v)

        if not have_torch:
            print("  torch eager: not installed (pip install torch --index-url "
                  "https://download.pytorch.org/whl/cpu)")
        for r in range(a.rounds):
            if a.rounds > 1:
                print(f"  -- round {r + 1} of {a.rounds}", flush=True)
            for label, (cmd, env) in commands(common, variants, have_torch).items():
                for ln in rows(cmd, env):
                    show(label, ln)
        if a.rounds > 1:
            summarize(speeds)


def interleave(width: str, batch: int, turns: int, variants, have_torch: bool) -> None:
    """Start every process, warm each up alone, then run ``turns`` rounds of one step per process."""
    print(f"\n== ResNet-18 width ×{width} (base {round(64 * float(width))}), batch {batch}: {turns} turns of "
          f"one PGD-10 AT step per process ==", flush=True)
    workers = {}
    for label, (cmd, env) in commands([f"--width={width}", f"--batch={batch}", "--serve"], variants,
                                      have_torch).items():  # one at a time: a compiling process would disturb the others
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        for ln in p.stdout:
            if ln.startswith("READY"):
                print(f"  {label}: ready (warm-up {float(ln.split()[1]):.1f} s)", flush=True)
                workers[label] = p
                break
        else:
            print(f"  {label}: FAILED to start (exit {p.wait()})", flush=True)
    times = {label: [] for label in workers}
    disturbed = {label: 0 for label in workers}
    for _ in range(turns):
        for label, p in workers.items():
            p.stdin.write("step\n")
            reply = p.stdout.readline().split()
            if len(reply) != 2:
                raise RuntimeError(f"{label}: the step server exited (status {p.poll()}) instead of timing a step")
            wall, others = (float(v) for v in reply)
            times[label].append(wall)
            disturbed[label] += others > 0.1
    for p in workers.values():
        p.stdin.write("quit\n")
        p.stdin.close()
        p.wait()
    ref = times.get(TORCH)
    print(f"  {'':2s}{'process':46s} {'img/s med':>9s} {'img/s best':>10s} {'× PyTorch (median of turns)':>28s} "
          f"{'turns faster':>12s}  disturbed turns")
    for label, ts in times.items():
        ratio, faster = "", ""
        if ref and label != TORCH:
            ratios = [r / t for r, t in zip(ref, ts)]  # PyTorch time / our time = our speed relative to PyTorch
            ratio = f"{statistics.median(ratios):.2f}"
            faster = f"{sum(q > 1 for q in ratios)}/{len(ratios)}"
        print(f"  {'':2s}{label:46s} {batch / statistics.median(ts):9.1f} {batch / min(ts):10.1f} {ratio:>28s} "
              f"{faster:>12s}  {disturbed[label]}/{len(ts)}", flush=True)


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
