"""Analyses of robust weight signatures (Cai, Zhang & Wang, ICML 2023).

* :func:`relative_difference` — per-layer ‖θ_a − θ_b‖/‖θ_b‖ over kernels, the
  profile behind the paper's observation 1 (robust and clean models differ
  mostly in the shallow layers).
* :func:`cosine_similarity_matrix` — pairwise cosine similarity of
  signatures (how related the corruption-specific directions are).
* :func:`storage_report`, :func:`full_model_bytes` — signature size on disk
  versus a float32 copy of the whole model ("N× smaller").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rwsjax.rws.signatures import Signature, leaf_index

PyTree = Any


def _kernel(params: Mapping, index: Mapping[str, tuple], module: str, what: str) -> np.ndarray:
    from rwsjax.weights.modules import get_leaf
    path = index.get(f"{module}.kernel")
    if path is None:
        valid = sorted(k[: -len(".kernel")] for k in index if k.endswith(".kernel"))
        raise ValueError(f"module {module!r} has no kernel in {what}; modules with kernels: {valid}")
    return np.asarray(jax.device_get(get_leaf(params, path)), dtype=np.float64)


def relative_difference(params_a: Mapping, params_b: Mapping, modules: Sequence[str]) -> dict[str, float]:
    """``{module: ‖W_a − W_b‖_F / ‖W_b‖_F}`` over each module's kernel, in ``modules`` order.

    Args:
      params_a, params_b: ``"params"`` collections (nested dicts).
      modules: dotted module names (e.g. :func:`~rwsjax.rws.signatures.conv_modules`).

    Returns:
      Python floats (computed in float64); ``inf`` where ‖W_b‖ = 0 and the
      kernels differ, 0.0 where both are zero.

    Raises:
      ValueError: a module has no kernel in either tree, or kernel shapes differ.
    """
    ia, ib = leaf_index(params_a), leaf_index(params_b)
    out: dict[str, float] = {}
    for m in modules:
        a = _kernel(params_a, ia, m, "params_a")
        b = _kernel(params_b, ib, m, "params_b")
        if a.shape != b.shape:
            raise ValueError(f"{m}.kernel: shape {a.shape} in params_a vs {b.shape} in params_b")
        num, den = float(np.linalg.norm(a - b)), float(np.linalg.norm(b))
        out[m] = num / den if den > 0 else (0.0 if num == 0 else float("inf"))
    return out


def cosine_similarity_matrix(signatures: Mapping[str, Mapping[str, np.ndarray] | Signature]
                             ) -> tuple[list[str], np.ndarray]:
    """Pairwise cosine similarity of signatures over their common tensors.

    Each signature is flattened into one vector over the tensor names present
    in all of them (in the first signature's order); dots are accumulated in
    float64 tensor by tensor (no concatenation).

    Args:
      signatures: ``{label: {tensor name: array}}`` or ``{label: Signature}``.

    Returns:
      ``(labels, S)``: ``S`` float64 ``[C, C]``, symmetric, ones on the
      diagonal; NaN in rows/columns of an all-zero signature.

    Raises:
      ValueError: no signatures, no common tensor names, or a common tensor
        has different shapes across signatures.
    """
    if not signatures:
        raise ValueError("cosine_similarity_matrix: no signatures")
    labels = list(signatures)
    tensors = [s.tensors if isinstance(s, Signature) else s for s in signatures.values()]
    common = [k for k in tensors[0] if all(k in t for t in tensors[1:])]
    if not common:
        raise ValueError("cosine_similarity_matrix: the signatures share no tensor names")
    c = len(labels)
    gram = np.zeros((c, c), np.float64)
    for k in common:
        shapes = {tuple(np.shape(t[k])) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(f"cosine_similarity_matrix: {k} has different shapes {sorted(shapes)}")
        x = np.stack([np.asarray(jax.device_get(t[k]), dtype=np.float64).ravel() for t in tensors])
        gram += x @ x.T
    norms = np.sqrt(np.diag(gram))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = gram / np.outer(norms, norms)
    sim[np.outer(norms, norms) == 0] = np.nan
    np.fill_diagonal(sim, np.where(norms > 0, 1.0, np.nan))
    return labels, sim


def full_model_bytes(params: PyTree) -> int:
    """Bytes of all leaves of ``params`` stored as float32 (4 bytes per value)."""
    return int(sum(4 * int(np.prod(np.shape(x))) for x in jax.tree.leaves(params)))


def storage_report(paths: Iterable[str | os.PathLike], *, reference_bytes: int | None = None
                   ) -> dict[str, dict[str, float | int | None]]:
    """Sizes on disk of signature files.

    Args:
      paths: files (e.g. one ``.safetensors`` signature per corruption).
      reference_bytes: e.g. :func:`full_model_bytes` of the model's params,
        for the "N× smaller" ratio.

    Returns:
      ``{path: {"bytes": size, "times_smaller": reference_bytes / size or None}}``.

    Raises:
      FileNotFoundError: a path does not exist.
    """
    out: dict[str, dict[str, float | int | None]] = {}
    for p in paths:
        p = os.fspath(p)
        size = os.path.getsize(p)
        ratio = (reference_bytes / size) if (reference_bytes is not None and size > 0) else None
        out[p] = {"bytes": int(size), "times_smaller": ratio}
    return out
