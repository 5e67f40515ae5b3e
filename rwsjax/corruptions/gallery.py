"""Gallery figure: one real CIFAR-10 test image under all 19 corruptions x 5 severities."""

from __future__ import annotations

import os

import numpy as np

from rwsjax.corruptions.core import corrupt
from rwsjax.corruptions.params import CORRUPTIONS, SEVERITIES

__all__ = ["gallery_grid", "save_gallery"]


def gallery_grid(image: np.ndarray, *, seed: int = 0, index: int = 0) -> np.ndarray:
    """All corruptions of one image: uint8 ``[19, 6, H, W, 3]`` (clean, then severities 1..5).

    Row order is `CORRUPTIONS`; ``image`` is uint8 ``[H, H, 3]``, H = 32 or 64.
    """
    rows = []
    for name in CORRUPTIONS:
        rows.append([image] + [corrupt(image, name, s, seed=seed, index=index) for s in SEVERITIES])
    return np.asarray(rows, dtype=np.uint8)


def save_gallery(
    out: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    index: int = 4,
    seed: int = 0,
    upscale: int = 4,
) -> str:
    """Writes the gallery PNG: rows = 19 corruptions, columns = clean + severities 1-5.

    Uses CIFAR-10 test image `index` (position in the TFDS test split) read
    with `rwsjax.data.sources.load_split`; each 32x32 image is upscaled
    ``upscale`` times with nearest neighbour. Rendered with matplotlib (Agg).

    Returns:
      The output path.

    Raises:
      DatasetNotFoundError: CIFAR-10 is not prepared in `data_dir`.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    import tensorflow_datasets as tfds

    from rwsjax.data.sources import load_split, resolve_data_dir

    split = load_split("cifar10", "test", data_dir, [index], progress=False)
    info = tfds.data_source("cifar10", split="test", data_dir=resolve_data_dir(data_dir)).dataset_info
    names = info.features["label"].names
    grid = gallery_grid(split.images[0], seed=seed, index=index)
    n_rows, n_cols = grid.shape[:2]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 1.35 + 1.6, n_rows * 1.35 + 0.8))
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            big = np.repeat(np.repeat(grid[r, c], upscale, axis=0), upscale, axis=1)
            ax.imshow(big, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {c}", fontsize=10)
            if c == 0:
                ax.set_ylabel(CORRUPTIONS[r].replace("_", " "), fontsize=9, rotation=0, ha="right", va="center")
    label = names[int(split.labels[0])] if names else str(int(split.labels[0]))
    fig.suptitle(f"CIFAR-10-C corruptions (32x32 constants), CIFAR-10 test image {index} ({label}), seed {seed}",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
