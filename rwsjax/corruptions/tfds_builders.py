"""TFDS builders that write our corrupted arrays as ``cifar10_corrupted`` / ``cifar100_corrupted`` / ``tiny_imagenet_corrupted``.

Imported lazily (it imports ``tensorflow_datasets``). Writing needs no
TensorFlow: images are handed to TFDS as PNG bytes encoded with Pillow (TFDS
would otherwise call ``tf.image.encode_png``), statistics are skipped, and
the file format is ArrayRecord.

* ``cifar10_corrupted``: a subclass of TFDS's own builder
  (``tensorflow_datasets/image_classification/cifar10_corrupted.py``), so the
  name, version (1.0.0), builder configs (``<corruption>_<severity>`` with
  TFDS's spellings ``frosted_glass_blur`` and ``elastic``), features
  (``image``: Image(32, 32, 3) uint8, ``label``: ClassLabel(10)), supervised
  keys, citation and homepage are TFDS's. Reading goes through TFDS's
  registered builder, exactly as for a real CIFAR-10-C download.
* ``cifar100_corrupted``: TFDS has no such builder; this one mirrors the
  cifar10 one with CIFAR-100's fine ``label`` (ClassLabel with the 100 names
  of TFDS's ``cifar100``) and the same config names. It is not registered;
  ``tfds.data_source("cifar100_corrupted/<config>", data_dir=...)`` reads it
  from its files (TFDS's read-only builder).
* ``tiny_imagenet_corrupted``: Tiny-ImageNet-C (Hendrycks & Dietterich's
  ``make_tinyimagenet_c.py``, 64x64 constants), the same configs, ``image``
  Image(64, 64, 3) and ``label`` ClassLabel with the 200 sorted wnids of the
  source ``tiny_imagenet`` dataset. Not registered either. (The official
  Tiny-ImageNet-C is a folder of JPEGs, not a TFDS dataset.)

All write with ``disable_shuffling=True`` so record ``j`` is the ``j``-th
example handed over (TFDS otherwise orders records by a hash of their keys);
the source positions of the records are kept in rwsjax's sidecar file.
"""

from __future__ import annotations

import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import cifar10_corrupted as _tfds_c10c

from rwsjax.corruptions.params import CORRUPTIONS, SEVERITIES, TFDS_CORRUPTION_NAMES

__all__ = [
    "VERSION",
    "Cifar10CorruptedWriter",
    "Cifar100CorruptedWriter",
    "TinyImagenetCorruptedWriter",
    "writer_class",
]

VERSION = "1.0.0"

_DESCRIPTION_OURS = """\
Common corruptions (Hendrycks & Dietterich, ICLR 2019) of CIFAR images,
generated locally by rwsjax.corruptions (a faithful re-implementation of
make_cifar_c.py with the 32x32 constants). The file rwsjax_corruption.json next
to this dataset_info.json records the source split and the source positions of
the records (a subset must not be mistaken for the full set).
"""

_DESCRIPTION_TINY = """\
Common corruptions (Hendrycks & Dietterich, ICLR 2019) of Tiny-ImageNet images
(Le & Yang, CS231N), generated locally by rwsjax.corruptions (a re-implementation
of make_tinyimagenet_c.py with the 64x64 constants; stored losslessly as PNG,
where the official Tiny-ImageNet-C saved JPEG quality 85). The "test" split
corrupts the official validation images. The file rwsjax_corruption.json next
to this dataset_info.json records the source split and the source positions of
the records (a subset must not be mistaken for the full set).
"""


class _GeneratedMixin:
    """Takes the examples from an iterable handed to the constructor instead of a download."""

    def __init__(self, *, examples=None, split_name: str = "test", label_names=None, **kwargs):
        self._rws_examples = examples
        self._rws_split = split_name
        self._rws_label_names = label_names
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        if self._rws_examples is None:
            raise RuntimeError("This builder only writes examples handed to it by rwsjax.corruptions.generate")
        return {self._rws_split: self._rws_examples}

    def _generate_examples(self, *args, **kwargs):  # pragma: no cover - replaced by _split_generators
        raise NotImplementedError


class Cifar10CorruptedWriter(_GeneratedMixin, _tfds_c10c.Cifar10Corrupted, skip_registration=True):
    """Writes ``cifar10_corrupted/<config>`` with TFDS's features, from rwsjax's arrays."""

    name = "cifar10_corrupted"

    def _info(self):
        base = super()._info()
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION_OURS,
            features=base.features,
            supervised_keys=base.supervised_keys,
            homepage=base.homepage,
            citation=base.citation,
            disable_shuffling=True,
        )


def _c100_configs():
    return [
        tfds.core.BuilderConfig(
            name=f"{TFDS_CORRUPTION_NAMES[c]}_{s}",
            description=f"Corruption method: {TFDS_CORRUPTION_NAMES[c]}, severity level: {s}",
        )
        for c in sorted(CORRUPTIONS, key=lambda c: TFDS_CORRUPTION_NAMES[c])
        for s in SEVERITIES
    ]


class _OwnCorruptedWriter(_GeneratedMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A corrupted dataset TFDS has no builder for: ``image`` + ``label``, configs as ``cifar10_corrupted``.

    Subclasses set ``name``, ``_IMAGE_SHAPE``, ``_NUM_CLASSES`` and ``_DESCRIPTION``;
    label names are those handed to the constructor (the source's), else ``_NUM_CLASSES``.
    """

    VERSION = tfds.core.Version(VERSION)
    BUILDER_CONFIGS = _c100_configs()
    _IMAGE_SHAPE: tuple[int, int, int]
    _NUM_CLASSES: int
    _DESCRIPTION: str

    def _info(self):
        names = self._rws_label_names
        label = (tfds.features.ClassLabel(names=list(names)) if names
                 else tfds.features.ClassLabel(num_classes=self._NUM_CLASSES))
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._DESCRIPTION,
            features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=self._IMAGE_SHAPE),
                                                 "label": label}),
            supervised_keys=("image", "label"),
            homepage="https://github.com/hendrycks/robustness",
            citation=_tfds_c10c._CITATION,
            disable_shuffling=True,
        )


class Cifar100CorruptedWriter(_OwnCorruptedWriter, skip_registration=True):
    """Writes ``cifar100_corrupted/<config>`` (image + fine label), from rwsjax's arrays."""

    name = "cifar100_corrupted"
    RELEASE_NOTES = {"1.0.0": "Generated by rwsjax.corruptions (same layout as cifar10_corrupted)."}
    _IMAGE_SHAPE = (32, 32, 3)
    _NUM_CLASSES = 100
    _DESCRIPTION = _DESCRIPTION_OURS


class TinyImagenetCorruptedWriter(_OwnCorruptedWriter, skip_registration=True):
    """Writes ``tiny_imagenet_corrupted/<config>`` (Tiny-ImageNet-C: 64x64 image + wnid label) from rwsjax's arrays."""

    name = "tiny_imagenet_corrupted"
    RELEASE_NOTES = {"1.0.0": "Generated by rwsjax.corruptions (64x64 constants of make_tinyimagenet_c.py)."}
    _IMAGE_SHAPE = (64, 64, 3)
    _NUM_CLASSES = 200
    _DESCRIPTION = _DESCRIPTION_TINY


_WRITERS = {
    "cifar10_corrupted": Cifar10CorruptedWriter,
    "cifar100_corrupted": Cifar100CorruptedWriter,
    "tiny_imagenet_corrupted": TinyImagenetCorruptedWriter,
}


def writer_class(dataset_name: str):
    """The writer builder class for ``cifar10_corrupted``, ``cifar100_corrupted`` or ``tiny_imagenet_corrupted``."""
    return _WRITERS[dataset_name]
