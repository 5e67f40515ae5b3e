"""Markdown tables shaped like the papers' tables."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rwsjax.report.intervals import format_delta
from rwsjax.train import regimes


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


def regime_label(at: dict) -> str:
    """``"TRADES (β=6)"``, ``"PGD-AT + AWP (γ=0.01)"``… from an ``at`` config block (a dict).

    The name is the regime's ``label`` in :data:`rwsjax.train.regimes.REGIMES` (an unknown regime prints
    as it is written); β is shown for the regimes with a pair objective.
    """
    regime = at.get("regime", "pgd_at")
    spec = regimes.REGIMES.get(regime)
    label = regime if spec is None else spec.label
    if spec is not None and spec.objective is not None and at.get("beta") is not None:
        label += f" (β={at['beta']:g})"
    if at.get("awp"):
        label += f" + AWP (γ={at['awp_gamma']:g})"
    return label


def _delta(a, b, interval: dict | None = None):
    """``b − a`` as ``+x.xx``, with its 95% interval when given (None when either is missing)."""
    if a is None or b is None:
        return None
    return format_delta(interval) if interval is not None else f"{b - a:+.2f}"


def interval_note(intervals: dict, n: int) -> str:
    """The sentence under a table whose Δ cells carry paired bootstrap intervals (:mod:`~rwsjax.report.intervals`)."""
    ci = next(iter(intervals.values()), None)
    if ci is None:
        return ""
    zero = [k.replace("_accuracy", "").replace("robust", "adv.").replace("clean", "std") for k, v in intervals.items()
            if v["contains_zero"]]
    return (f"Δ = θ_RiFT − θ_AT in points, [95% paired bootstrap interval] over the same {n:,} test images "
            f"({ci['resamples']:,} resamples, seed {ci['seed']}); "
            + (f"the interval contains 0 for: {', '.join(zero)} (no change detectable at this test size)."
               if zero else "no interval contains 0."))


def _aa(m: dict):
    return (m.get("autoattack") or {}).get("autoattack_accuracy")


def rift_table(results: dict) -> str:
    """RiFT Table 1 layout: model, method, clean / OOD / adversarial test accuracy (%) and their Δ (with the
    paired bootstrap 95% interval of ``results["intervals"]`` where there is one), plus AutoAttack
    accuracy when it was computed.

    ``OOD`` prints ``n/c`` (not computed) when no corrupted data was evaluated.
    """
    at, rift, intervals = results["at"], results["rift"], results.get("intervals") or {}
    name = f"{results['model']} ({results['dataset']})"
    with_aa = _aa(at) is not None

    def row(method, m):
        return [name, method, m["clean_accuracy"], m.get("ood_accuracy"), m["robust_accuracy"]] + (
            [_aa(m)] if with_aa else [])

    rows = [row("AT", at),
            row(f"AT + RiFT (α*={results['alpha_star']:.1f}, {', '.join(results['finetuned_modules'])})", rift),
            [name, "Δ"] + [_delta(at.get(k), rift.get(k), intervals.get(k)) for k in ("clean_accuracy", "ood_accuracy",
                                                                                       "robust_accuracy")]
            + ([_delta(_aa(at), _aa(rift))] if with_aa else [])]
    return markdown_table(["model", "method", "std acc. (%)", "OOD acc. (%)", "adv. acc. (%)"]
                          + ([f"AA {at['autoattack'].get('version', '')} acc. (%)"] if with_aa else []), rows)


def regimes_table(results: Sequence[dict]) -> str:
    """RiFT Table 2 layout: one row per training regime, clean / OOD / adversarial test accuracy (%) of
    θ_AT, of θ_RiFT and the change, from several runs' ``results.json`` (older ones without a ``regime``
    were PGD-AT)."""
    body = []
    for r in results:
        at, rift = r["at"], r["rift"]
        cells = []
        for key in ("clean_accuracy", "ood_accuracy", "robust_accuracy"):
            a, b = at.get(key), rift.get(key)
            cells += [a, b, _delta(a, b, (r.get("intervals") or {}).get(key))]
        body.append([r.get("regime", "PGD-AT"), f"{r['model']} ×{r.get('width_multiplier', 1)}",
                     f"{r['alpha_star']:.1f}", ", ".join(r["finetuned_modules"]), *cells])
    header = ["regime", "model", "α*", "fine-tuned"]
    for what in ("std", "OOD", "adv."):
        header += [f"{what} AT (%)", f"{what} +RiFT (%)", "Δ"]
    return markdown_table(header, body)


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
    """RWS main-table layout: per corruption and method, storage (MB on disk), TA and RA (%), their change
    from the clean model with its paired bootstrap 95% interval (where the row has ``ta_delta`` /
    ``ra_delta``, :func:`rwsjax.report.intervals.paired_bootstrap`), then means.

    ``rows``: dicts with ``corruption``, ``method``, ``storage_mb`` (None = not stored), ``ta``, ``ra``,
    optionally ``ta_delta`` / ``ra_delta``.
    """
    with_ci = any("ra_delta" in r for r in rows)
    body = [[r["corruption"], r["method"], None if r["storage_mb"] is None else f"{r['storage_mb']:.3f}",
             r["ta"], r["ra"]] + ([format_delta(r.get("ta_delta")), format_delta(r.get("ra_delta"))]
                                  if with_ci else []) for r in rows]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        body.append(["**mean**", m, None if sel[0]["storage_mb"] is None else
                     f"{float(np.mean([r['storage_mb'] for r in sel])):.3f}",
                     float(np.mean([r["ta"] for r in sel])), float(np.mean([r["ra"] for r in sel]))]
                    + ([None, None] if with_ci else []))
    return markdown_table(["corruption", "method", "storage (MB)", "TA (%)", "RA (%)"]
                          + (["ΔTA vs clean [95% CI]", "ΔRA vs clean [95% CI]"] if with_ci else []), body)
