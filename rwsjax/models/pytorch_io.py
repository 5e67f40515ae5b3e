"""PyTorch ``state_dict`` import and export for the rwsjax model zoo.

Every rwsjax model names its modules so that the PyTorch ``state_dict`` name
of a parameter is :func:`~rwsjax.models.common.flax_path_to_torch_name` of
its module path plus the PyTorch leaf name (kuangliu/pytorch-cifar ResNets and
PreAct ResNet, the TRADES WideResNet, torchvision VGG features and ResNets).
This module converts between the two:

==============================  ==================================  =====================================
rwsjax (Flax Linen)             PyTorch ``state_dict``              layout
==============================  ==================================  =====================================
``params/<m>/kernel`` (4-D)     ``<m>.weight`` (``nn.Conv2d``)      HWIO ``[kh, kw, in, out]`` <-> OIHW
``params/<m>/kernel`` (2-D)     ``<m>.weight`` (``nn.Linear``)      ``[in, out]`` <-> ``[out, in]``
``params/<m>/bias``             ``<m>.bias``                        same
``params/<m>/scale`` (BN)       ``<m>.weight``                      same
``batch_stats/<m>/mean``        ``<m>.running_mean``                same
``batch_stats/<m>/var``         ``<m>.running_var``                 same (both use ``var + eps``)
(none)                          ``<m>.num_batches_tracked``         dropped on import, int64 0 on export
``mean``/``std`` attributes     normalization buffers (see below)   returned as 3-tuples
==============================  ==================================  =====================================

The models normalize their [0, 1] input inside with constant ``mean``/``std``
attributes (not variables). A PyTorch model that normalizes inside with
buffers (advertorch ``NormalizeByChannelMeanStd`` as ``normalize.mean`` /
``normalize.std`` in Robust Weight Signatures, RobustBench ``mu`` /
``sigma``, ...; see :data:`NORMALIZATION_KEYS`) has them returned as
:attr:`ImportResult.mean` / :attr:`ImportResult.std`: build the rwsjax model
with those constants. When the file has no such buffers the constants are
not in the file (normalization hard-coded in ``forward``, done in the data
pipeline, or absent: then ``mean=(0, 0, 0), std=(1, 1, 1)``) and the caller
must supply them.

torch is optional: ``.safetensors`` files are read and written with
``safetensors.numpy``; ``.pt``/``.pth``/``.bin``/``.ckpt`` need torch
(imported inside the functions that use it, never at module import).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rwsjax.atomic import atomic_path
from rwsjax.models.common import flax_path_to_torch_name


#: File extensions read/written with ``torch.load`` / ``torch.save``.
TORCH_EXTENSIONS: tuple[str, ...] = (".pt", ".pth", ".bin", ".ckpt")
#: File extensions read/written with ``safetensors.numpy``.
SAFETENSORS_EXTENSIONS: tuple[str, ...] = (".safetensors",)

#: Keys under which training scripts commonly nest the ``state_dict`` in a
#: checkpoint dict, tried in this order (at most 3 levels deep):
#: ``{"state_dict": ...}`` (PyTorch Lightning, RobustBench, many research
#: repos), ``{"model_state_dict": ...}`` (PyTorch tutorial recipe),
#: ``{"model": ...}`` (timm/fairseq-style), ``{"net": ...}`` (kuangliu
#: pytorch-cifar), ``{"network": ...}``. Other keys (e.g. an EMA copy under
#: ``"ema"``) are chosen with ``container_key``.
CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net", "network")

#: Key prefixes removed on import when that makes keys match the model:
#: ``module.`` (``nn.DataParallel`` / ``DistributedDataParallel``),
#: ``_orig_mod.`` (``torch.compile``), ``model.`` (wrappers such as
#: RobustBench's ``normalize_model``, Lightning modules). Chains
#: (``module._orig_mod.``) are removed too, and a prefix may be removed from
#: only the keys that carry it (``normalize.mean`` + ``model.conv1.weight``).
PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "model.")

#: ``(mean key, std key)`` pairs recognized as input-normalization buffers
#: (after prefix removal), each holding 3 values in [0, 1] pixel scale in any
#: shape (``[3]``, ``[3, 1, 1]``, ``[1, 3, 1, 1]``): advertorch
#: ``NormalizeByChannelMeanStd`` (RWS: ``normalize``), RobustBench
#: ``ImageNormalizer`` (``normalize``) and ``mu``/``sigma`` attributes,
#: MadryLab robustness ``InputNormalize`` (``normalizer.new_mean``), and plain
#: ``mean``/``std`` buffers.
NORMALIZATION_KEYS: tuple[tuple[str, str], ...] = (
    ("normalize.mean", "normalize.std"),
    ("norm.mean", "norm.std"),
    ("normalizer.mean", "normalizer.std"),
    ("normalizer.new_mean", "normalizer.new_std"),
    ("mu", "sigma"),
    ("mean", "std"),
)

#: ``fnmatch`` patterns of keys dropped by default when nothing in the model
#: matches them: the TRADES WideResNet builds an unused ``sub_block1`` (never
#: called in ``forward``) whose weights are in every TRADES/RiFT checkpoint.
DEFAULT_IGNORE: tuple[str, ...] = ("sub_block1.*",)

_PIP_HINT = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What :func:`import_variables` made of a PyTorch ``state_dict``.

    Attributes:
      variables: ``{"params": ..., "batch_stats": ...}`` with the structure,
        shapes and dtypes (float32) of ``like``; host ``numpy`` arrays.
      mean, std: the 3 input-normalization constants found in the file
        (:data:`NORMALIZATION_KEYS`), as Python floats (the exact float32
        buffer values), or ``None`` when the file has no normalization
        buffers (then the file does not say how inputs were normalized).
      ignored: file keys deliberately dropped because they matched
        ``ignore`` patterns (e.g. TRADES ``sub_block1.*``). BatchNorm
        ``num_batches_tracked`` counters are always dropped and not listed.
      kept: PyTorch names of model entries whose values were taken from
        ``like`` instead of the file (only with ``partial=True``: a
        classifier head with another number of classes, or none).
      stripped_prefixes: key prefixes removed, in order (e.g.
        ``("module.",)``).
    """

    variables: dict
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    ignored: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    stripped_prefixes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- files


def _import_torch(what: str):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs PyTorch, which is not installed; install the CPU build with "
                          f"`{_PIP_HINT}`, or convert the file to .safetensors elsewhere") from None
    return torch


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:12]
        more = f", ... ({len(obj)} keys)" if len(obj) > 12 else ""
        return f"a dict with keys {keys}{more}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _torch_to_numpy(torch, t) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    return t.numpy()


_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U8": "u1", "BOOL": "?"}


def _read_safetensors_raw(path: str) -> dict[str, np.ndarray]:
    """Parse a safetensors file by hand (used for ``BF16``, which numpy lacks: read as float32)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf, shape, dt = data[start:end], tuple(info["shape"]), info["dtype"]
        if dt == "BF16":
            arr = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt in _ST_DTYPES:
            arr = np.frombuffer(buf, _ST_DTYPES[dt]).copy()
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported safetensors dtype {dt}")
        out[name] = arr.reshape(shape)
    return out


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return dict(load_file(path))
    except TypeError as e:  # e.g. "data type 'bfloat16' not understood"
        if "bfloat16" not in str(e):
            raise ValueError(f"{path}: could not read as safetensors: {e}") from None
        return _read_safetensors_raw(path)
    except SafetensorError as e:
        raise ValueError(f"{path}: not a valid safetensors file (truncated or corrupt?): {e}") from None


def _unwrap(obj: Any, path: str, container_key: str | None, is_tensor) -> Mapping:
    def tensor_dict(o):
        return isinstance(o, Mapping) and len(o) > 0 and all(
            isinstance(k, str) and is_tensor(v) for k, v in o.items())

    if container_key is not None:
        if not (isinstance(obj, Mapping) and container_key in obj):
            raise ValueError(f"{path}: no {container_key!r} entry; found {_describe(obj)}")
        obj = obj[container_key]
    for _ in range(3):
        if tensor_dict(obj) or not isinstance(obj, Mapping):
            break
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj = obj[key]
    if not tensor_dict(obj):
        bad = ([f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not is_tensor(v)][:8]
               if isinstance(obj, Mapping) else [])
        raise ValueError(
            f"{path}: not a state_dict of tensors: found {_describe(obj)}"
            + (f"; non-tensor entries {', '.join(bad)}" if bad else "")
            + f". Expected {{name: tensor}}, possibly nested under one of {list(CONTAINER_KEYS)} "
            "(or pass container_key)")
    return obj


def read_state_dict(path: str | os.PathLike, *, container_key: str | None = None) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` file as ``{name: numpy array}``.

    Args:
      path: ``.pt``/``.pth``/``.bin``/``.ckpt`` (read with
        ``torch.load(path, map_location="cpu", weights_only=True)``) or
        ``.safetensors`` (read with ``safetensors.numpy``, no torch needed).
      container_key: take the state_dict from this top-level entry (e.g.
        ``"ema"``); by default a dict that is not itself a tensor dict is
        unwrapped through :data:`CONTAINER_KEYS` (``state_dict``,
        ``model_state_dict``, ``model``, ``net``, ``network``; up to 3
        levels).

    Returns:
      ``{name: np.ndarray}`` in file order, PyTorch layouts and dtypes
      unchanged, except bfloat16 which becomes float32 (numpy has none).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ImportError: a torch file but torch is not installed (the message
        gives the ``pip install`` line).
      ValueError: unknown extension, a file torch cannot load with
        ``weights_only=True`` (e.g. a pickled ``nn.Module``), a corrupt
        safetensors file, or contents that are not a ``{str: tensor}``
        dict (the message names the file and what was found).
    """
    path = os.fspath(path)
    ext = _extension(path)
    if ext not in TORCH_EXTENSIONS + SAFETENSORS_EXTENSIONS:
        raise ValueError(f"{path}: unknown state_dict file extension {ext or '(none)'!r}; expected one of "
                         f"{list(TORCH_EXTENSIONS + SAFETENSORS_EXTENSIONS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if ext in SAFETENSORS_EXTENSIONS:
        sd = _read_safetensors(path)
        return dict(_unwrap(sd, path, container_key, lambda v: isinstance(v, np.ndarray)))
    torch = _import_torch(f"reading {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError (corrupt zip), ...
        lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if ln.strip()]
        detail = [ln for ln in lines if "Unsupported global" in ln] or lines[:1]
        raise ValueError(
            f"{path}: torch.load(weights_only=True) failed: {type(e).__name__}: {' '.join(detail)[:300]}. "
            "If the file pickles a whole model or other objects, re-save just the weights with "
            "torch.save(model.state_dict(), path)") from None
    sd = _unwrap(obj, path, container_key, lambda v: isinstance(v, torch.Tensor))
    return {k: _torch_to_numpy(torch, v) for k, v in sd.items()}


def save_state_dict(state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``{name: array}`` as a PyTorch-loadable file, atomically.

    Args:
      state_dict: e.g. the output of :func:`export_state_dict`; values are
        anything ``np.asarray`` accepts (numpy/jax arrays, 0-d ints).
      path: ``.pt``/``.pth`` (``torch.save`` of a plain ``{name: Tensor}``
        dict, loadable with ``weights_only=True``; needs torch) or
        ``.safetensors`` (``safetensors.numpy.save_file``; no torch).

    The file is written to a temporary file in the same directory, fsynced
    and renamed over ``path``, so readers see the old or the new file.

    Raises:
      ValueError: another extension, or a non-string key.
      ImportError: ``.pt``/``.pth`` without torch installed.
    """
    path = os.fspath(path)
    ext = _extension(path)
    if ext not in (".pt", ".pth") + SAFETENSORS_EXTENSIONS:
        raise ValueError(f"{path}: cannot save a state_dict as {ext or '(no extension)'!r}; use .pt, .pth "
                         "or .safetensors")
    bad = [k for k in state_dict if not isinstance(k, str)]
    if bad:
        raise ValueError(f"{path}: state_dict keys must be strings, got {bad[:5]}")
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in state_dict.items()}
    if ext in SAFETENSORS_EXTENSIONS:
        from safetensors.numpy import save_file
        with atomic_path(path) as tmp:
            save_file(arrays, tmp)
        return
    torch = _import_torch(f"saving {path}")
    tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)


# --------------------------------------------------------------------------- names and layouts


@dataclasses.dataclass(frozen=True)
class _Entry:
    torch_name: str
    collection: str
    path: tuple[str, ...]  # Flax path inside the collection, leaf included
    like: Any
    kind: str  # "conv" (HWIO <-> OIHW), "dense" ([in, out] <-> [out, in]) or "plain"
    module: str  # PyTorch module name

    @property
    def torch_shape(self) -> tuple[int, ...]:
        s = tuple(np.shape(self.like))
        if self.kind == "conv":
            return (s[3], s[2], s[0], s[1])
        if self.kind == "dense":
            return (s[1], s[0])
        return s

    def to_flax(self, a: np.ndarray) -> np.ndarray:
        if self.kind == "conv":
            a = a.transpose(2, 3, 1, 0)
        elif self.kind == "dense":
            a = a.T
        return np.ascontiguousarray(a, dtype=np.dtype(self.like.dtype))


def _walk(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _walk(v, prefix + (str(k),))
        else:
            yield prefix + (str(k),), v


_PARAM_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_STAT_LEAVES = {"mean": "running_mean", "var": "running_var"}


def _entries(variables: Mapping) -> tuple[list[_Entry], list[str]]:
    """Model entries in PyTorch order (per module: weight, bias, running stats) and the BN modules."""
    extra = set(variables) - {"params", "batch_stats"}
    if extra or "params" not in variables:
        raise ValueError(f"expected variables with collections 'params' (and 'batch_stats'), got {sorted(variables)}")
    groups: dict[str, list[_Entry]] = {}
    for collection, names in (("params", _PARAM_LEAVES), ("batch_stats", _STAT_LEAVES)):
        for path, leaf in _walk(variables.get(collection) or {}):
            module = flax_path_to_torch_name(path[:-1])
            if path[-1] not in names:
                raise ValueError(f"cannot map {collection}/{'/'.join(path)} to a PyTorch name "
                                 f"(known leaves: {sorted(names)})")
            kind = "plain"
            if path[-1] == "kernel":
                ndim = len(np.shape(leaf))
                if ndim not in (2, 4):
                    raise ValueError(f"params/{'/'.join(path)}: {ndim}-D kernel; only conv (4-D) and dense "
                                     "(2-D) kernels map to PyTorch")
                kind = "conv" if ndim == 4 else "dense"
            groups.setdefault(module, []).append(
                _Entry(f"{module}.{names[path[-1]]}", collection, path, leaf, kind, module))
    order = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}
    entries = [e for g in groups.values() for e in sorted(g, key=lambda e: order[e.torch_name.rsplit(".", 1)[1]])]
    bn_modules = list(dict.fromkeys(e.module for e in entries if e.collection == "batch_stats"))
    return entries, bn_modules


# --------------------------------------------------------------------------- import


def _strip_prefixes(keys: list[str], known: set[str]) -> tuple[list[str], tuple[str, ...]]:
    """Remove :data:`PREFIXES` (alone or chained, e.g. ``module._orig_mod.``) where that makes more keys known.

    Keys without the prefix stay as they are (RobustBench's ``normalize_model`` prefixes only the network);
    up to 3 rounds, each taking the chain that makes the most keys known.
    """
    chains = [(p,) for p in PREFIXES]
    chains += [c + (p,) for c in chains for p in PREFIXES if p not in c]
    chains += [c + (p,) for c in chains if len(c) == 2 for p in PREFIXES if p not in c]
    stripped: tuple[str, ...] = ()
    for _ in range(3):
        score = sum(k in known for k in keys)
        best = None
        for chain in chains:
            p = "".join(chain)
            new = [k.removeprefix(p) for k in keys]
            s = sum(k in known for k in new)
            if s > score and len(set(new)) == len(new) and (best is None or s > best[0]):
                best = (s, chain, new)
        if best is None:
            break
        keys, stripped = best[2], stripped + best[1]
    return keys, stripped


def _fmt_shape(s: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in s) + "]"


def _normalization(sd: Mapping[str, np.ndarray], used: set[str], problems: list[str]):
    found = []
    for km, ks in NORMALIZATION_KEYS:
        if km in sd and ks in sd and km not in used and ks not in used:
            used.update((km, ks))
            m = np.asarray(sd[km], np.float64).reshape(-1)
            s = np.asarray(sd[ks], np.float64).reshape(-1)
            if m.size != 3 or s.size != 3:
                problems.append(f"normalization buffers {km}/{ks} hold {m.size}/{s.size} values, expected 3 each")
            elif not (np.all(s > 0) and np.all((m >= 0) & (m <= 1)) and np.all(s <= 1)):
                problems.append(f"normalization buffers {km}={m.tolist()} / {ks}={s.tolist()} are not per-channel "
                                "constants in [0, 1] pixel scale (std > 0); rwsjax models take [0, 1] inputs")
            else:
                found.append((km, ks, tuple(float(v) for v in m), tuple(float(v) for v in s)))
    if not found:
        return None, None
    _, _, mean, std = found[0]
    for km, ks, m, s in found[1:]:
        if not np.allclose((m, s), (mean, std)):
            problems.append(f"conflicting normalization buffers: {found[0][0]}/{found[0][1]} = {mean}/{std} but "
                            f"{km}/{ks} = {m}/{s}")
    return mean, std


def _as_numpy(v: Any) -> np.ndarray:
    if type(v).__module__.startswith("torch"):  # a torch.Tensor (torch is imported if one exists)
        import torch
        return _torch_to_numpy(torch, v)
    return np.asarray(v)


def _rebuild(tree: Mapping, values: Mapping[tuple[str, ...], Any], prefix: tuple[str, ...] = ()) -> dict:
    return {k: (_rebuild(v, values, prefix + (str(k),)) if isinstance(v, Mapping) else values[prefix + (str(k),)])
            for k, v in tree.items()}


def import_variables(state_dict: Mapping[str, Any], like: Mapping[str, Any], *, partial: bool = False,
                     ignore: Sequence[str] = DEFAULT_IGNORE) -> ImportResult:
    """Convert a PyTorch ``state_dict`` into variables for an rwsjax model.

    Args:
      state_dict: ``{name: array}`` in PyTorch names and layouts (from
        :func:`read_state_dict`, or a live ``torch_model.state_dict()``:
        CPU ``torch.Tensor`` values are accepted too); float64 / float16 /
        bfloat16 values are cast to the model's float32.
      like: the target model's variables ``{"params", "batch_stats"}`` (e.g.
        ``model.init(...)``; ``jax.ShapeDtypeStruct`` leaves from
        ``jax.eval_shape`` suffice unless ``partial`` keeps a head): they
        give the names, shapes and dtypes. An empty or absent
        ``"batch_stats"`` is fine (VGG-16).
      partial: accept a file whose classifier head (the dense layers) has
        another number of classes, or no head at all: those entries keep
        their ``like`` values (listed in :attr:`ImportResult.kept`). Every
        other entry must still match.
      ignore: ``fnmatch`` patterns of file keys (after prefix removal) to
        drop when they match nothing in the model; default
        :data:`DEFAULT_IGNORE` (TRADES ``sub_block1.*``).

    Name mapping: :func:`~rwsjax.models.common.flax_path_to_torch_name` of
    the module path + ``weight``/``bias``/``running_mean``/``running_var``;
    conv kernels OIHW -> HWIO, linear weights ``[out, in]`` -> ``[in, out]``;
    ``num_batches_tracked`` of BatchNorm modules is dropped. Prefixes
    :data:`PREFIXES` (``module.``, ``_orig_mod.``, ``model.``) are removed
    where that makes keys match. Normalization buffers
    (:data:`NORMALIZATION_KEYS`) become :attr:`ImportResult.mean` / ``std``.

    Returns:
      An :class:`ImportResult`; ``variables`` has ``like``'s structure with
      ``numpy`` arrays of ``like``'s dtypes.

    Raises:
      ValueError: one message listing every problem by name: unknown keys,
        missing keys, shape mismatches (file and model shape, both in
        PyTorch layout, with a hint at ``model.name`` /
        ``model.width_multiplier`` / the number of classes), non-float
        values, malformed or conflicting normalization buffers; or ``like``
        with collections other than ``params``/``batch_stats``.
    """
    entries, bn_modules = _entries(like)
    by_name = {e.torch_name: e for e in entries}
    nbt = {f"{m}.num_batches_tracked" for m in bn_modules}
    known = set(by_name) | nbt | {k for pair in NORMALIZATION_KEYS for k in pair}
    keys, stripped = _strip_prefixes([str(k) for k in state_dict], known)
    sd = {new: _as_numpy(state_dict[old]) for old, new in zip(state_dict, keys)}

    problems: list[str] = []
    used: set[str] = set()
    values: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    missing, mismatched, kept = [], [], []
    head = {e.module for e in entries if e.kind == "dense"}
    head_entries = {e.torch_name for e in entries if e.module in head}

    def keep(e: _Entry) -> None:
        if hasattr(e.like, "__array__"):  # numpy / jax arrays; not jax.ShapeDtypeStruct
            values[(e.collection, e.path)] = np.array(e.like, dtype=np.dtype(e.like.dtype))
            kept.append(e.torch_name)
        else:
            problems.append(f"partial import keeps {e.torch_name} from `like`, which holds no values "
                            f"({type(e.like).__name__}); pass initialized variables")

    for e in entries:
        if e.torch_name not in sd:
            if partial and e.torch_name in head_entries:
                keep(e)
                continue
            missing.append(e.torch_name)
            continue
        used.add(e.torch_name)
        a = sd[e.torch_name]
        if tuple(a.shape) != e.torch_shape:
            # A head with another class count: only the output (class) dimension differs.
            other_classes = (e.torch_name in head_entries and len(a.shape) == len(e.torch_shape)
                             and tuple(a.shape[1:]) == e.torch_shape[1:])
            if partial and other_classes:
                keep(e)
                continue
            mismatched.append(f"{e.torch_name}: file {_fmt_shape(a.shape)} vs model {_fmt_shape(e.torch_shape)}"
                              + (" (number of classes)" if other_classes else ""))
            continue
        if not (np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16"):  # ml_dtypes bfloat16, too
            problems.append(f"{e.torch_name}: dtype {a.dtype}, expected floating point")
            continue
        values[(e.collection, e.path)] = e.to_flax(a)

    mean, std = _normalization(sd, used, problems)
    unknown, ignored = [], []
    for k in sd:
        if k in used:
            continue
        if k in nbt:
            used.add(k)
        elif any(fnmatch.fnmatchcase(k, p) for p in ignore):
            ignored.append(k)
        else:
            unknown.append(k)

    if unknown or missing or mismatched or problems:
        lines = []
        if unknown:
            lines.append(f"unknown keys ({len(unknown)}): {', '.join(unknown)}")
        if missing:
            lines.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if mismatched:
            lines.append(f"shape mismatches ({len(mismatched)}, PyTorch layout): {'; '.join(mismatched)}")
        lines += problems
        hint = []
        if mismatched or (unknown and missing):
            hint.append("check model.name, model.width_multiplier and the number of classes (dataset) against "
                        "the checkpoint's architecture")
        if any("(number of classes)" in m for m in mismatched) and not partial:
            hint.append("a head trained for another number of classes can be kept from the model with partial=True")
        if stripped:
            hint.append(f"removed key prefixes {list(stripped)}")
        raise ValueError("PyTorch state_dict does not fit the model:\n  " + "\n  ".join(lines)
                         + ("\n  hint: " + "; ".join(hint) if hint else ""))

    variables = {c: _rebuild(like[c], {p: v for (cc, p), v in values.items() if cc == c})
                 for c in like}
    return ImportResult(variables=variables, mean=mean, std=std, ignored=tuple(ignored), kept=tuple(kept),
                        stripped_prefixes=stripped)


def load_pytorch_checkpoint(path: str | os.PathLike, like: Mapping[str, Any], *, partial: bool = False,
                            ignore: Sequence[str] = DEFAULT_IGNORE,
                            container_key: str | None = None) -> ImportResult:
    """:func:`read_state_dict` + :func:`import_variables`: a PyTorch file as variables like ``like``.

    Args:
      path: ``.pt``/``.pth``/``.bin``/``.ckpt`` (needs torch) or
        ``.safetensors``.
      like: the target model's variables (or their ``jax.eval_shape``),
        e.g. ``model.init(key, x, train=False)``.
      partial, ignore: as in :func:`import_variables`.
      container_key: as in :func:`read_state_dict`.

    Returns:
      An :class:`ImportResult`. Build (or ``model.clone(mean=..., std=...)``)
      the model with ``result.mean``/``result.std`` when they are not None.

    Raises:
      FileNotFoundError, ImportError, ValueError: as in
        :func:`read_state_dict` / :func:`import_variables`; ValueErrors start
        with ``path``.
    """
    sd = read_state_dict(path, container_key=container_key)
    try:
        return import_variables(sd, like, partial=partial, ignore=ignore)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None


# --------------------------------------------------------------------------- export


def export_state_dict(variables: Mapping[str, Any], *, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None,
                      normalization_keys: tuple[str, str] = ("normalize.mean", "normalize.std"),
                      normalization_shape: Sequence[int] = (3,)) -> dict[str, np.ndarray]:
    """Convert rwsjax variables into a PyTorch ``state_dict`` (numpy arrays).

    Args:
      variables: ``{"params", "batch_stats"}`` of an rwsjax model (host or
        device arrays; ``batch_stats`` may be absent or empty).
      mean, std: optionally, the model's input-normalization constants (3
        floats each), written as float32 buffers ``normalization_keys``
        (default advertorch ``normalize.mean``/``normalize.std``; RobustBench:
        ``("mu", "sigma")``) of shape ``normalization_shape`` (``(3,)``;
        ``(1, 3, 1, 1)`` for ``mu``/``sigma``).

    Returns:
      ``{name: np.ndarray}``, modules in the order of ``variables`` (Flax
      keeps creation order, i.e. PyTorch's, in ``model.init`` output;
      ``jax.tree.map`` / ``jax.eval_shape`` sort keys; ``load_state_dict``
      does not care), inside a module PyTorch's order ``weight``, ``bias``,
      ``running_mean``, ``running_var``, ``num_batches_tracked``;
      conv weights OIHW, linear weights ``[out, in]``, float32 C-contiguous;
      ``num_batches_tracked`` as int64 0-d zeros, so
      ``torch_model.load_state_dict({k: torch.from_numpy(v) ...},
      strict=True)`` works for the PyTorch twin of the architecture. Export
      then :func:`import_variables` is bit-exact.

    Raises:
      ValueError: collections other than ``params``/``batch_stats``, leaves
        that do not map to PyTorch, or only one of ``mean``/``std`` / not 3
        values each.
    """
    entries, bn_modules = _entries(variables)
    out: dict[str, np.ndarray] = {}
    last = {e.module: e.torch_name for e in entries}
    bn = set(bn_modules)
    for e in entries:
        a = np.asarray(_get(variables[e.collection], e.path))
        if e.kind == "conv":
            a = a.transpose(3, 2, 0, 1)
        elif e.kind == "dense":
            a = a.T
        out[e.torch_name] = np.ascontiguousarray(a)
        if e.module in bn and last[e.module] == e.torch_name:
            out[f"{e.module}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (or neither)")
    if mean is not None:
        m, s = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
        if m.size != 3 or s.size != 3:
            raise ValueError(f"mean and std must have 3 values each, got {m.tolist()} and {s.tolist()}")
        out[normalization_keys[0]] = m.reshape(tuple(normalization_shape))
        out[normalization_keys[1]] = s.reshape(tuple(normalization_shape))
    return out


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree
