"""Reading the image datasets of `DATASETS` (CIFAR-10/100, Tiny-ImageNet) from prepared TFDS ArrayRecord into NumPy.

Everything here runs on the host (NumPy, no TensorFlow). Data is read with
`tfds.data_source`, i.e. random access into the ArrayRecord files, so only the
records that are asked for get decoded.

Where the data lives: the `data_dir` argument, else the ``TFDS_DATA_DIR``
environment variable, else the TFDS default (``~/tensorflow_datasets``). The
directory must hold ``<data_dir>/<name>/<version>/`` as written by
``rwsjax prepare NAME --data_dir=DIR`` (`rwsjax.data.prepare`, ArrayRecord
format; Tiny-ImageNet also needs ``--manual_dir=PATH`` to its zip); nothing is
ever downloaded from here (the workflows call `rwsjax.data.prepare.ensure`
first).

Split names: ``"train"`` and ``"test"`` are rwsjax's names; ``"test"`` reads
the dataset's `DatasetInfo.test_split` (``"test"`` for CIFAR, the official
``"validation"`` split for Tiny-ImageNet, which papers report as its test
set). Any other name is passed to TFDS as it is.

Cost notes (2-core machine, CIFAR-10 train, 50,000 records):

* full decode (PNG -> uint8) through ``src.__getitems__``: ~0.16 ms/image,
  ~8 s for 50k;
* ``decoders={"image": tfds.decode.SkipDecoding()}`` (labels only, images left
  as PNG bytes): ~2.2 s for 50k -- the ``tf.Example`` -> dict conversion
  dominates;
* ``deserialize_method=RAW_BYTES`` plus parsing only the ``label`` field of the
  ``tf.Example`` protobuf (upb): ~0.5 s read + ~0.2 s parse for 50k. This is
  what `load_labels` does (with a fallback to the SkipDecoding path should
  the records not be ``tf.Example``), and its result is cached per process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "Split",
    "dataset_info",
    "load_labels",
    "load_split",
    "resolve_data_dir",
    "tfds_split",
]

# Records decoded per `__getitems__` call (one progress-bar update per chunk).
_CHUNK = 5000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a supported dataset.

    Attributes:
      num_classes: number of labels; labels are int32 in ``[0, num_classes)``.
      image_shape: ``(H, W, C)`` of every image, in pixels / channels.
      mean: per-channel mean of the training images, in [0, 1] units (i.e. of
        ``uint8 / 255``), RGB order.
      std: per-channel standard deviation, same units and order as `mean`
        (the normalisation constant; see the comment at ``tiny_imagenet``
        for how its convention differs).
      test_split: the TFDS split that rwsjax's split name ``"test"`` reads.
    """

    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    test_split: str = "test"


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        num_classes=10,
        image_shape=(32, 32, 3),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2471, 0.2435, 0.2616),
    ),
    "cifar100": DatasetInfo(
        num_classes=100,
        image_shape=(32, 32, 3),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
    # Tiny-ImageNet (Le & Yang, CS231N): prepared from the official zip by
    # rwsjax.data.tiny_imagenet; labels = sorted wnids. "test" = the official
    # validation split. mean/std: the constants used throughout the Tiny-ImageNet
    # literature and code (so PyTorch checkpoints see the inputs they were trained
    # on). Measured on the 10,000-image training subset in ../shared: mean
    # (0.4825, 0.4504, 0.3997) -- matches; per-image std averaged over images
    # (0.2297, 0.2264, 0.2256) -- matches, i.e. that is what this std is. The
    # pixel std over the whole set (the convention of the CIFAR entries above) is
    # larger: (0.2766, 0.2690, 0.2818).
    "tiny_imagenet": DatasetInfo(
        num_classes=200,
        image_shape=(64, 64, 3),
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2302, 0.2265, 0.2262),
        test_split="validation",
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """The requested dataset is not prepared (as ArrayRecord) in the data dir."""


class RecordImages:
    """uint8 images ``[N, H, W, C]`` decoded on demand from a TFDS data source.

    Indexing (``images[idx]`` with an int array, slice or int) reads and
    decodes only those records; ``np.asarray(images)`` reads all of them.  Used
    for per-host input in multi-process runs: each process decodes only the
    rows of each global batch that it feeds.  ``decoded`` counts the records
    read so far.
    """

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, source, indices: np.ndarray, image_shape: tuple[int, int, int]):
        self._source, self._indices = source, np.asarray(indices, np.int64)
        self.shape = (len(self._indices), *image_shape)
        self.decoded = 0

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, idx) -> RecordImages:
        """A lazy view of the records at positions ``idx`` (nothing is decoded)."""
        return RecordImages(self._source, self._indices[np.asarray(idx, np.int64)], self.shape[1:])

    def __getitem__(self, idx) -> np.ndarray:
        positions = self._indices[idx]
        flat = np.atleast_1d(positions).reshape(-1)
        out = np.empty((flat.size, *self.shape[1:]), np.uint8)
        for start in range(0, flat.size, _CHUNK):
            for j, r in enumerate(self._source.__getitems__(flat[start:start + _CHUNK].tolist())):
                out[start + j] = r["image"]
        self.decoded += flat.size
        return out[0] if np.ndim(positions) == 0 else out.reshape(*np.shape(positions), *self.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """An in-memory split of an image-classification dataset.

    Attributes:
      images: uint8 ``[N, H, W, C]``, raw pixel values in [0, 255] (a NumPy
        array, or :class:`RecordImages` read on demand).
      labels: int32 ``[N]``, class ids in ``[0, num_classes)``.
      source_indices: int64 ``[N]`` or None; position of each example in the
        TFDS split it was read from (useful to check that carved splits are
        disjoint and to reproduce a selection).

    Raises (on construction):
      ValueError: if the arrays have the wrong rank/dtype or disagree on N.
    """

    images: np.ndarray | RecordImages  # uint8 [N, H, W, C]
    labels: np.ndarray  # int32 [N]
    source_indices: np.ndarray | None = None  # int64 [N]

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                "Split.images must be uint8 [N, H, W, C], got "
                f"{self.images.dtype} {self.images.shape}"
            )
        if self.labels.ndim != 1 or self.labels.dtype != np.int32:
            raise ValueError(
                f"Split.labels must be int32 [N], got {self.labels.dtype} {self.labels.shape}"
            )
        n = self.images.shape[0]
        if self.labels.shape[0] != n:
            raise ValueError(f"Split has {n} images but {self.labels.shape[0]} labels")
        if self.source_indices is not None and self.source_indices.shape != (n,):
            raise ValueError(
                f"Split.source_indices must have shape ({n},), got {self.source_indices.shape}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, image_shape={tuple(self.images.shape[1:])})"

    def subset(self, indices: Sequence[int] | np.ndarray) -> Split:
        """Returns the examples at positions `indices` (into this split), in that order.

        Args:
          indices: int array-like ``[M]`` of positions in ``[0, len(self))``
            (repeats allowed).

        Returns:
          A new `Split` of length M (arrays are copies).

        Raises:
          IndexError: if an index is out of range.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        src = None if self.source_indices is None else self.source_indices[idx]
        if isinstance(self.images, RecordImages):
            if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise IndexError(f"subset indices must be in [0, {len(self)}), got [{idx.min()}, {idx.max()}]")
            images = self.images.take(idx)
        else:
            images = self.images[idx]
        return Split(images=images, labels=self.labels[idx], source_indices=src)


def dataset_info(name: str) -> DatasetInfo:
    """Returns the `DatasetInfo` for `name`.

    Raises:
      ValueError: if `name` is not a supported dataset (lists the valid names).
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"Unknown dataset {name!r}; valid names are: {', '.join(sorted(DATASETS))}"
        ) from None


def tfds_split(name: str, split: str) -> str:
    """The TFDS split that rwsjax's `split` of dataset `name` reads.

    ``"test"`` -> ``DATASETS[name].test_split`` (``"validation"`` for
    ``tiny_imagenet``); any other name is returned unchanged.

    Raises:
      ValueError: unknown dataset name.
    """
    info = dataset_info(name)
    return info.test_split if split == "test" else split


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """The TFDS data directory to read: `data_dir`, else ``$TFDS_DATA_DIR``, else TFDS's default.

    Returns an absolute path with ``~`` expanded. The directory need not exist.
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get("TFDS_DATA_DIR") or None
    if data_dir is None:
        try:
            from tensorflow_datasets.core import constants

            data_dir = constants.DATA_DIR
        except Exception:  # pragma: no cover - very old/new tfds layouts
            data_dir = "~/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def _not_found_message(name: str, data_dir: str, detail: str = "") -> str:
    ds_dir = os.path.join(data_dir, name)
    if not os.path.isdir(data_dir):
        why = "the data dir does not exist"
    elif not os.path.isdir(ds_dir):
        why = f"it has no {name}/ folder"
    else:
        why = f"{ds_dir} holds no version prepared as ArrayRecord"
        if detail:
            why += f" (tensorflow_datasets: {detail})"
    archive = " --manual_dir=PATH/TO/tiny-imagenet-200.zip" if name == "tiny_imagenet" else ""
    return (f"Dataset {name!r} not found in data dir {data_dir!r}: {why}. Prepare it with "
            f"`rwsjax prepare {name}{archive} --data_dir={data_dir}` (python -m rwsjax.data.prepare), or point "
            "TFDS_DATA_DIR / --config.data.data_dir at a directory that has it.")


def _open(name: str, split: str, data_dir: str, **kwargs):
    """`tfds.data_source(..., download=False)` with missing data mapped to DatasetNotFoundError."""
    import tensorflow_datasets as tfds

    try:
        src = tfds.data_source(name, split=split, data_dir=data_dir, download=False, **kwargs)
    except (
        NotImplementedError,  # what tfds 4.9 raises when nothing is prepared (it
        # falls back to the default TFRECORD format, which has no random access)
        FileNotFoundError,
        tfds.core.DatasetNotFoundError,
    ) as e:
        text = str(e).strip()
        detail = text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(e).__name__
        raise DatasetNotFoundError(_not_found_message(name, data_dir, detail)) from e
    return src


def _check_info(name: str, src) -> None:
    info = DATASETS[name]
    feats = src.dataset_info.features
    try:
        n_cls = feats["label"].num_classes
        shape = tuple(feats["image"].shape)
    except Exception:  # pragma: no cover - unexpected feature layout
        return
    if n_cls != info.num_classes or shape != info.image_shape:
        raise RuntimeError(
            f"{name} in {src.dataset_info.data_dir} has {n_cls} classes and images "
            f"{shape}; rwsjax expects {info.num_classes} and {info.image_shape}"
        )


def _progress(total: int, desc: str, enabled: bool):
    from rwsjax.report.progress import bar

    return bar(total=total, desc=desc, unit="img", enabled=enabled)  # log lines when not on a terminal


@functools.lru_cache(maxsize=16)
def _cached_labels(name: str, split: str, data_dir: str) -> np.ndarray:
    import tensorflow_datasets as tfds

    raw = _open(name, split, data_dir, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    _check_info(name, raw)
    n = len(raw)
    out = np.empty((n,), dtype=np.int32)
    try:
        from tensorflow_datasets.proto import tf_example_pb2

        parse = tf_example_pb2.Example.FromString
        for start in range(0, n, _CHUNK):
            recs = raw.__getitems__(list(range(start, min(start + _CHUNK, n))))
            out[start : start + len(recs)] = [
                parse(r).features.feature["label"].int64_list.value[0] for r in recs
            ]
    except Exception:
        # Not tf.Example records (or proto layout changed): let tfds deserialize,
        # leaving images as encoded bytes.
        src = _open(name, split, data_dir, decoders={"image": tfds.decode.SkipDecoding()})
        for start in range(0, n, _CHUNK):
            recs = src.__getitems__(list(range(start, min(start + _CHUNK, n))))
            out[start : start + len(recs)] = [r["label"] for r in recs]
    out.setflags(write=False)
    return out


def load_labels(name: str, split: str, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """All labels of a TFDS split, without decoding any image.

    About 0.7 s for the 50,000 CIFAR-10 training records; cached per process
    (keyed by name, TFDS split and resolved data dir).

    Args:
      name: a key of `DATASETS` (``"cifar10"``, ``"cifar100"``, ``"tiny_imagenet"``).
      split: ``"train"`` or ``"test"`` (-> the dataset's `DatasetInfo.test_split`,
        see `tfds_split`), or another TFDS split name of the dataset.
      data_dir: TFDS data dir; None -> ``$TFDS_DATA_DIR`` or the TFDS default.

    Returns:
      int32 ``[N]`` labels in TFDS record order (a fresh, writable copy).

    Raises:
      ValueError: unknown dataset name or split.
      DatasetNotFoundError: the dataset is not prepared in the data dir.
    """
    return _cached_labels(name, tfds_split(name, split), resolve_data_dir(data_dir)).copy()


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    progress: bool = True,
    lazy: bool = False,
) -> Split:
    """Reads (and decodes) a TFDS split, or selected records of it, into memory.

    Args:
      name: a key of `DATASETS` (``"cifar10"``, ``"cifar100"``, ``"tiny_imagenet"``).
      split: ``"train"`` or ``"test"`` (-> the dataset's `DatasetInfo.test_split`,
        see `tfds_split`), or another TFDS split name of the dataset.
      data_dir: TFDS data dir; None -> ``$TFDS_DATA_DIR`` or the TFDS default.
      indices: record positions ``[M]`` in the TFDS split to read, in the order
        wanted (only these are decoded); None reads the whole split.
      progress: show progress (a bar on a terminal, log lines elsewhere: rwsjax.report.progress).
      lazy: decode nothing now; ``images`` is a :class:`RecordImages` that
        decodes records when indexed (labels are read at once).

    Returns:
      `Split` with uint8 ``[M, H, W, C]`` images (``DATASETS[name].image_shape``:
      32x32x3 for CIFAR, 64x64x3 for Tiny-ImageNet), int32 ``[M]`` labels and
      ``source_indices`` = the record positions read.

    Raises:
      ValueError: unknown dataset name (lists the valid ones) or split name.
      IndexError: an index is outside ``[0, len(split))``.
      DatasetNotFoundError: the dataset is not prepared in the data dir; the
        message names the dir searched and the command that prepares it.
    """
    info = dataset_info(name)
    split = tfds_split(name, split)
    data_dir = resolve_data_dir(data_dir)
    src = _open(name, split, data_dir)
    _check_info(name, src)
    n_total = len(src)
    if indices is None:
        idx = np.arange(n_total, dtype=np.int64)
    else:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n_total):
            raise IndexError(
                f"indices must be in [0, {n_total}) for {name}/{split}; got range "
                f"[{idx.min()}, {idx.max()}]"
            )
    if lazy:
        labels = _cached_labels(name, split, data_dir)[idx].astype(np.int32)
        return Split(images=RecordImages(src, idx, info.image_shape), labels=labels, source_indices=idx)
    m = idx.shape[0]
    images = np.empty((m, *info.image_shape), dtype=np.uint8)
    labels = np.empty((m,), dtype=np.int32)
    with _progress(m, f"{name}/{split}", progress) as bar:
        for start in range(0, m, _CHUNK):
            chunk = idx[start : start + _CHUNK].tolist()
            recs = src.__getitems__(chunk)
            for j, r in enumerate(recs):
                images[start + j] = r["image"]
                labels[start + j] = r["label"]
            bar.update(len(chunk))
    return Split(images=images, labels=labels, source_indices=idx)
