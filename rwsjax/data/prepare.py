"""Download and prepare a dataset as TFDS ArrayRecord (needs internet access).

Usage::

    python -m rwsjax.data.prepare cifar10 --data_dir=/path/to/tensorflow_datasets

This runs ``tfds.builder(name, data_dir=DIR).download_and_prepare(
file_format="array_record")`` and writes ``DIR/<name>/<version>/`` (the raw
download is cached under ``DIR/downloads``). Point rwsjax at it with
``TFDS_DATA_DIR=DIR`` or ``--config.data.data_dir=DIR``. Preparing needs no
TensorFlow; TFDS's builder may want the ``importlib_resources`` package.
"""

from __future__ import annotations

import argparse
import os
import sys

from rwsjax.data.sources import DATASETS, resolve_data_dir

__all__ = ["main", "prepare"]


def prepare(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Downloads `name` and writes it as ArrayRecord under `data_dir`.

    A no-op if it is already prepared there.

    Args:
      name: ``"cifar10"`` or ``"cifar100"``.
      data_dir: target TFDS data dir; None -> ``$TFDS_DATA_DIR`` or the TFDS
        default.

    Returns:
      The directory the dataset version was written to
      (``<data_dir>/<name>/<version>``).

    Raises:
      ValueError: unknown dataset name.
      Whatever TFDS raises on download/preparation failure (e.g. no network).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names are: {', '.join(sorted(DATASETS))}")
    import tensorflow_datasets as tfds

    data_dir = resolve_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    return os.fspath(builder.data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rwsjax.data.prepare",
        description="Download a dataset and prepare it as TFDS ArrayRecord (needs internet).",
    )
    parser.add_argument("name", choices=sorted(DATASETS), help="dataset to prepare")
    parser.add_argument(
        "--data_dir",
        "--data-dir",
        default=None,
        help="TFDS data dir to write to (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )
    args = parser.parse_args(argv)
    try:
        out = prepare(args.name, args.data_dir)
    except ModuleNotFoundError as e:
        print(f"error: {e}. Install it (e.g. `pip install {e.name}`) and retry.", file=sys.stderr)
        return 1
    print(f"Prepared {args.name} (ArrayRecord) in {out}")
    print(f"Use it with: TFDS_DATA_DIR={resolve_data_dir(args.data_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
