"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) as TFDS datasets, built from the official python-version archives.

Source: Alex Krizhevsky, "Learning Multiple Layers of Features from Tiny
Images", tech. report, University of Toronto, 2009;
https://www.cs.toronto.edu/~kriz/cifar.html. The *python version* archives
(``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``; the ones
torchvision downloads) hold pickled ``{b"data": uint8 [N, 3072] (R, G, B
planes of 32x32), b"labels" | b"fine_labels", b"coarse_labels", ...}``
batches; they are read straight from the tar (nothing is extracted), with an
unpickler that accepts only NumPy arrays and built-in containers.

What is written is TFDS's own ``cifar10`` / ``cifar100`` 3.0.2 (stock
``tensorflow_datasets/image_classification/cifar.py``), record for record:
the same features (``id`` Text ``"train_00000"``, ``image`` Image uint8
``[32, 32, 3]``, ``label`` ClassLabel with the archive's class names, and for
CIFAR-100 ``coarse_label``), splits ``train`` / ``test``, keys (the index in
archive order) and therefore the same shuffled record order. So a copy made
by stock TFDS and one made here read identically (``tests/test_prepare.py``
builds both from one archive of real images and compares them). The
difference is only how: images are encoded to PNG with Pillow instead of
TensorFlow, statistics are skipped, and no TensorFlow is imported.

Build (or let the main job do it)::

    python -m rwsjax.data.prepare cifar10 --data_dir=DIR                                    # downloads
    python -m rwsjax.data.prepare cifar10 --manual_dir=PATH/cifar-10-python.tar.gz --data_dir=DIR

then read it like any TFDS dataset, with or without this module imported::

    tfds.data_source("cifar10", split="train", data_dir=DIR)

The builders are not registered with TFDS (``skip_registration``): reading
goes through TFDS's own ``cifar10`` / ``cifar100`` entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["ARCHIVES", "Archive", "Cifar10", "Cifar100", "download", "find_source", "prepare"]

VERSION = "3.0.2"
IMAGE_SHAPE = (32, 32, 3)
HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"

_CITATION = """\
@TECHREPORT{Krizhevsky09learningmultiple,
    author = {Alex Krizhevsky},
    title = {Learning multiple layers of features from tiny images},
    institution = {},
    year = {2009}
}
"""


@dataclasses.dataclass(frozen=True)
class Archive:
    """One official python-version archive.

    Attributes:
      name: the TFDS dataset it becomes (``cifar10`` / ``cifar100``).
      url: where it is downloaded from.
      md5: MD5 of the official file (checked after a download).
      size_mb: its size in MB (for messages).
      root: the folder inside the tar (``cifar-10-batches-py``).
      train: member names of the training batches, in order.
      test: member names of the test batches.
      meta: member holding the class names.
      label_keys: ``(TFDS feature, pickle key)`` for each label, TFDS order.
      names_keys: pickle key in `meta` of each label's class names.
      classes: ``(TFDS feature, class count)`` in the stock builder's feature order.
      description: the stock builder's description.
    """

    name: str
    url: str
    md5: str
    size_mb: int
    root: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_keys: tuple[tuple[str, bytes], ...]
    names_keys: tuple[bytes, ...]
    classes: tuple[tuple[str, int], ...]
    description: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[1]


ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive(
        name="cifar10", url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a", size_mb=163, root="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",), meta="batches.meta",
        label_keys=(("label", b"labels"),), names_keys=(b"label_names",), classes=(("label", 10),),
        description=("The CIFAR-10 dataset consists of 60000 32x32 colour images in 10 classes, with 6000 images "
                     "per class. There are 50000 training images and 10000 test images."),
    ),
    "cifar100": Archive(
        name="cifar100", url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85", size_mb=161, root="cifar-100-python",
        train=("train",), test=("test",), meta="meta",
        label_keys=(("coarse_label", b"coarse_labels"), ("label", b"fine_labels")),
        names_keys=(b"coarse_label_names", b"fine_label_names"), classes=(("label", 100), ("coarse_label", 20)),
        description=("This dataset is just like the CIFAR-10, except it has 100 classes containing 600 images each. "
                     "There are 500 training images and 100 testing images per class. The 100 classes in the "
                     'CIFAR-100 are grouped into 20 superclasses. Each image comes with a "fine" label (the class '
                     'to which it belongs) and a "coarse" label (the superclass to which it belongs).'),
    ),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts, lists, bytes, NumPy arrays) and refuses any other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytearray"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        out = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise ValueError(f"{where} is not a CIFAR python-version batch ({e})") from e
    if not isinstance(out, dict):
        raise ValueError(f"{where} is not a CIFAR python-version batch (a {type(out).__name__}, not a dict)")
    return out


def find_source(name: str, path: str | os.PathLike) -> str:
    """Resolves what the user points at to the archive or extracted folder of dataset `name`.

    Args:
      name: ``cifar10`` or ``cifar100``.
      path: the ``.tar.gz`` itself (any name); the extracted folder
        (``cifar-10-batches-py/``); or a directory holding either under its
        official name (a TFDS manual dir, or torchvision's ``root``).

    Returns:
      Absolute path of the tar or of the extracted folder.

    Raises:
      FileNotFoundError: nothing of the above at `path` (the message names the
        archive and its URL).
      ValueError: a file that is not a tar archive.
    """
    a = ARCHIVES[name]
    p = os.path.abspath(os.path.expanduser(os.fspath(path)))
    hint = f"download {a.url} ({a.size_mb} MB) and pass it with --manual_dir=PATH/{a.file_name}"
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p} does not exist: {hint}")
    if os.path.isfile(p):
        if not tarfile.is_tarfile(p):
            raise ValueError(f"{p} is not a tar archive: {hint}")
        return p
    if os.path.isfile(os.path.join(p, a.meta)):
        return p
    for candidate in (os.path.join(p, a.root), os.path.join(p, a.file_name)):
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"{p} holds neither {a.file_name} nor an extracted {a.root}/ folder: {hint}")


class _Reader:
    """The members of a python-version archive, from the tar (read in place) or an extracted folder."""

    def __init__(self, archive: Archive, source: str):
        self.archive, self.source = archive, source
        self._tar = None
        self._members = {}
        if os.path.isfile(source):
            self._tar = tarfile.open(source, "r:*")
            for m in self._tar.getmembers():
                if m.isfile():
                    self._members[os.path.basename(m.name)] = m

    def where(self, member: str) -> str:
        return f"{self.source}:{member}" if self._tar is not None else os.path.join(self.source, member)

    def read(self, member: str) -> dict:
        if self._tar is None:
            path = os.path.join(self.source, member)
            if not os.path.isfile(path):
                raise ValueError(f"{path} is missing: not an extracted {self.archive.root}/ folder "
                                 f"(use {self.archive.url})")
            with open(path, "rb") as f:
                return _unpickle(f.read(), path)
        if member not in self._members:
            other = next((n for n, a in ARCHIVES.items() if n != self.archive.name and a.meta in self._members), None)
            what = f"it is the {other} archive" if other else "it is not a python-version CIFAR archive"
            if any(k.endswith(".bin") for k in self._members):
                what = "it is a binary-version archive; use the python version"
            raise ValueError(f"{self.source} has no {member} ({what}): use {self.archive.url}")
        return _unpickle(self._tar.extractfile(self._members[member]).read(), self.where(member))

    def close(self):
        if self._tar is not None:
            self._tar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _label_names(reader: _Reader) -> list[list[str]]:
    meta = reader.read(reader.archive.meta)
    out = []
    for key in reader.archive.names_keys:
        if key not in meta:
            raise ValueError(f"{reader.where(reader.archive.meta)} has no {key.decode()} list")
        out.append([n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]])
    return out


def _batches(reader: _Reader, members) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Yields ``(images uint8 [N, 32, 32, 3], [labels int [N] per label key])`` per batch member."""
    for member in members:
        batch = reader.read(member)
        where = reader.where(member)
        data = np.asarray(batch.get(b"data"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{where}: 'data' is {data.dtype} {data.shape}; CIFAR batches hold uint8 [N, 3072]")
        labels = []
        for feature, key in reader.archive.label_keys:
            if key not in batch:
                raise ValueError(f"{where} has no {key.decode()!r} list")
            lab = np.asarray(batch[key], np.int64)
            if lab.shape != (len(data),):
                raise ValueError(f"{where}: {len(lab)} {key.decode()} for {len(data)} images")
            labels.append(lab)
        yield data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG")
    return buf.getvalue()


class _CifarBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """TFDS's ``cifar10``/``cifar100`` 3.0.2 written from a python-version archive without TensorFlow.

    Args:
      source: the tar, the extracted folder, or a directory holding either
        (see `find_source`).
      **kwargs: `tfds.core.DatasetBuilder` arguments (``data_dir``, ``file_format``, ...).
    """

    VERSION = tfds.core.Version(VERSION)
    _archive: Archive

    def __init__(self, *, source: str | os.PathLike, **kwargs):
        self._source = find_source(self._archive.name, source)
        with _Reader(self._archive, self._source) as r:
            self._names = _label_names(r)
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._archive.description,
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "image": tfds.features.Image(shape=IMAGE_SHAPE),
                **{f: tfds.features.ClassLabel(num_classes=n) for f, n in self._archive.classes},
            }),
            supervised_keys=("image", "label"), homepage=HOMEPAGE, citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        for (feature, _), names in zip(self._archive.label_keys, self._names):
            self.info.features[feature].names = names
        return {"train": self._generate_examples("train_", self._archive.train),
                "test": self._generate_examples("test_", self._archive.test)}

    def _generate_examples(self, prefix: str, members) -> Iterator[tuple[int, dict]]:
        from rwsjax.report.progress import bar

        index = 0  # the key, as in stock TFDS: it fixes the shuffled record order
        with _Reader(self._archive, self._source) as reader, \
                bar(desc=f"prepare {self._archive.name} {prefix[:-1]}", unit="img") as progress:
            for images, labels in _batches(reader, members):
                progress.update(0)
                for k in range(len(images)):
                    progress.update(1)
                    record = {f: int(lab[k]) for (f, _), lab in zip(self._archive.label_keys, labels)}
                    record["id"] = f"{prefix}{index:05d}"
                    record["image"] = _png(images[k])
                    yield index, record
                    index += 1


class Cifar10(_CifarBuilder, skip_registration=True):
    """``cifar10`` 3.0.2 (stock TFDS features, splits, keys and description)."""

    name = "cifar10"
    _archive = ARCHIVES["cifar10"]


class Cifar100(_CifarBuilder, skip_registration=True):
    """``cifar100`` 3.0.2 (stock TFDS features, splits, keys and description)."""

    name = "cifar100"
    _archive = ARCHIVES["cifar100"]


BUILDERS = {"cifar10": Cifar10, "cifar100": Cifar100}


class DownloadError(OSError):
    """The archive could not be downloaded (no network, HTTP error, wrong checksum)."""


def download(name: str, directory: str | os.PathLike, *, url: str | None = None, md5: str | None = None,
             timeout: float = 10.0) -> str:
    """Downloads the official archive of `name` into `directory` (atomically; checksum verified).

    A no-op when ``directory/<file name>`` is already there.

    Args:
      name: ``cifar10`` or ``cifar100``.
      directory: where to put the archive (created if missing).
      url / md5: the official ones when None.
      timeout: seconds to wait for the server to answer (and for each read).

    Returns:
      Path of the archive.

    Raises:
      DownloadError: the server cannot be reached, answers with an error, or
        the file's MD5 differs (nothing is left behind in any of these cases).
    """
    a = ARCHIVES[name]
    url, md5 = url or a.url, md5 or a.md5
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(os.fspath(directory), a.file_name)
    if os.path.isfile(path):
        return path
    part = f"{path}.part{os.getpid()}"
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            import sys

            from rwsjax.report.progress import bar

            print(f"[data] downloading {url} ({a.size_mb} MB) into {directory}", file=sys.stderr)
            total = int(response.headers.get("Content-Length") or 0) or None
            with bar(total=total, desc=f"download {a.file_name}", unit="B", unit_scale=True) as progress:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DownloadError(f"{url} gave a file whose MD5 is {digest.hexdigest()}, not {md5}")
        os.replace(part, path)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if isinstance(e, DownloadError):
            raise
        raise DownloadError(f"cannot download {url} ({getattr(e, 'reason', None) or e})") from e
    finally:
        if os.path.exists(part):
            os.remove(part)
    return path


def prepare(name: str, source: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> str:
    """Builds ``name`` 3.0.2 (ArrayRecord) in a TFDS data dir from the python-version archive.

    Writes ``<data_dir>/<name>/3.0.2/`` atomically (TFDS writes into a
    temporary folder and renames it); a no-op when it is already there.
    About 30 s for CIFAR-10 on 2 cores.

    Args:
      name: ``cifar10`` or ``cifar100``.
      source: the archive / extracted folder / directory holding either (see `find_source`).
      data_dir: TFDS data dir; None -> ``$TFDS_DATA_DIR``, else the TFDS default.

    Returns:
      The version directory (``<data_dir>/<name>/3.0.2``).

    Raises:
      FileNotFoundError / ValueError: missing or malformed archive (the message names it and the URL).
    """
    from rwsjax.data.sources import resolve_data_dir

    builder = BUILDERS[name](source=source, data_dir=resolve_data_dir(data_dir), file_format="array_record")
    tfds.display_progress_bar(False)  # TFDS's own bars print a line per update off a terminal; ours do not
    try:
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP),
        )
    finally:
        tfds.display_progress_bar(True)
    return os.fspath(builder.data_dir)
