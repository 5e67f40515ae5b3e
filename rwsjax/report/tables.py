"""Markdown tables shaped like the papers' tables."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _fmt(v, digits=2):
    if v is None:
        return "n/c"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rift_table(results: dict) -> str:
    """RiFT Table 1 layout: model, method, clean / OOD / adversarial test accuracy (%) and their Δ.

    ``OOD`` prints ``n/c`` (not computed) when no corrupted data was evaluated.
    """
    at, rift = results["at"], results["rift"]
    name = f"{results['model']} ({results['dataset']})"

    def delta(key):
        if at.get(key) is None or rift.get(key) is None:
            return None
        return f"{rift[key] - at[key]:+.2f}"

    rows = [
        [name, "AT", at["clean_accuracy"], at.get("ood_accuracy"), at["robust_accuracy"]],
        [name, f"AT + RiFT (α*={results['alpha_star']:.1f}, {', '.join(results['finetuned_modules'])})",
         rift["clean_accuracy"], rift.get("ood_accuracy"), rift["robust_accuracy"]],
        [name, "Δ", delta("clean_accuracy"), delta("ood_accuracy"), delta("robust_accuracy")],
    ]
    return markdown_table(["model", "method", "std acc. (%)", "OOD acc. (%)", "adv. acc. (%)"], rows)


def mrc_table(rows: Sequence[dict]) -> str:
    """All modules sorted by MRC (ascending: the first is the fine-tuning candidate)."""
    body = [[i + 1, r["module"], "×".join(map(str, r["shape"])), f"{r['mrc']:.4f}", r["robust_accuracy_at"],
             r["robust_accuracy_at_max"], r["accuracy_drop"]]
            for i, r in enumerate(sorted(rows, key=lambda r: r["mrc"]))]
    return markdown_table(["rank", "module", "kernel shape", "MRC (Δ loss)", "robust acc. θ_AT (%)",
                           "robust acc. at max (%)", "drop (pts)"], body)


def alpha_table(sweep: Sequence[dict], alpha_star: float) -> str:
    body = [[f"{s['alpha']:.1f}" + (" ←α*" if abs(s["alpha"] - alpha_star) < 1e-9 else ""),
             s["clean_accuracy"], s["robust_accuracy"]] for s in sweep]
    return markdown_table(["α", "val std acc. (%)", "val adv. acc. (%)"], body)


def ood_table(summary: dict) -> str:
    """Per-corruption accuracy (mean over severities) for each model, plus the summary means."""
    models = list(summary)
    names = list(next(iter(summary.values()))["per_corruption"])
    rows = [[n] + [summary[m]["per_corruption"].get(n) for m in models] for n in names]
    rows += [[f"**{k}**"] + [summary[m].get(k) for m in models] for k in ("mean_15", "mean_rift18", "mean_19")]
    return markdown_table(["corruption"] + [f"{m} acc. (%)" for m in models], rows)


def rws_table(rows: Sequence[dict]) -> str:
    """RWS main-table layout: per corruption and method, storage (MB on disk), TA and RA (%), then means.

    ``rows``: dicts with ``corruption``, ``method``, ``storage_mb`` (None = not stored), ``ta``, ``ra``.
    """
    body = [[r["corruption"], r["method"], None if r["storage_mb"] is None else f"{r['storage_mb']:.3f}",
             r["ta"], r["ra"]] for r in rows]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        body.append(["**mean**", m, None if sel[0]["storage_mb"] is None else
                     f"{float(np.mean([r['storage_mb'] for r in sel])):.3f}",
                     float(np.mean([r["ta"] for r in sel])), float(np.mean([r["ra"] for r in sel]))])
    return markdown_table(["corruption", "method", "storage (MB)", "TA (%)", "RA (%)"], body)
