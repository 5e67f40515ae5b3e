"""What every benchmark reports: compile time, median/min of timed repeats, peak memory, achieved GFLOP/s
against the machine's peak, and whether other processes used the CPU meanwhile (a disturbed timing).

Not a test: numbers are printed, never asserted.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # the library's progress bars would interleave with the table

import jax  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy (user, nice, system, irq, softirq, steal) since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _others(busy0: float, own0: float, wall: float) -> float:
    """Fraction of the machine's cores used by other processes over a window of ``wall`` seconds (0 for
    windows under a second: /proc/stat counts in clock ticks, too coarse to tell)."""
    if wall < 1.0:
        return 0.0
    return max(0.0, (_busy_cpu_s() - busy0) - (_own_cpu_s() - own0)) / (wall * (os.cpu_count() or 1))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_gflops() -> tuple[float, str]:
    """Nominal fp32 peak of the default device and how it was derived.

    CPU: cores × GHz × FLOPs/cycle (AVX-512: 2 FMA units × 16 lanes × 2 = 64; AVX2+FMA: 32; else 8), from
    /proc/cpuinfo.  GPU: the vendor's dense fp32 (non-tensor-core) figure for known parts, else 0.
    """
    d = jax.devices()[0]
    if d.platform == "cpu":
        info = open("/proc/cpuinfo").read()
        mhz = next((float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")), 0.0)
        per_cycle = 64 if "avx512f" in info else 32 if " fma" in info else 8
        cores = os.cpu_count() or 1
        return cores * mhz / 1e3 * per_cycle, f"{cores} cores × {mhz / 1e3:.2f} GHz × {per_cycle} FLOP/cycle"
    known = {"H100": 67_000.0, "H200": 67_000.0, "A100": 19_500.0}  # SXM fp32 GFLOP/s
    kind = getattr(d, "device_kind", "")
    for k, v in known.items():
        if k in kind:
            return v, f"{kind} fp32 (no tensor cores)"
    return 0.0, kind


def flops(jitted, *args) -> float:
    """FLOPs of one call of a jitted function according to XLA's cost analysis (0 when unavailable)."""
    try:
        cost = jitted.lower(*args).cost_analysis()  # HLO-level estimate: no second compilation
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))
    except Exception:  # noqa: BLE001 — cost analysis is best-effort across backends
        return 0.0


def measure(fn: Callable[[], object], repeats: int, block: Callable = jax.block_until_ready) -> dict:
    """Time ``fn`` once (compile + run) and then ``repeats`` times (``block`` waits for its result).

    Returns ``{"compile_s", "times" (s), "median_s", "min_s", "others_cpu"}`` where ``others_cpu`` is the
    fraction of the machine's cores that *other* processes kept busy during the timed repeats (> 0.1 means
    the numbers are disturbed).
    """
    t = time.perf_counter()
    block(fn())
    compile_s = time.perf_counter() - t
    busy0, own0, wall0 = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - wall0
    others = _others(busy0, own0, wall)
    return {"compile_s": compile_s, "times": times, "median_s": statistics.median(times), "min_s": min(times),
            "others_cpu": others}


HEADER = (f"{'benchmark':36s} {'img/s med':>10s} {'img/s best':>10s} {'compile s':>10s} {'GFLOP/s':>8s} "
          f"{'% peak':>7s}  note")


def line(name: str, images: int, m: dict, flop: float = 0.0) -> str:
    """One result row: images/s (median, best), compile s, achieved GFLOP/s and % of peak at the median,
    and ``DISTURBED`` when other processes used > 10% of the machine meanwhile."""
    peak, _ = peak_gflops()
    gf = flop / m["median_s"] / 1e9 if flop else 0.0
    note = f"DISTURBED (others used {100 * m['others_cpu']:.0f}% of the CPU)" if m["others_cpu"] > 0.1 else ""
    return (f"{name:36s} {images / m['median_s']:10.1f} {images / m['min_s']:10.1f} {m['compile_s']:10.1f} "
            f"{gf:8.1f} {100 * gf / peak if peak and gf else 0.0:6.1f}%  {note}")


def banner() -> str:
    peak, how = peak_gflops()
    d = jax.devices()[0]
    return (f"{d.platform} ×{len(jax.devices())} ({getattr(d, 'device_kind', '')}), jax {jax.__version__}; "
            f"peak {peak:.0f} GFLOP/s fp32 ({how}); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")


def once(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Run ``fn`` once: ``(result, wall seconds, others_cpu)`` (see :func:`measure`)."""
    busy0, own0, t = _busy_cpu_s(), _own_cpu_s(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    return out, wall, _others(busy0, own0, wall)


def disturbed(others: float) -> str:
    return f"  DISTURBED (others used {100 * others:.0f}% of the CPU)" if others > 0.1 else ""


def serve(fn: Callable[[], object], block: Callable = jax.block_until_ready) -> None:
    """Step server for step-interleaved comparisons (benchmarks/at_step_vs_pytorch.py ``--interleave``).

    Runs ``fn`` once (warm-up/compile), prints ``READY <seconds>``, then for every ``step`` line on stdin
    runs ``fn`` once and prints ``<seconds> <others_cpu>`` (see :func:`once`); ``quit`` or end of input stops.
    """
    t = time.perf_counter()
    block(fn())
    print(f"READY {time.perf_counter() - t:.3f}", flush=True)
    for cmd in sys.stdin:
        if cmd.strip() != "step":
            break
        _, wall, others = once(lambda: block(fn()))
        print(f"{wall:.6f} {others:.4f}", flush=True)
