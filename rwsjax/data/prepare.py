"""Prepare a dataset as TFDS ArrayRecord, without TensorFlow: CIFAR from its archive (downloaded or given), Tiny-ImageNet from its zip.

Usage::

    rwsjax prepare cifar10 [--data_dir=DIR]                         # downloads the archive (163 MB)
    rwsjax prepare cifar10 --manual_dir=PATH/cifar-10-python.tar.gz [--data_dir=DIR]
    rwsjax prepare tiny_imagenet --manual_dir=PATH/tiny-imagenet-200.zip [--data_dir=DIR]

(or ``python -m rwsjax.data.prepare ...``). The main job calls `ensure` for
the datasets it reads, so a run prepares what is missing by itself
(``--config.data.manual_dir`` points it at a downloaded archive,
``--config.data.download=False`` forbids downloading).

* CIFAR-10/100: the official python-version archive
  (`rwsjax.data.cifar.ARCHIVES`: URL, MD5) -- ``--manual_dir`` (the
  ``.tar.gz``, the extracted folder, or a directory holding either, e.g.
  torchvision's ``root``), else ``DIR/downloads/<archive>`` if an earlier
  download left it there, else downloaded into ``DIR/downloads/`` (MD5
  checked). Written by `rwsjax.data.cifar` as TFDS's own ``cifar10`` /
  ``cifar100`` 3.0.2.
* Tiny-ImageNet: ``--manual_dir`` is the official ``tiny-imagenet-200.zip``
  (http://cs231n.stanford.edu/tiny-imagenet-200.zip), a zip with its layout
  (e.g. the subset in ``../shared``), the extracted folder, or a directory
  holding one; `rwsjax.data.tiny_imagenet` writes ``DIR/tiny_imagenet/1.0.0/``.

``DIR`` defaults to ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``; point
rwsjax at another one with ``TFDS_DATA_DIR=DIR`` or ``--config.data.data_dir=DIR``.
"""

from __future__ import annotations

import os
import shutil
import sys

from rwsjax.data.sources import DATASETS, DatasetNotFoundError, resolve_data_dir

__all__ = ["TINY_IMAGENET_URL", "ensure", "main", "prepare", "prepared_dir"]

#: Where the official Tiny-ImageNet archive is downloaded from (by hand).
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def prepared_dir(name: str, data_dir: str | os.PathLike | None = None) -> str | None:
    """``<data_dir>/<name>/<version>`` if a version of `name` is prepared there as ArrayRecord, else None."""
    root = os.path.join(resolve_data_dir(data_dir), name)
    if not os.path.isdir(root):
        return None
    for version in sorted(os.listdir(root), reverse=True):
        d = os.path.join(root, version)
        if os.path.isfile(os.path.join(d, "dataset_info.json")) and any(".array_record" in f for f in os.listdir(d)):
            return d
    return None


def ensure(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    manual_dir: str | os.PathLike | None = None,
    download: bool = True,
    flag: str = "--manual_dir",
) -> str:
    """Makes sure dataset `name` is prepared in `data_dir`: a no-op when it is, else `prepare` from the archive.

    CIFAR's archive is `manual_dir`, else one left in ``<data_dir>/downloads/``
    by an earlier download, else downloaded (when `download`).

    Args:
      name: a key of `rwsjax.data.sources.DATASETS`.
      data_dir: the TFDS data dir; None -> ``$TFDS_DATA_DIR`` or the TFDS default.
      manual_dir: the downloaded archive (or a directory holding it).
      download: whether a missing CIFAR archive may be downloaded.
      flag: how the caller's user passes `manual_dir` (named in messages).

    Returns:
      The prepared version directory.

    Raises:
      DatasetNotFoundError: it is not prepared and cannot be (no archive, no
        network or downloading off): one line naming the archive, its URL and
        `flag`. Also a malformed archive (the message says what is wrong).
    """
    done = prepared_dir(name, data_dir)
    if done:
        return done
    data_dir = resolve_data_dir(data_dir)
    if name == "tiny_imagenet":
        if not manual_dir:
            raise DatasetNotFoundError(
                f"tiny_imagenet is not prepared in {data_dir}: download {TINY_IMAGENET_URL} (about 240 MB; or a zip "
                f"with its layout) and pass it with {flag}=PATH/tiny-imagenet-200.zip")
        try:
            return prepare(name, data_dir, manual_dir=manual_dir)
        except (FileNotFoundError, ValueError) as e:
            raise DatasetNotFoundError(" ".join(str(e).split())) from e
    from rwsjax.data import cifar

    archive = cifar.ARCHIVES[name]
    cached = os.path.join(data_dir, "downloads", archive.file_name)
    source = manual_dir or (cached if os.path.isfile(cached) else None)
    if source is None:
        if not download:
            raise DatasetNotFoundError(
                f"{name} is not prepared in {data_dir} and downloading is off: download {archive.url} "
                f"({archive.size_mb} MB) and pass it with {flag}=PATH/{archive.file_name}")
        try:
            source = cifar.download(name, os.path.join(data_dir, "downloads"))
        except cifar.DownloadError as e:
            raise DatasetNotFoundError(
                f"{name} is not prepared in {data_dir} and {e}: download {archive.url} ({archive.size_mb} MB) "
                f"on a machine with internet access and pass it with {flag}=PATH/{archive.file_name}") from None
    try:
        print(f"[data] preparing {name} in {data_dir} from {source}", file=sys.stderr)
        return cifar.prepare(name, source, data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise DatasetNotFoundError(" ".join(str(e).split())) from e


def prepare(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    manual_dir: str | os.PathLike | None = None,
    download: bool = True,
    overwrite: bool = False,
) -> str:
    """Writes dataset `name` as ArrayRecord under `data_dir` (a no-op if it is there, unless `overwrite`).

    Args:
      name: a key of `rwsjax.data.sources.DATASETS`.
      data_dir: target TFDS data dir; None -> ``$TFDS_DATA_DIR`` or the TFDS default.
      manual_dir: the archive (CIFAR: optional, see `ensure`; Tiny-ImageNet:
        required, see `rwsjax.data.tiny_imagenet.find_source`).
      download: CIFAR: whether a missing archive may be downloaded.
      overwrite: delete the prepared version first and rebuild it.

    Returns:
      The directory the dataset version was written to (``<data_dir>/<name>/<version>``).

    Raises:
      ValueError: unknown dataset name; ``tiny_imagenet`` without `manual_dir`
        (the message says where to get the archive); a malformed archive.
      FileNotFoundError: the archive named by `manual_dir` is missing.
      DatasetNotFoundError: CIFAR without an archive and no download possible.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names are: {', '.join(sorted(DATASETS))}")
    data_dir = resolve_data_dir(data_dir)
    if name == "tiny_imagenet":
        if manual_dir is None or str(manual_dir) == "":
            raise ValueError(
                "tiny_imagenet is built from the Tiny-ImageNet archive, which must be downloaded by hand: "
                f"get {TINY_IMAGENET_URL} (about 240 MB; or use a zip with its layout) and pass it with "
                f"--manual_dir=PATH/TO/tiny-imagenet-200.zip (or the extracted tiny-imagenet-200/ folder)"
            )
        from rwsjax.data import tiny_imagenet

        return tiny_imagenet.prepare(manual_dir, data_dir, overwrite=overwrite)
    done = prepared_dir(name, data_dir)
    if done and overwrite:
        shutil.rmtree(done)
    return ensure(name, data_dir, manual_dir=manual_dir or None, download=download)


def _define(fv) -> None:
    from absl import flags

    flags.DEFINE_string("data_dir", None, "TFDS data dir to write to (default: $TFDS_DATA_DIR, else "
                        "~/tensorflow_datasets)", flag_values=fv)
    flags.DEFINE_string("manual_dir", None, "the downloaded archive: cifar-10-python.tar.gz / cifar-100-python.tar.gz "
                        f"(optional: downloaded when missing) or tiny-imagenet-200.zip ({TINY_IMAGENET_URL}; "
                        "required), its extracted folder, or a directory holding one", flag_values=fv)
    flags.DEFINE_boolean("download", True, "CIFAR: download the archive when no --manual_dir is given",
                         flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "rebuild a dataset that is already prepared", flag_values=fv)


def main(argv: list[str] | None = None, prog: str = "python -m rwsjax.data.prepare") -> int:
    from rwsjax.cli import fail, parse

    parsed = parse(sys.argv[1:] if argv is None else argv, prog, __doc__.splitlines()[0], _define,
                   positionals=f"{{{'|'.join(sorted(DATASETS))}}} ", nargs=(1, 1))
    if isinstance(parsed, int):
        return parsed
    fv, (name,) = parsed
    if name not in DATASETS:
        return fail(f"unknown dataset {name!r}; {prog} prepares {', '.join(sorted(DATASETS))}")
    existed = prepared_dir(name, fv.data_dir) is not None and not fv.overwrite
    try:
        out = prepare(name, fv.data_dir, manual_dir=fv.manual_dir, download=fv.download, overwrite=fv.overwrite)
    except (ValueError, FileNotFoundError) as e:  # DatasetNotFoundError is a FileNotFoundError
        return fail(e)
    if existed:
        print(f"{name} was already prepared in {out}; left as it is (--overwrite rebuilds it)")
    else:
        print(f"Prepared {name} (ArrayRecord) in {out}")
    print(f"Use it with: TFDS_DATA_DIR={resolve_data_dir(fv.data_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
