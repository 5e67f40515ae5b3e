"""Figures of the RiFT paper: MRC per module (Fig. 3) and the α interpolation curve (Fig. 1)."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rwsjax.report.writers import save_figure  # noqa: E402


def mrc_bar_chart(rows: Sequence[dict], path: str, title: str = "Module robust criticality") -> None:
    """Bar chart of MRC per module in forward order; the least critical module is highlighted."""
    names = [r["module"] for r in rows]
    values = [r["mrc"] for r in rows]
    lowest = min(range(len(values)), key=values.__getitem__)
    fig, ax = plt.subplots(figsize=(max(6, 0.38 * len(rows)), 3.6))
    colors = ["tab:orange" if i == lowest else "tab:blue" for i in range(len(rows))]
    ax.bar(range(len(rows)), values, color=colors)
    ax.set_xticks(range(len(rows)), names, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("MRC (increase of robust loss)")
    ax.set_title(title)
    save_figure(fig, path)
    plt.close(fig)


def alpha_curve(sweep: Sequence[dict], alpha_star: float, path: str, acceptance: float | None = None) -> None:
    """Validation clean vs adversarial accuracy (%) along θ_α = (1−α)θ_AT + αθ_FT; ``acceptance`` (%): the
    α rule's line, θ_AT's validation adversarial accuracy − tolerance (points left of it are rejected)."""
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    if acceptance is not None:
        ax.axvline(acceptance, color="tab:gray", ls="--", lw=1,
                   label=f"acceptance: adv. ≥ {acceptance:.2f}%")
    xs = [s["robust_accuracy"] for s in sweep]
    ys = [s["clean_accuracy"] for s in sweep]
    ax.plot(xs, ys, "o-", color="tab:blue")
    for s in sweep:
        ax.annotate(f"{s['alpha']:.1f}", (s["robust_accuracy"], s["clean_accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    star = min(sweep, key=lambda s: abs(s["alpha"] - alpha_star))
    ax.plot([star["robust_accuracy"]], [star["clean_accuracy"]], "*", ms=14, color="tab:red", label="α*")
    ax.set_xlabel("validation adversarial accuracy (%)")
    ax.set_ylabel("validation standard accuracy (%)")
    ax.set_title("RiFT interpolation θ_AT → θ_FT")
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)


def training_curves(history: Sequence[dict], path: str, title: str) -> None:
    """Per-epoch training loss and validation accuracies."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    epochs = [h["epoch"] for h in history]
    a1.plot(epochs, [h["train_loss"] for h in history], "o-")
    a1.set_xlabel("epoch")
    a1.set_ylabel("train loss")
    for key in ("val_clean_accuracy", "val_robust_accuracy"):
        if key in history[0]:
            a2.plot(epochs, [h[key] for h in history], "o-", label=key[4:])
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation accuracy (%)")
    a2.legend()
    fig.suptitle(title)
    save_figure(fig, path)
    plt.close(fig)
