"""Common corruptions of CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C (Hendrycks & Dietterich, ICLR 2019).

A faithful, batched re-implementation of the authors' ``make_cifar_c.py``
(and, with the 64 px constants, ``make_tinyimagenet_c.py``):

* `corrupt` / `corrupt_batch`: uint8 images in, uint8 images out, one of the
  19 `CORRUPTIONS` at severity 1..5; per-image deterministic randomness.
* `rwsjax.corruptions.params`: the constant tables (`PARAMS[32]`,
  `PARAMS[64]`) and the corruption lists.
* `rwsjax.corruptions.ops`: the 19 batched operations with explicit
  constants.
* `generate` / `load_corrupted`: corrupted splits as TFDS datasets
  ``cifar10_corrupted/<config>`` (the layout of TFDS's real CIFAR-10-C) and
  ``cifar100_corrupted/<config>``.
* `summarize`: mean corruption accuracy over the 15 benchmark corruptions
  and over RiFT's 18.
* ``python -m rwsjax.corruptions generate|gallery``: command line.

See ``docs/corruptions.md``.
"""

from rwsjax.corruptions.core import corrupt, corrupt_batch, image_rng
from rwsjax.corruptions.datasets import (
    config_name,
    corrupted_name,
    generate,
    is_generated,
    load_corrupted,
    stored_indices,
)
from rwsjax.corruptions.metrics import summarize
from rwsjax.corruptions.params import (
    BENCHMARK_CORRUPTIONS,
    CORRUPTION_IDS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    MONOTONE_CORRUPTIONS,
    NON_MONOTONE_CORRUPTIONS,
    PARAMS,
    RIFT_CORRUPTIONS,
    SEVERITIES,
    TFDS_CORRUPTION_NAMES,
    params_for,
)

__all__ = [
    "BENCHMARK_CORRUPTIONS",
    "CORRUPTIONS",
    "CORRUPTION_IDS",
    "EXTRA_CORRUPTIONS",
    "MONOTONE_CORRUPTIONS",
    "NON_MONOTONE_CORRUPTIONS",
    "PARAMS",
    "RIFT_CORRUPTIONS",
    "SEVERITIES",
    "TFDS_CORRUPTION_NAMES",
    "config_name",
    "corrupt",
    "corrupt_batch",
    "corrupted_name",
    "generate",
    "image_rng",
    "is_generated",
    "load_corrupted",
    "params_for",
    "stored_indices",
    "summarize",
]
