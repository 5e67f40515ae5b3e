"""Atomic artifact writers: write to a temporary file beside the target, then rename.

In a multi-process run only process 0 writes; every process then waits at a
barrier, so a file is visible to all processes when any writer returns (the
workdir is on a shared filesystem, see :mod:`rwsjax.distributed`).
"""

from __future__ import annotations

import json
from typing import Any

from rwsjax.atomic import atomic_path
from rwsjax import distributed


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader sees the old or the new file, never half)."""
    distributed.on_main(f"write {path}", _write_text, path, text)


def _write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: str, obj: Any) -> None:
    """Atomic JSON (indent 2, NaN written as null)."""
    write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def write_local_json(path: str, obj: Any) -> None:
    """Atomic JSON written by *this* process (no barrier): per-process progress such as finished MRC rows."""
    _write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def _clean(obj):
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _clean(obj.item())
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    return obj


def save_figure(fig, path: str) -> None:
    """Save a matplotlib figure atomically as PNG (process 0 only)."""
    distributed.on_main(f"figure {path}", _save_figure, fig, path)


def _save_figure(fig, path: str) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
