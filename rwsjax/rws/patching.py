"""Patching models with robust weight signatures, and BN re-estimation.

Cai, Zhang & Wang (ICML 2023): a target model gains robustness to
corruptions c by adding their signatures,

    θ = θ_target + Σ_c λ_c · RWS_c                 (mode="sum")
    θ = θ_target + (Σ_c λ_c · RWS_c) / C           (mode="mean", C = number of entries)

Each coefficient is applied exactly once.  The official implementation
(``model_patching.py::decompose`` of VITA-Group/Robust_Weight_Signatures)
multiplies ``θ_c − θ_pre`` by ``weight[idx]`` and then the projected vectors
by ``diag(weight)`` again, i.e. it effectively patches with λ_c²; this
module follows the paper's equation instead.

Signatures touch only the listed parameter leaves; BatchNorm ``batch_stats``
are never modified by patching (use :func:`reestimate_batch_stats`), except
by the official code's BN/shortcut transplant (``patch(..., transplant_from=)``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rwsjax.models.batch_norm import BatchNorm
from rwsjax.rws.signatures import Signature, is_shortcut, leaf_index
from rwsjax.weights.modules import get_leaf, module_of, set_leaf

PyTree = Any

_MODES = ("sum", "mean")


class SignatureMismatchError(ValueError):
    """A signature does not fit a model (architecture, missing layer or shape)."""


def _split(variables: Mapping) -> tuple[Mapping, bool]:
    """(params tree, whether ``variables`` is a ``{"params": ...}`` collection dict)."""
    if isinstance(variables, Mapping) and "params" in variables and isinstance(variables["params"], Mapping):
        return variables["params"], True
    return variables, False


def _mismatches(signature: Signature, params: Mapping, index: Mapping[str, tuple]) -> list[str]:
    out = []
    for name, shape in signature.meta["layers"].items():
        path = index.get(name)
        if path is None:
            out.append(f"{name}: in the signature but not in the model")
            continue
        leaf = get_leaf(params, path)
        mshape = tuple(int(d) for d in getattr(leaf, "shape", np.shape(leaf)))
        if tuple(shape) != mshape:
            out.append(f"{name}: signature shape {tuple(shape)} vs model {mshape}")
            continue
        dtype = np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype))
        if not np.issubdtype(dtype, np.floating):
            out.append(f"{name}: model leaf has dtype {dtype}, expected a float dtype")
    return out


def _describe(signature: Signature) -> str:
    c = signature.meta.get("corruption")
    return f"signature {c!r}" if c else "signature"


def check_compatible(signature: Signature, variables: PyTree, *, architecture: str | None = None) -> None:
    """Check that ``signature`` can patch ``variables``.

    Args:
      signature: a :class:`~rwsjax.rws.signatures.Signature`.
      variables: ``{"params": ..., "batch_stats": ...}`` or a bare params
        tree; leaves may be arrays or ``jax.ShapeDtypeStruct`` (only shapes
        and dtypes are read).
      architecture: if given, must equal ``signature.meta["architecture"]``.

    Raises:
      SignatureMismatchError: naming the first mismatching layer in signature
        order, e.g. ``"layer1.0.conv1.kernel: signature shape (3, 3, 16, 16)
        vs model (3, 3, 32, 32)"`` or ``"features.0.kernel: in the signature
        but not in the model"`` (plus how many more mismatch), and/or the
        architecture mismatch.
    """
    params, _ = _split(variables)
    problems = _mismatches(signature, params, leaf_index(params))
    parts = []
    sig_arch = signature.meta.get("architecture")
    if architecture is not None and sig_arch != architecture:
        parts.append(f"{_describe(signature)} is for architecture {sig_arch!r}, the model is {architecture!r}")
    if problems:
        more = f" (and {len(problems) - 1} more mismatching layers)" if len(problems) > 1 else ""
        parts.append(f"{_describe(signature)} does not fit the model: first mismatching layer "
                     f"{problems[0]}{more}")
    if parts:
        raise SignatureMismatchError("; ".join(parts))


def _coefficient(lam) -> float:
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"patch coefficient must be a real number, got {lam!r}") from None
    if not math.isfinite(lam):
        raise ValueError(f"patch coefficient must be finite, got {lam}")
    return lam


def _normalize_entries(signatures) -> list[tuple[Signature, float]]:
    entries = []
    for item in signatures:
        try:
            sig, lam = item
        except (TypeError, ValueError):
            raise TypeError(f"patch entries must be (Signature, coefficient) pairs, got {item!r}") from None
        if not isinstance(sig, Signature):
            raise TypeError(f"patch entries must be (Signature, coefficient) pairs, got {type(sig).__name__}")
        entries.append((sig, _coefficient(lam)))
    return entries


def patch(target_variables: PyTree, signatures: Sequence[tuple[Signature, float]], *,
          mode: str = "sum", lambda_twice: bool = False, transplant_from: Sequence[PyTree] = ()) -> PyTree:
    """θ = θ_target + Σ_c λ_c·RWS_c (``mode="sum"``) or + Σ_c λ_c·RWS_c / C (``mode="mean"``).

    Each λ_c multiplies its signature once (the official code multiplies twice,
    i.e. uses λ_c²; see the module docstring).  The two options give the
    official ``model_patching.py::decompose`` (``protocol=official``):
    ``lambda_twice`` patches with w_c² where w_c = λ_c (sum) or λ_c / C
    (mean: the official ``weight = alpha / len(state_dicts)``), and
    ``transplant_from`` (the robust models θ_c) replaces every BN and
    projection-shortcut tensor by their mean (:func:`transplant_mean` over
    :func:`transplant_modules`).

    Args:
      target_variables: ``{"params", "batch_stats", ...}`` or a bare params
        tree (nested dicts of float arrays, numpy or jax).
      signatures: ``[(Signature, λ), ...]``; C = ``len(signatures)`` (entries
        with λ = 0 count in C but are skipped, so they contribute nothing and
        an all-zero patch is the identity bit for bit).
      mode: ``"sum"`` or ``"mean"``.
      lambda_twice: square the weights as the official code does.
      transplant_from: variables of the robust models (``{"params",
        "batch_stats"}``, the target's structure); empty: no transplant.

    Returns:
      A new pytree of the same structure.  Patched leaves are new float32
      arrays computed as ``θ + (Σ λ_c·RWS_c)`` (``/ C`` for mean) in float32,
      of the input leaf's kind (jax array in → jax array out); all other
      leaves (including ``batch_stats``) are the input's own objects.  The
      input is never modified.

    Raises:
      ValueError: unknown ``mode``, non-finite λ.
      TypeError: entries not ``(Signature, λ)`` pairs.
      SignatureMismatchError: a signature (with λ ≠ 0) does not fit the model.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    entries = _normalize_entries(signatures)
    if lambda_twice:
        entries = [(sig, (lam / len(entries) if mode == "mean" else lam) ** 2) for sig, lam in entries]
        mode = "sum"
    if transplant_from:
        patched = patch(target_variables, entries, mode=mode)
        return transplant_mean(patched, list(transplant_from), transplant_modules(target_variables))
    params, is_collections = _split(target_variables)
    index = leaf_index(params)
    active = [(s, lam) for s, lam in entries if lam != 0.0]
    for sig, _ in active:
        check_compatible(sig, params)

    updates: dict[tuple, np.ndarray] = {}
    for sig, lam in active:
        for name, t in sig.tensors.items():
            path = index[name]
            term = np.float32(lam) * t
            updates[path] = term if path not in updates else updates[path] + term
    new_params = params
    count = np.float32(len(entries))
    for path, update in updates.items():
        old = get_leaf(params, path)
        if mode == "mean":
            update = update / count
        new = (np.asarray(jax.device_get(old), dtype=np.float32) + update).astype(np.float32)
        if isinstance(old, jax.Array):
            new = jnp.asarray(new)
        new_params = set_leaf(new_params, path, new)
    if new_params is params:  # nothing patched: still hand back a new container
        new_params = dict(params)
    if is_collections:
        return {**target_variables, "params": new_params}
    return new_params


class Patched:
    """A target model plus a list of signature patches; the target is kept.

    ``variables`` is always recomputed from the kept base as
    ``patch(base, entries, mode=mode)``, so removing patches gives back the
    target weights bit for bit (nothing is ever subtracted).

    Example::

        p = Patched(target).add(fog_sig, 1.0).add(snow_sig, 0.5)
        model.apply(p.variables, x)
        p.remove("fog")          # by corruption name, or by index
        assert p.remove(0).variables leaves == target leaves (bit for bit)

    Args:
      base: target variables (kept by reference; do not modify it in place).
      entries: initial ``[(Signature, λ), ...]``.
      mode: ``"sum"`` or ``"mean"`` (see :func:`patch`).

    Raises:
      ValueError / TypeError / SignatureMismatchError: as :func:`patch`, at
        construction or :meth:`add` time.
    """

    def __init__(self, base: PyTree, entries: Sequence[tuple[Signature, float]] = (), *,
                 mode: str = "sum"):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self._base = base
        self._mode = mode
        self._entries: list[tuple[Signature, float]] = []
        self._cache = None
        for sig, lam in _normalize_entries(entries):
            self.add(sig, lam)

    @property
    def base(self) -> PyTree:
        """The unpatched target variables."""
        return self._base

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def entries(self) -> tuple[tuple[Signature, float], ...]:
        """The current ``(Signature, λ)`` entries, in the order added."""
        return tuple(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, signature: Signature, coefficient: float = 1.0) -> Patched:
        """Append a patch (checked against the base); returns ``self``."""
        (sig, lam), = _normalize_entries([(signature, coefficient)])
        check_compatible(sig, self._base)
        self._entries.append((sig, lam))
        self._cache = None
        return self

    def _position(self, key: int | str) -> int:
        if isinstance(key, str):
            hits = [i for i, (s, _) in enumerate(self._entries) if s.meta.get("corruption") == key]
            if not hits:
                present = [s.meta.get("corruption") for s, _ in self._entries]
                raise KeyError(f"no patch for corruption {key!r}; present: {present}")
            if len(hits) > 1:
                raise ValueError(f"{len(hits)} patches have corruption {key!r} (indices {hits}); "
                                 "select one by index")
            return hits[0]
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"patch key must be an index or a corruption name, got {key!r}")
        n = len(self._entries)
        if not -n <= int(key) < n:
            raise IndexError(f"patch index {key} out of range for {n} patches")
        return int(key) % n

    def remove(self, key: int | str) -> Patched:
        """Drop the patch at index ``key`` or with ``meta["corruption"] == key``; returns ``self``.

        Raises:
          IndexError: index out of range.  KeyError: no such corruption.
          ValueError: several patches share that corruption name.
        """
        del self._entries[self._position(key)]
        self._cache = None
        return self

    def set_coefficient(self, key: int | str, coefficient: float) -> Patched:
        """Change λ of one patch (index or corruption name); returns ``self``."""
        i = self._position(key)
        self._entries[i] = (self._entries[i][0], _coefficient(coefficient))
        self._cache = None
        return self

    @property
    def variables(self) -> PyTree:
        """``patch(base, entries, mode=mode)`` (cached until the entries change)."""
        if self._cache is None:
            self._cache = patch(self._base, self._entries, mode=self._mode)
        return self._cache


def scale_sweep(target: PyTree, signature: Signature, lambdas: Iterable[float]
                ) -> Iterator[tuple[float, PyTree]]:
    """Yield ``(λ, patch(target, [(signature, λ)]))`` for each λ (lazily, one model at a time).

    Compatibility is checked before the first model is produced.

    Raises:
      SignatureMismatchError: the signature does not fit ``target`` (raised
        by this call, not at first iteration).
      ValueError: a non-finite λ (when reached).
    """
    check_compatible(signature, target)

    def gen():
        for lam in lambdas:
            lam = _coefficient(lam)
            yield lam, patch(target, [(signature, lam)])

    return gen()


# ---------------------------------------------------------------------------
# BatchNorm re-estimation.
# ---------------------------------------------------------------------------

#: Modules whose running statistics are re-estimated (both update them as m·old + (1 − m)·batch).
BATCH_NORMS = (nn.BatchNorm, BatchNorm)


@functools.partial(jax.jit, static_argnames=("model",))
def _accumulate_batch_stats(acc, variables, images, weight, *, model):
    """acc + weight · (this batch's BN statistics), all BN layers at once.

    The model runs in train mode from all-zero running statistics; Flax BN
    writes ``m·0 + (1 − m)·batch``, so each batch statistic is recovered as
    ``new / (1 − m)``, with each layer's momentum m read from the module.
    """
    momenta: dict[tuple, float] = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, BATCH_NORMS) and context.method_name == "__call__":
            momenta[tuple(context.module.path)] = float(context.module.momentum)
        return next_fun(*args, **kwargs)

    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    x = images.astype(jnp.float32) / 255.0
    with nn.intercept_methods(record):
        _, updates = model.apply({**variables, "batch_stats": zeros}, x, train=True,
                                 mutable=["batch_stats"])

    def recover(path, new):
        keys = tuple(getattr(k, "key", str(k)) for k in path)
        if keys[:-1] not in momenta:
            raise ValueError(f"batch_stats leaf {'/'.join(keys)} does not belong to a BatchNorm "
                             "called in the forward pass")
        m = momenta[keys[:-1]]
        if m == 1.0:
            raise ValueError(f"BatchNorm {'/'.join(keys[:-1])} has momentum 1 (never updates)")
        return new.astype(jnp.float32) / jnp.float32(1.0 - m)

    batch = jax.tree_util.tree_map_with_path(recover, updates["batch_stats"])
    return jax.tree.map(lambda a, b: a + weight * b, acc, batch)


def reestimate_batch_stats(model: nn.Module, variables: PyTree, batches: Iterable[np.ndarray], *,
                           weighting: str = "batch") -> PyTree:
    """Re-estimate BatchNorm running statistics on ``batches`` (e.g. after patching).

    Every BN's running mean/var becomes the cumulative average of its
    per-batch statistics, with the network in train mode (each BN normalizes
    with its batch statistics, as PyTorch ``model.train()`` re-estimation
    does).  ``weighting="batch"`` averages batches equally (PyTorch BN with
    ``momentum=None``); ``weighting="sample"`` weights by batch size, as the
    official RWS ``tools.py::bn_update`` (momentum ``b/(n+b)``).  The
    variance is Flax's biased batch variance (what Flax itself stores in
    ``batch_stats``; PyTorch stores the unbiased one).

    Args:
      model: Flax Linen model; ``model.apply(v, x, train=True,
        mutable=["batch_stats"])`` must work.
      variables: ``{"params", "batch_stats", ...}``.
      batches: iterable of uint8 images ``[B, H, W, C]`` in 0..255 (divided
        by 255 here).  One jit compilation per distinct batch shape.
      weighting: ``"batch"`` or ``"sample"``.

    Returns:
      New variables with re-estimated float32 ``batch_stats`` (jax arrays);
      the other collections are the input's objects.  Variables without
      ``batch_stats`` (or with an empty one, e.g. VGG-16) are returned
      unchanged (the same object) and ``batches`` is not consumed.

    Raises:
      TypeError: a batch is not uint8.
      ValueError: a batch is not 4-D, no batches, unknown ``weighting``.
    """
    if weighting not in ("batch", "sample"):
        raise ValueError(f"weighting must be 'batch' or 'sample', got {weighting!r}")
    if not isinstance(variables, Mapping) or not jax.tree.leaves(variables.get("batch_stats", {})):
        return variables
    stats = variables["batch_stats"]
    acc = jax.tree.map(lambda s: jnp.zeros(jnp.shape(s), jnp.float32), stats)
    total = 0.0
    for batch in batches:
        batch = np.asarray(batch)
        if batch.dtype != np.uint8:
            raise TypeError(f"batches must be uint8 images [B, H, W, C], got dtype {batch.dtype}")
        if batch.ndim != 4 or batch.shape[0] == 0:
            raise ValueError(f"batches must be non-empty uint8 images [B, H, W, C], got shape {batch.shape}")
        w = 1.0 if weighting == "batch" else float(batch.shape[0])
        acc = _accumulate_batch_stats(acc, variables, batch, jnp.float32(w), model=model)
        total += w
    if total == 0.0:
        raise ValueError("reestimate_batch_stats: no batches given")
    new_stats = jax.tree.map(lambda a, s: (a / jnp.float32(total)).astype(jnp.result_type(s)), acc, stats)
    return {**variables, "batch_stats": new_stats}


# ---------------------------------------------------------------------------
# The official code's BatchNorm / shortcut handling (``protocol=official``).
# ---------------------------------------------------------------------------

def _modules_of(tree: Mapping) -> set[str]:
    return {module_of(path) for path in leaf_index(tree).values() if len(path) > 1}


def transplant_modules(variables: PyTree) -> list[str]:
    """Dotted modules the official RWS patch takes from the robust models: every BatchNorm, every shortcut.

    The official ``decompose`` (VITA-Group/Robust_Weight_Signatures ``model_patching.py:35-36``) replaces every
    state-dict tensor whose key contains ``bn`` or ``downsample`` (BN scale, bias, running statistics; the
    torchvision projection shortcut's conv and BN) by the mean over the robust models.  By module type that
    is every BatchNorm (a module with ``batch_stats``) and every projection shortcut
    (:func:`rwsjax.rws.signatures.is_shortcut`: kuangliu ``shortcut``, torchvision ``downsample``).

    Returns:
      Sorted dotted names, e.g. ResNet-18 ``["bn1", "layer1.0.bn1", ..., "layer2.0.shortcut.0",
      "layer2.0.shortcut.1", ...]``; ``[]`` for VGG-16 (no BN, no shortcut).
    """
    params, _ = _split(variables)
    stats = variables.get("batch_stats", {}) if isinstance(variables, Mapping) else {}
    return sorted(_modules_of(stats) | {m for m in _modules_of(params) if is_shortcut(m)})


def transplant_mean(target: PyTree, sources: Sequence[PyTree], modules: Sequence[str]) -> PyTree:
    """``target`` with every leaf of ``modules`` (params and batch_stats) replaced by the mean over ``sources``.

    The official RWS patch's BN/shortcut rule (``model_patching.py:35-36``, ``torch.mean`` of the stacked
    robust models' tensors), with :func:`transplant_modules` as ``modules``.

    Args:
      target: ``{"params", "batch_stats", ...}`` (the model being patched).
      sources: one or more variables of the same structure (the robust models θ_c of the patch).
      modules: dotted module names.

    Returns:
      New variables; replaced leaves are float32 (mean taken in float64), the rest are ``target``'s objects.

    Raises:
      ValueError: no sources, or a module has no leaf in ``target``.
    """
    if not sources:
        raise ValueError("transplant_mean: no source models")
    out = dict(target)
    found = set()
    for collection in ("params", "batch_stats"):
        tree = target.get(collection)
        if not tree:
            continue
        new = tree
        for path in leaf_index(tree).values():
            module = module_of(path)
            if module not in modules:
                continue
            found.add(module)
            old = get_leaf(tree, path)
            mean = np.mean(np.stack([np.asarray(jax.device_get(get_leaf(s[collection], path)), np.float64)
                                     for s in sources]), axis=0).astype(np.float32)
            new = set_leaf(new, path, jnp.asarray(mean) if isinstance(old, jax.Array) else mean)
        out[collection] = new
    missing = sorted(set(modules) - found)
    if missing:
        raise ValueError(f"transplant_mean: module(s) {missing} not in the target model")
    return out


def blend_batch_stats(variables: PyTree, reference: PyTree, weight: float) -> PyTree:
    """Running statistics ``(1 − weight)·reference + weight·variables`` (the other collections: ``variables``').

    The official RWS patch for λ < 1 (``model_patching.py:142-145``): the re-estimated statistics are mixed
    with the patched model's own in proportion λ.
    """
    w = np.float32(weight)
    stats = jax.tree.map(lambda new, old: (np.float32(1) - w) * jnp.asarray(old, jnp.float32)
                         + w * jnp.asarray(new, jnp.float32), variables["batch_stats"], reference["batch_stats"])
    return {**variables, "batch_stats": stats}
