"""Robust Weight Signatures: extraction, quantization, fingerprints and the file format.

Cai, Zhang & Wang, "Robust Weight Signatures: Gaining Robustness as Easy as
Patching Weights?" (ICML 2023).  A model θ_pre is fine-tuned twice: on clean
data (θ_clean) and on data with corruption c (θ_c, "robust").  The robust
weight signature of c is the robust update with its component along the
clean update projected out, per tensor::

    v = θ_c − θ_pre,   a = θ_clean − θ_pre,
    RWS_c = proj⊥_a(v) = v − (⟨v, a⟩ / ⟨a, a⟩) · a.

Only the shallow conv layers carry the corruption-specific signal (the
paper's observation 1), so signatures are usually taken on the k shallowest
conv layers in forward order (:func:`conv_modules`, :func:`select_shallowest`).

Tensors are addressed by leaf name ``"<dotted module>.<leaf>"``, e.g.
``"features.0.kernel"``, ``"features.0.bias"``, ``"layer1.0.conv1.kernel"``
(see :mod:`rwsjax.weights.modules` for the dotted-name rule).  Conv kernels
are HWIO ``[kh, kw, in, out]``, dense kernels ``[in, out]``.

Everything here is pure numpy over nested-dict pytrees (jax arrays are
accepted and copied to host).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import operator
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rwsjax.atomic import atomic_path
from rwsjax.weights.modules import dotted_name, get_leaf, kernels

PyTree = Any

#: Version of the signature file layout written by :func:`save_signature`.
FORMAT_VERSION = 1
#: Value of ``meta["format"]``.
FORMAT_NAME = "rwsjax.rws.signature"
#: Key of the JSON metadata inside the safetensors header ``__metadata__``.
METADATA_KEY = "rwsjax_signature"


class SignatureFormatError(ValueError):
    """A signature file is not a valid rwsjax signature (corrupt, truncated, wrong version, ...)."""


# ---------------------------------------------------------------------------
# Pytree helpers shared with patching / analysis.
# ---------------------------------------------------------------------------

def _flat(tree: Mapping, prefix: tuple = ()):
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def leaf_index(params: Mapping) -> dict[str, tuple[str, ...]]:
    """``{"<dotted module>.<leaf>": params path}`` for every leaf of a nested-dict params tree.

    E.g. ``("layer1_0", "conv1", "kernel")`` → ``"layer1.0.conv1.kernel"``.
    """
    return {f"{dotted_name(path[:-1])}.{path[-1]}" if len(path) > 1 else str(path[0]): path
            for path, _ in _flat(params)}


def _module_leaves(params: Mapping) -> dict[str, list[tuple[str, ...]]]:
    """``{dotted module: [leaf paths]}``; within a module ``kernel`` first, the rest sorted."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for path, _ in _flat(params):
        out.setdefault(dotted_name(path[:-1]), []).append(path)
    for paths in out.values():
        paths.sort(key=lambda p: (p[-1] != "kernel", p[-1]))
    return out


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


# ---------------------------------------------------------------------------
# Projection and extraction.
# ---------------------------------------------------------------------------

def project_out(v, a) -> np.ndarray:
    """Remove from ``v`` its component along ``a``: ``v − (⟨v,a⟩/⟨a,a⟩)·a``.

    The RWS projection (paper Sec. 3, RWS_c = proj⊥ of θ_c − θ_pre w.r.t.
    θ_clean − θ_pre), applied to one tensor in dot-product form: no D×D
    projection matrix is formed (the official code builds ``aᵀa / aaᵀ``).

    Args:
      v: array of any shape (float; numpy or jax).
      a: array of the same shape.

    Returns:
      float32 numpy array of ``v``'s shape, orthogonal to ``a`` up to float32
      rounding.  Dots and the update are computed in float64.  If ``a`` is all
      zeros (⟨a,a⟩ = 0) ``v`` is returned unchanged (as float32), never NaN.

    Raises:
      ValueError: shapes differ, or ``v``/``a`` contain non-finite values.
    """
    v64 = np.asarray(_host(v), dtype=np.float64)
    a64 = np.asarray(_host(a), dtype=np.float64)
    if v64.shape != a64.shape:
        raise ValueError(f"project_out: shapes differ, v {v64.shape} vs a {a64.shape}")
    vf, af = v64.ravel(), a64.ravel()
    aa = float(np.dot(af, af))
    va = float(np.dot(vf, af))
    if not (math.isfinite(aa) and math.isfinite(va)):
        raise ValueError("project_out: non-finite values in v or a")
    if aa == 0.0:
        return v64.astype(np.float32)
    return (v64 - (va / aa) * a64).astype(np.float32)


def conv_modules(params: Mapping, order: Sequence[str]) -> list[str]:
    """Dotted names of the conv layers (4-D kernels) in forward order.

    Args:
      params: the ``"params"`` collection (nested dict).
      order: forward call order from :func:`rwsjax.weights.modules.call_order`.

    Returns:
      e.g. VGG-16 ``["features.0", "features.2", "features.5", ...]``; ResNet
      ``["conv1", "layer1.0.conv1", "layer1.0.conv2", ...]`` (a block's
      ``shortcut.0`` follows its ``conv2``).  Dense heads are excluded.

    Raises:
      ValueError: a kernel was never called in the forward pass (``order`` is stale).
    """
    found = kernels(params, order)
    return [name for name, path in found.items() if np.ndim(get_leaf(params, path)) == 4]


def select_shallowest(modules: Sequence[str], k: int | None) -> list[str]:
    """The first ``k`` of ``modules`` (forward order); ``k=None`` → all of them.

    Raises:
      ValueError: ``k`` outside ``1..len(modules)``.
      TypeError: ``k`` is not an int (or is a bool).
    """
    modules = list(modules)
    if k is None:
        return modules
    if isinstance(k, bool):
        raise TypeError(f"k must be an int in 1..{len(modules)} or None, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"k must be an int in 1..{len(modules)} or None, got {k!r}") from None
    if not 1 <= k <= len(modules):
        raise ValueError(f"k must be in 1..{len(modules)} (number of layers), got {k}")
    return modules[:k]


#: Dotted-name parts of a residual block's projection shortcut (kuangliu ``shortcut``, torchvision ``downsample``).
SHORTCUTS = ("shortcut", "downsample")


def is_shortcut(module: str) -> bool:
    """Whether dotted ``module`` belongs to a residual block's projection shortcut (``layer2.0.shortcut.0``)."""
    return any(part in SHORTCUTS for part in module.split("."))


def _unit(module: str) -> str:
    """The unit the official ``select_layers`` counts: a residual block ``layerX.Y``, else the layer itself."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[0].startswith("layer") and parts[1].isdigit():
        return ".".join(parts[:2])
    return module


def _units(modules: Sequence[str]) -> list[str]:
    """The units of ``modules`` in forward order, each once."""
    return list(dict.fromkeys(_unit(m) for m in modules))


def count_blocks(modules: Sequence[str]) -> int:
    """How many units (the stem and other plain conv layers, residual blocks) ``modules`` span."""
    return len(_units(modules))


def select_blocks(modules: Sequence[str], k: int | None, *, shortcuts: bool = True) -> list[str]:
    """The conv layers of the first ``k`` units of ``modules`` (forward order), as the official RWS code counts.

    The official ``select_layers`` (VITA-Group/Robust_Weight_Signatures ``tools.py:206-255``) counts, on a
    ResNet, the stem conv as one unit and every residual block (``layer1.0``, ``layer1.1``, ...) as one unit
    (all of its convs); on VGG-16 every conv layer is a unit, so there it equals :func:`select_shallowest`.
    ``select_blocks(resnet18_convs, 3)`` → ``["conv1", "layer1.0.conv1", "layer1.0.conv2",
    "layer1.1.conv1", "layer1.1.conv2"]``.

    Args:
      modules: conv layers in forward order (:func:`conv_modules`).
      k: number of units, ``None`` → all.
      shortcuts: keep the blocks' projection-shortcut convs (False: drop them, as the official code
        replaces those tensors by the robust models' mean instead of patching them).

    Raises:
      ValueError: ``k`` outside ``1..count_blocks(modules)``.  TypeError: ``k`` not an int.
    """
    chosen = set(select_shallowest(_units(modules), k))
    return [m for m in modules if _unit(m) in chosen and (shortcuts or not is_shortcut(m))]


def extract(robust_params: Mapping, pre_params: Mapping, clean_params: Mapping | None, *,
            modules: Sequence[str], project: bool = True) -> dict[str, np.ndarray]:
    """Robust weight signature tensors of ``modules``.

    For every leaf (kernel and, where present, bias / BN scale ...) of each module::

        project=True:  RWS = v − (⟨v,a⟩/⟨a,a⟩)·a,  v = θ_robust − θ_pre,  a = θ_clean − θ_pre
        project=False: RWS = θ_robust − θ_pre

    per tensor (:func:`project_out`), differences taken in float64.

    Args:
      robust_params, pre_params, clean_params: ``"params"`` collections (nested
        dicts, identical structure on the used leaves).  ``clean_params`` may be
        None when ``project=False``.
      modules: dotted module names, e.g. ``select_shallowest(conv_modules(p, order), k)``.
      project: project out the clean direction (the paper's RWS) or not.

    Returns:
      ``{"<module>.<leaf>": float32 array}`` in ``modules`` order, ``kernel``
      before the other leaves of a module (e.g. ``features.0.kernel``,
      ``features.0.bias``, ``features.2.kernel``, ...).

    Raises:
      ValueError: empty or duplicate ``modules``; a module has no leaves in
        ``pre_params`` (the message lists valid names); a leaf is missing or
        has another shape in ``robust_params``/``clean_params``;
        ``clean_params`` is None with ``project=True``.
    """
    modules = list(modules)
    if not modules:
        raise ValueError("extract: no modules given")
    if len(set(modules)) != len(modules):
        raise ValueError(f"extract: duplicate module names in {modules}")
    if project and clean_params is None:
        raise ValueError("extract: clean_params is required when project=True")
    by_module = _module_leaves(pre_params)
    unknown = [m for m in modules if m not in by_module]
    if unknown:
        raise ValueError(f"extract: unknown module name(s) {unknown}; valid names: {sorted(by_module)}")

    def fetch(tree, path, what, ref_shape):
        try:
            x = get_leaf(tree, path)
        except (KeyError, TypeError):
            raise ValueError(f"extract: {dotted_name(path[:-1])}.{path[-1]} missing in {what}") from None
        x = np.asarray(_host(x), dtype=np.float64)
        if x.shape != ref_shape:
            raise ValueError(f"extract: {dotted_name(path[:-1])}.{path[-1]} has shape {x.shape} in "
                             f"{what} but {ref_shape} in pre_params")
        return x

    out: dict[str, np.ndarray] = {}
    for m in modules:
        for path in by_module[m]:
            pre = np.asarray(_host(get_leaf(pre_params, path)), dtype=np.float64)
            v = fetch(robust_params, path, "robust_params", pre.shape) - pre
            name = f"{m}.{path[-1]}"
            if project:
                a = fetch(clean_params, path, "clean_params", pre.shape) - pre
                out[name] = project_out(v, a)
            else:
                out[name] = v.astype(np.float32)
    return out


# ---------------------------------------------------------------------------
# Quantization with real bit packing.
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Quantized:
    """A per-tensor uniformly quantized tensor.

    Attributes:
      codes_packed: uint8 ``[ceil(n·bits/8)]``, the n codes (each in
        ``0..2^bits−1``) as a little-endian bitstream: code i occupies stream
        bits ``i·bits .. i·bits+bits−1`` (least significant bit first), stream
        bit j is bit ``j % 8`` of byte ``j // 8``.
      bits: bits per value, 1..8.
      minimum: float32 scalar, the tensor minimum (level 0).
      scale: float32 scalar, ``(max − min) / (2^bits − 1)``; 0 for a constant tensor.
      shape: the tensor shape; n = prod(shape).

    Value i dequantizes to ``minimum + code_i · scale``.
    """

    codes_packed: np.ndarray
    bits: int
    minimum: np.float32
    scale: np.float32
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of values n."""
        return int(math.prod(self.shape))


def packed_length(n: int, bits: int) -> int:
    """Bytes needed for n codes of ``bits`` bits: ``ceil(n·bits/8)``."""
    return (int(n) * int(bits) + 7) // 8


def _check_bits(bits) -> int:
    if isinstance(bits, bool):
        raise TypeError(f"bits must be an int in 1..8, got {bits!r}")
    try:
        b = operator.index(bits)
    except TypeError:
        raise TypeError(f"bits must be an int in 1..8, got {bits!r}") from None
    if not 1 <= b <= 8:
        raise ValueError(f"bits must be an int in 1..8, got {bits!r}")
    return b


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack integer codes (each < 2^bits) into a uint8 little-endian bitstream of ``ceil(n·bits/8)`` bytes."""
    bits = _check_bits(bits)
    codes = np.asarray(codes).ravel()
    if codes.size and (codes.min() < 0 or codes.max() >= (1 << bits)):
        raise ValueError(f"codes must be in 0..{(1 << bits) - 1}")
    codes = codes.astype(np.uint8)
    if bits == 8:
        return codes.copy()
    planes = (codes[:, None] >> np.arange(bits, dtype=np.uint8)) & np.uint8(1)  # [n, bits]
    return np.packbits(planes.ravel(), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 codes ``[n]``.

    Raises:
      ValueError: ``packed`` is not 1-D uint8 of length ``ceil(n·bits/8)``.
    """
    bits = _check_bits(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != packed_length(n, bits):
        raise ValueError(f"packed codes must be uint8 [{packed_length(n, bits)}] for n={n}, bits={bits}; "
                         f"got {packed.dtype} {packed.shape}")
    if bits == 8:
        return packed.copy()
    planes = np.unpackbits(packed, count=n * bits, bitorder="little").reshape(n, bits)
    return (planes << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)


def quantize(x, bits: int) -> Quantized:
    """Per-tensor uniform min–max quantization to ``bits`` bits, bit-packed.

    ``scale = (max − min)/(2^b − 1)`` (stored as float32), ``code =
    round((x − min)/scale)`` clipped to ``0..2^b−1``; a constant tensor gets
    scale 0 and all-zero codes (exact).  Dequantization error is at most
    ``scale/2`` plus float32 rounding of the result.

    Args:
      x: float array of any shape (cast to float32).
      bits: 1..8.

    Returns:
      :class:`Quantized` whose ``codes_packed`` holds ``ceil(n·bits/8)`` bytes.

    Raises:
      ValueError: ``bits`` outside 1..8, non-finite values, or a value range
        that overflows float32.
      TypeError: ``bits`` is not an int.
    """
    bits = _check_bits(bits)
    x = np.asarray(_host(x), dtype=np.float32)
    levels = (1 << bits) - 1
    if x.size == 0:
        return Quantized(np.zeros(0, np.uint8), bits, np.float32(0), np.float32(0), tuple(x.shape))
    if not np.isfinite(x).all():
        raise ValueError("quantize: tensor has non-finite values")
    lo, hi = x.min(), x.max()
    scale = np.float32((float(hi) - float(lo)) / levels)
    if not np.isfinite(scale):
        raise ValueError(f"quantize: value range [{lo}, {hi}] overflows float32")
    if scale == 0 and hi > lo:  # range below float32 resolution: smallest positive step
        scale = np.float32(np.finfo(np.float32).smallest_subnormal)
    if scale == 0:
        codes = np.zeros(x.size, np.uint8)
    else:
        codes = np.rint((x.ravel().astype(np.float64) - float(lo)) / float(scale))
        codes = np.clip(codes, 0, levels).astype(np.uint8)
    return Quantized(pack_codes(codes, bits), bits, np.float32(lo), np.float32(scale), tuple(x.shape))


def dequantize(q: Quantized) -> np.ndarray:
    """``minimum + code·scale`` as float32 of shape ``q.shape`` (computed in float64).

    Raises:
      ValueError: the packed code length does not match ``q.shape``/``q.bits``.
    """
    codes = unpack_codes(q.codes_packed, q.bits, q.size)
    vals = float(q.minimum) + codes.astype(np.float64) * float(q.scale)
    return vals.astype(np.float32).reshape(q.shape)


# ---------------------------------------------------------------------------
# Fingerprints and the Signature container.
# ---------------------------------------------------------------------------

def _key_str(k) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def fingerprint(params: PyTree) -> str:
    """Content hash of a pytree: sha256 over the sorted (path, dtype, shape, bytes) of all leaves, hex[:16].

    Numpy and jax leaves with equal values give the same fingerprint; any
    change of a value, dtype, shape or name changes it.
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    items = sorted((("/".join(_key_str(k) for k in path), leaf) for path, leaf in leaves),
                   key=lambda kv: kv[0])
    h = hashlib.sha256()
    for path, leaf in items:
        arr = np.asarray(_host(leaf))
        h.update(f"{path}\0{arr.dtype.str}\0{tuple(arr.shape)}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _json_roundtrip(meta: Mapping) -> dict:
    try:
        return json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"signature metadata must be JSON-serializable (no NaN): {e}") from None


@dataclasses.dataclass(eq=False)
class Signature:
    """One robust weight signature: its tensors and provenance.

    Attributes:
      tensors: ``{"<module>.<leaf>": float32 array}`` in signature order (the
        order of ``meta["layers"]``); dequantized values when quantized.
      meta: JSON-serializable dict (normalized through JSON on construction,
        so it round-trips through files unchanged) with keys

        * ``format`` (``"rwsjax.rws.signature"``), ``format_version`` (int),
          ``rwsjax_version``
        * ``architecture`` (str), ``width_multiplier`` (float), ``num_classes`` (int)
        * ``layers``: ``{name: [shape]}`` in signature order
        * ``bits``: None (float32) or 1..8
        * ``projected`` (bool), ``corruption``, ``severity``, ``dataset``
        * ``base_fingerprint`` (of θ_pre), ``clean_fingerprint`` (of θ_clean)
        * ``created`` (ISO 8601 UTC), ``extra`` (dict)
      quantized: ``{name: Quantized}`` when ``meta["bits"]`` is set, else None.

    Build one with :func:`make_signature`.

    Raises:
      ValueError: tensors / meta["layers"] / quantized disagree (names, order,
        shapes, dtype float32, bits), no layers, or non-JSON metadata.
    """

    tensors: dict[str, np.ndarray]
    meta: dict
    quantized: dict[str, Quantized] | None = None

    def __post_init__(self):
        self.meta = _json_roundtrip(self.meta)
        self.tensors = {k: np.asarray(_host(v)) for k, v in self.tensors.items()}
        layers = self.meta.get("layers")
        if not isinstance(layers, dict) or not layers:
            raise ValueError("signature meta['layers'] must be a non-empty {name: shape} dict")
        if list(layers) != list(self.tensors):
            raise ValueError(f"signature tensors {list(self.tensors)} do not match meta['layers'] "
                             f"{list(layers)} (names and order)")
        for name, t in self.tensors.items():
            if t.dtype != np.float32:
                raise ValueError(f"{name}: signature tensors must be float32, got {t.dtype}")
            if tuple(t.shape) != tuple(layers[name]):
                raise ValueError(f"{name}: tensor shape {t.shape} vs meta shape {tuple(layers[name])}")
        bits = self.meta.get("bits")
        if bits is None:
            if self.quantized is not None:
                raise ValueError("signature has quantized codes but meta['bits'] is None")
        else:
            _check_bits(bits)
            if self.quantized is None or list(self.quantized) != list(self.tensors):
                raise ValueError("a quantized signature needs a Quantized entry for every tensor")
            for name, q in self.quantized.items():
                if q.bits != bits or tuple(q.shape) != tuple(layers[name]):
                    raise ValueError(f"{name}: quantized bits/shape {q.bits}/{q.shape} vs meta "
                                     f"{bits}/{tuple(layers[name])}")

    @property
    def names(self) -> list[str]:
        """Tensor names in signature order."""
        return list(self.tensors)

    @property
    def corruption(self) -> str | None:
        return self.meta.get("corruption")

    @property
    def architecture(self) -> str | None:
        return self.meta.get("architecture")

    @property
    def bits(self) -> int | None:
        return self.meta.get("bits")

    def num_values(self) -> int:
        """Total number of signature values."""
        return int(sum(t.size for t in self.tensors.values()))


def _library_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("rwsjax")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return None


def make_signature(tensors: Mapping[str, Any], *, architecture: str, width_multiplier: float,
                   num_classes: int, base: PyTree | str | None = None,
                   clean: PyTree | str | None = None, bits: int | None = None,
                   projected: bool = True, corruption: str | None = None,
                   severity: int | None = None, dataset: str | None = None,
                   extra: Mapping | None = None) -> Signature:
    """Wrap :func:`extract` output into a :class:`Signature` (optionally quantized).

    Args:
      tensors: ``{"<module>.<leaf>": array}`` in signature order.
      architecture, width_multiplier, num_classes: the model the signature belongs to.
      base, clean: θ_pre / θ_clean params (fingerprinted with
        :func:`fingerprint`) or their fingerprint strings, or None.
      bits: None keeps float32; 1..8 quantizes every tensor
        (:func:`quantize`) and ``tensors`` then holds the dequantized values.
      projected, corruption, severity, dataset, extra: provenance (JSON values).

    Raises:
      ValueError: no tensors, bad ``bits``, non-finite values, non-JSON metadata.
    """
    if not tensors:
        raise ValueError("make_signature: no tensors")
    arrays = {k: np.asarray(_host(v), dtype=np.float32) for k, v in tensors.items()}
    for k, v in arrays.items():
        if not np.isfinite(v).all():
            raise ValueError(f"make_signature: {k} has non-finite values")
    quantized = None
    if bits is not None:
        bits = _check_bits(bits)
        quantized = {k: quantize(v, bits) for k, v in arrays.items()}
        arrays = {k: dequantize(q) for k, q in quantized.items()}

    def fp(x):
        return x if (x is None or isinstance(x, str)) else fingerprint(x)

    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "rwsjax_version": _library_version(),
        "architecture": str(architecture),
        "width_multiplier": float(width_multiplier),
        "num_classes": int(num_classes),
        "layers": {k: [int(d) for d in v.shape] for k, v in arrays.items()},
        "bits": bits,
        "projected": bool(projected),
        "corruption": corruption,
        "severity": None if severity is None else int(severity),
        "dataset": dataset,
        "base_fingerprint": fp(base),
        "clean_fingerprint": fp(clean),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    return Signature(arrays, meta, quantized)


# ---------------------------------------------------------------------------
# File format.
# ---------------------------------------------------------------------------

CHECKSUM_KEY = "rwsjax_sha256"  # header metadata: SHA-256 of the tensor payload (names, dtypes, shapes, bytes)


def _checksum(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{t.dtype.str}|{t.shape}|".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def save_signature(path: str | os.PathLike, signature: Signature) -> None:
    """Write ``signature`` to a ``.safetensors`` file, atomically.

    Layout: unquantized → float32 tensor ``<name>`` per layer; quantized →
    ``<name>.codes`` (uint8 ``[ceil(n·bits/8)]``), ``<name>.min`` and
    ``<name>.scale`` (float32 scalars).  ``meta`` is stored as JSON under
    ``{"rwsjax_signature": json}`` in the safetensors header metadata, with
    the SHA-256 of the tensors under ``"rwsjax_sha256"``.  The
    file is written to a temporary file in the same directory, fsynced and
    renamed over ``path`` (readers see the old or the new file, never half).
    """
    from safetensors.numpy import save_file

    path = os.fspath(path)
    tensors: dict[str, np.ndarray] = {}
    if signature.quantized is None:
        for name, t in signature.tensors.items():
            tensors[name] = np.asarray(t, dtype=np.float32, order="C")
    else:
        for name, q in signature.quantized.items():
            tensors[f"{name}.codes"] = np.asarray(q.codes_packed, dtype=np.uint8, order="C")
            tensors[f"{name}.min"] = np.asarray(q.minimum, dtype=np.float32)
            tensors[f"{name}.scale"] = np.asarray(q.scale, dtype=np.float32)
    metadata = {METADATA_KEY: json.dumps(signature.meta, allow_nan=False), CHECKSUM_KEY: _checksum(tensors)}

    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_signature(path: str | os.PathLike) -> Signature:
    """Read and validate a signature written by :func:`save_signature`.

    Checks: the file parses as safetensors; its tensors match the stored
    SHA-256 (a file without the checksum field has none to check); it carries ``rwsjax_signature``
    JSON metadata of a supported ``format_version``; every layer of
    ``meta["layers"]`` is present with the right dtype and shape (packed code
    length ``ceil(n·bits/8)``, scalar finite ``min``/``scale``, ``scale ≥ 0``)
    and no other tensors are.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      SignatureFormatError: anything else wrong; the message names the path
        and the problem (never a raw safetensors error).
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)

    def bad(msg: str) -> SignatureFormatError:
        return SignatureFormatError(f"{path}: {msg}")

    try:
        with safe_open(path, framework="numpy") as f:
            header_meta = f.metadata() or {}
            raw = {k: np.array(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except SafetensorError as e:
        raise bad(f"not a valid safetensors file (truncated or corrupt?): {e}") from None
    except Exception as e:  # noqa: BLE001 -- any other reader failure, e.g. unsupported dtype
        raise bad(f"could not read as safetensors: {type(e).__name__}: {e}") from None

    if METADATA_KEY not in header_meta:
        raise bad(f"no {METADATA_KEY!r} metadata in the header; not an rwsjax signature file")
    if CHECKSUM_KEY in header_meta and header_meta[CHECKSUM_KEY] != _checksum(raw):
        raise bad("tensor data does not match the file's SHA-256 checksum: the file is corrupt (bit flips "
                  "in storage or transfer); copy it again from its source")
    try:
        meta = json.loads(header_meta[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise bad(f"signature metadata is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise bad("signature metadata is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise bad(f"metadata format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise bad(f"unsupported format_version {version!r} (this rwsjax reads {FORMAT_VERSION})")
    layers = meta.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise bad("metadata 'layers' must be a non-empty {name: shape} object")
    for name, shape in layers.items():
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                 for d in shape)):
            raise bad(f"layer {name}: shape {shape!r} is not a list of non-negative ints")
    bits = meta.get("bits")
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8):
        raise bad(f"metadata bits {bits!r} is not None or an int in 1..8")

    def tensor(key: str, dtype, shape) -> np.ndarray:
        if key not in raw:
            raise bad(f"tensor {key!r} listed in the metadata is missing")
        t = raw[key]
        if t.dtype != dtype or tuple(t.shape) != tuple(shape):
            raise bad(f"tensor {key!r} is {t.dtype} {tuple(t.shape)}, expected {np.dtype(dtype)} {tuple(shape)}")
        return t

    tensors: dict[str, np.ndarray] = {}
    quantized = None
    expected_keys: set[str] = set()
    if bits is None:
        for name, shape in layers.items():
            t = tensor(name, np.float32, shape)
            if not np.isfinite(t).all():
                raise bad(f"tensor {name!r} has non-finite values")
            tensors[name] = t
            expected_keys.add(name)
    else:
        quantized = {}
        for name, shape in layers.items():
            n = int(math.prod(shape))
            codes = tensor(f"{name}.codes", np.uint8, (packed_length(n, bits),))
            lo = tensor(f"{name}.min", np.float32, ())
            scale = tensor(f"{name}.scale", np.float32, ())
            if not (np.isfinite(lo) and np.isfinite(scale) and scale >= 0):
                raise bad(f"layer {name}: min {lo} / scale {scale} must be finite with scale >= 0")
            q = Quantized(codes, bits, np.float32(lo), np.float32(scale), tuple(shape))
            quantized[name] = q
            tensors[name] = dequantize(q)
            expected_keys.update({f"{name}.codes", f"{name}.min", f"{name}.scale"})
    extra_keys = sorted(set(raw) - expected_keys)
    if extra_keys:
        raise bad(f"unexpected tensors not listed in the metadata: {extra_keys[:5]}")
    try:
        return Signature(tensors, meta, quantized)
    except ValueError as e:
        raise bad(str(e)) from None
