"""Figures of the RWS paper's analyses: layer profile, signature similarity, λ, k and bit sweeps."""

from __future__ import annotations

from typing import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rwsjax.report.writers import save_figure  # noqa: E402


def layer_profile(profile: dict, layers: Sequence[str], path: str, title: str) -> None:
    """Observation 1: ‖θ_c − θ_clean‖ / ‖θ_clean‖ per conv layer (forward order), one line per corruption."""
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(layers)), 3.6))
    for name, values in profile.items():
        ax.plot(range(len(layers)), [values[l] for l in layers], "o-", ms=3, label=name)
    ax.set_xticks(range(len(layers)), layers, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("‖θ_c − θ_clean‖ / ‖θ_clean‖")
    ax.set_title(title)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def similarity_matrix(rows: Sequence[str], cols: Sequence[str], matrix: np.ndarray, path: str, title: str) -> None:
    """Observations 2–3: cosine similarity of signatures (annotated heat map)."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 0.8 + 0.7 * len(rows)))
    im = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
    plt.close(fig)


def lambda_sweep(sweep: dict, path: str) -> None:
    """Clean (TA) and corrupted (RA) test accuracy of θ_clean + λ·RWS_c against λ."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.5, 3.3))
    for name, points in sweep.items():
        lams = [p["lam"] for p in points]
        a1.plot(lams, [p["ra"] for p in points], "o-", ms=3, label=name)
        a2.plot(lams, [p["ta"] for p in points], "o-", ms=3, label=name)
    a1.set_xlabel("λ")
    a1.set_ylabel("corrupted test acc. RA (%)")
    a2.set_xlabel("λ")
    a2.set_ylabel("clean test acc. TA (%)")
    a1.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def k_and_bits(k_sweep: dict, bits_sweep: dict, path: str) -> None:
    """RA against the number k of shallowest conv layers kept, and against bits (with stored size)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.5, 3.3))
    for name, points in k_sweep.items():
        a1.plot([p["k"] for p in points], [p["ra"] for p in points], "o-", ms=3, label=name)
    a1.set_xlabel("k (shallowest conv layers kept)")
    a1.set_ylabel("RA (%)")
    a1.legend(fontsize=7)
    for name, points in bits_sweep.items():
        a2.plot([p["bytes"] / 1e3 for p in points], [p["ra"] for p in points], "o-", ms=3, label=name)
        for p in points:
            a2.annotate(f"{p['bits']}b", (p["bytes"] / 1e3, p["ra"]), fontsize=6, textcoords="offset points",
                        xytext=(2, 2))
    a2.set_xscale("log")
    a2.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a2.set_xlabel("signature file size (kB, log)")
    a2.set_ylabel("RA (%)")
    save_figure(fig, path)
    plt.close(fig)
