"""Prepare a dataset as TFDS ArrayRecord: CIFAR by download, Tiny-ImageNet from its zip.

Usage::

    python -m rwsjax.data.prepare cifar10 --data_dir=/path/to/tensorflow_datasets
    python -m rwsjax.data.prepare tiny_imagenet --manual_dir=PATH/tiny-imagenet-200.zip \\
        --data_dir=/path/to/tensorflow_datasets

CIFAR (needs internet access): ``tfds.builder(name, data_dir=DIR)
.download_and_prepare(file_format="array_record")`` writes
``DIR/<name>/<version>/`` (the raw download is cached under ``DIR/downloads``);
TFDS's builder may want the ``importlib_resources`` package.

Tiny-ImageNet (no network): ``--manual_dir`` is the official
``tiny-imagenet-200.zip`` (http://cs231n.stanford.edu/tiny-imagenet-200.zip;
Le & Yang, CS231N), any zip with its layout (e.g. the subset in
``../shared``), the extracted ``tiny-imagenet-200/`` folder, or a directory
holding one of them; `rwsjax.data.tiny_imagenet` writes
``DIR/tiny_imagenet/1.0.0/`` (splits ``train`` and ``validation``).

Point rwsjax at DIR with ``TFDS_DATA_DIR=DIR`` or ``--config.data.data_dir=DIR``.
Preparing needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys

from rwsjax.data.sources import DATASETS, resolve_data_dir

__all__ = ["TINY_IMAGENET_URL", "main", "prepare"]

#: Where the official Tiny-ImageNet archive is downloaded from (by hand).
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def prepare(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    manual_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> str:
    """Writes dataset `name` as ArrayRecord under `data_dir`.

    A no-op if it is already prepared there (unless `overwrite`, Tiny-ImageNet only).

    Args:
      name: a key of `rwsjax.data.sources.DATASETS`.
      data_dir: target TFDS data dir; None -> ``$TFDS_DATA_DIR`` or the TFDS
        default.
      manual_dir: Tiny-ImageNet only, and required there: the zip, the
        extracted ``tiny-imagenet-200/`` folder, or a directory holding one
        (see `rwsjax.data.tiny_imagenet.find_source`).
      overwrite: Tiny-ImageNet only: rebuild an existing ``tiny_imagenet/1.0.0``.

    Returns:
      The directory the dataset version was written to
      (``<data_dir>/<name>/<version>``).

    Raises:
      ValueError: unknown dataset name; ``tiny_imagenet`` without
        `manual_dir` (the message says where to get the archive); `manual_dir`
        or `overwrite` for a CIFAR dataset; a malformed Tiny-ImageNet archive.
      FileNotFoundError: the Tiny-ImageNet archive is missing.
      Whatever TFDS raises on download/preparation failure (e.g. no network).
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
    if manual_dir is not None or overwrite:
        raise ValueError(f"--manual_dir / --overwrite are for tiny_imagenet only; {name} is downloaded by TFDS")
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    return os.fspath(builder.data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rwsjax.data.prepare",
        description="Prepare a dataset as TFDS ArrayRecord (CIFAR: downloads it; tiny_imagenet: from its zip).",
    )
    parser.add_argument("name", choices=sorted(DATASETS), help="dataset to prepare")
    parser.add_argument(
        "--data_dir",
        "--data-dir",
        default=None,
        help="TFDS data dir to write to (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--manual_dir",
        "--manual-dir",
        default=None,
        help=f"tiny_imagenet: the tiny-imagenet-200.zip ({TINY_IMAGENET_URL}), a zip with its layout, "
        "the extracted tiny-imagenet-200/ folder, or a directory holding one",
    )
    parser.add_argument("--overwrite", action="store_true", help="tiny_imagenet: rebuild an existing version")
    args = parser.parse_args(argv)
    existed = False
    if args.name == "tiny_imagenet" and not args.overwrite:
        from rwsjax.data.tiny_imagenet import NAME, VERSION

        existed = os.path.isfile(os.path.join(resolve_data_dir(args.data_dir), NAME, VERSION, "dataset_info.json"))
    try:
        out = prepare(args.name, args.data_dir, manual_dir=args.manual_dir, overwrite=args.overwrite)
    except ModuleNotFoundError as e:
        print(f"error: {e}. Install it (e.g. `pip install {e.name}`) and retry.", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if existed:
        print(f"{args.name} was already prepared in {out}; left as it is (--overwrite rebuilds it)")
    else:
        print(f"Prepared {args.name} (ArrayRecord) in {out}")
    print(f"Use it with: TFDS_DATA_DIR={resolve_data_dir(args.data_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
