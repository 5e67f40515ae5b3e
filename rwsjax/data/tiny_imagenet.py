"""Tiny-ImageNet (Le & Yang, CS231N) as a TFDS dataset, built from the official archive without TensorFlow.

Source: Ya Le and Xuan Yang, "Tiny ImageNet Visual Recognition Challenge",
CS231N (Stanford, 2015); archive http://cs231n.stanford.edu/tiny-imagenet-200.zip.
200 ImageNet classes, 64x64 RGB JPEG: 500 training and 50 validation images
per class (100,000 / 10,000); the test images (``test/``) have no labels and
are not used. The official *validation* set is what papers report as the
Tiny-ImageNet "test" accuracy; rwsjax's split name ``"test"`` reads it
(``DATASETS["tiny_imagenet"].test_split == "validation"``).

Build it once (no network; reads the zip directly, nothing is extracted)::

    python -m rwsjax.data.prepare tiny_imagenet --manual_dir=PATH/tiny-imagenet-200.zip --data_dir=DIR

(or `prepare`), then read it like the CIFAR datasets, in any process, with or
without this module imported::

    tfds.data_source("tiny_imagenet", split="train", data_dir=DIR)   # or split="validation"

The dataset (``<DIR>/tiny_imagenet/1.0.0/``, ArrayRecord):

* features ``id`` (Text: the file stem, ``"n01443537_0"`` / ``"val_0"``),
  ``image`` (Image uint8 ``[64, 64, 3]``), ``label`` (ClassLabel whose names
  are the wnids of ``wnids.txt`` **sorted**: label = index of the wnid in
  sorted order, which is what torchvision's ``ImageFolder`` assigns, so the
  heads of PyTorch Tiny-ImageNet checkpoints line up);
* splits ``train`` (records sorted by (wnid, file name), the ``ImageFolder``
  order) and ``validation`` (sorted by the number in ``val_<n>.JPEG``; labels
  from ``val/val_annotations.txt`` -- ``val/images/`` is flat, so a loader
  that treats ``val/`` as class folders would label everything 0);
* record order = that order (``disable_shuffling=True``).

Images are handed to TFDS already encoded: an RGB JPEG keeps its original
bytes (decoding them gives exactly the pixels of a direct decode of the file);
a non-RGB image (about 1.9% of Tiny-ImageNet are greyscale, mode ``L``) is
converted with Pillow (``convert("RGB")``: the grey value replicated in the
three channels) and stored as PNG (lossless). So TFDS's NumPy decode path
(``tfds.data_source``; OpenCV or Pillow) always returns uint8 ``[64, 64, 3]``,
and no TensorFlow is needed to write or read. Statistics are not computed.

The builder is deliberately not registered with TFDS (``skip_registration``):
TFDS reads the prepared files with its read-only builder whatever has been
imported, exactly as for ``cifar100_corrupted``, and importing rwsjax never
changes TFDS's registry (or clashes with a future TFDS ``tiny_imagenet``).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import zipfile
from collections.abc import Iterator

import tensorflow_datasets as tfds

__all__ = [
    "ARCHIVE_NAME",
    "ARCHIVE_URL",
    "IMAGE_SHAPE",
    "MANUAL_DOWNLOAD_INSTRUCTIONS",
    "NAME",
    "ROOT",
    "VERSION",
    "WNIDS",
    "TinyImagenet",
    "find_source",
    "prepare",
]

NAME = "tiny_imagenet"
VERSION = "1.0.0"
ROOT = "tiny-imagenet-200"
ARCHIVE_NAME = "tiny-imagenet-200.zip"
ARCHIVE_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
HOMEPAGE = "http://cs231n.stanford.edu/"
IMAGE_SHAPE = (64, 64, 3)

#: The 200 wnids of the official ``wnids.txt``, sorted: ``WNIDS[label]`` is the class of ``label``.
#: Used as the label names when the builder is constructed without a source (TFDS's manual-dir
#: flow); a build from an archive takes them from its ``wnids.txt`` (and checks they agree).
WNIDS: tuple[str, ...] = (
    "n01443537", "n01629819", "n01641577", "n01644900", "n01698640", "n01742172", "n01768244", "n01770393", "n01774384", "n01774750",
    "n01784675", "n01855672", "n01882714", "n01910747", "n01917289", "n01944390", "n01945685", "n01950731", "n01983481", "n01984695",
    "n02002724", "n02056570", "n02058221", "n02074367", "n02085620", "n02094433", "n02099601", "n02099712", "n02106662", "n02113799",
    "n02123045", "n02123394", "n02124075", "n02125311", "n02129165", "n02132136", "n02165456", "n02190166", "n02206856", "n02226429",
    "n02231487", "n02233338", "n02236044", "n02268443", "n02279972", "n02281406", "n02321529", "n02364673", "n02395406", "n02403003",
    "n02410509", "n02415577", "n02423022", "n02437312", "n02480495", "n02481823", "n02486410", "n02504458", "n02509815", "n02666196",
    "n02669723", "n02699494", "n02730930", "n02769748", "n02788148", "n02791270", "n02793495", "n02795169", "n02802426", "n02808440",
    "n02814533", "n02814860", "n02815834", "n02823428", "n02837789", "n02841315", "n02843684", "n02883205", "n02892201", "n02906734",
    "n02909870", "n02917067", "n02927161", "n02948072", "n02950826", "n02963159", "n02977058", "n02988304", "n02999410", "n03014705",
    "n03026506", "n03042490", "n03085013", "n03089624", "n03100240", "n03126707", "n03160309", "n03179701", "n03201208", "n03250847",
    "n03255030", "n03355925", "n03388043", "n03393912", "n03400231", "n03404251", "n03424325", "n03444034", "n03447447", "n03544143",
    "n03584254", "n03599486", "n03617480", "n03637318", "n03649909", "n03662601", "n03670208", "n03706229", "n03733131", "n03763968",
    "n03770439", "n03796401", "n03804744", "n03814639", "n03837869", "n03838899", "n03854065", "n03891332", "n03902125", "n03930313",
    "n03937543", "n03970156", "n03976657", "n03977966", "n03980874", "n03983396", "n03992509", "n04008634", "n04023962", "n04067472",
    "n04070727", "n04074963", "n04099969", "n04118538", "n04133789", "n04146614", "n04149813", "n04179913", "n04251144", "n04254777",
    "n04259630", "n04265275", "n04275548", "n04285008", "n04311004", "n04328186", "n04356056", "n04366367", "n04371430", "n04376876",
    "n04398044", "n04399382", "n04417672", "n04456115", "n04465501", "n04486054", "n04487081", "n04501370", "n04507155", "n04532106",
    "n04532670", "n04540053", "n04560804", "n04562935", "n04596742", "n04597913", "n06596364", "n07579787", "n07583066", "n07614500",
    "n07615774", "n07695742", "n07711569", "n07715103", "n07720875", "n07734744", "n07747607", "n07749582", "n07753592", "n07768694",
    "n07871810", "n07873807", "n07875152", "n07920052", "n09193705", "n09246464", "n09256479", "n09332890", "n09428293", "n12267677",
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download {ARCHIVE_URL} (about 240 MB) and put {ARCHIVE_NAME} -- or any zip
with the same layout (a top-level {ROOT}/ folder holding wnids.txt, train/ and
val/), such as a subset of it -- or the extracted {ROOT}/ folder in the manual
dir (by default <data_dir>/downloads/manual/). Nothing needs extracting: the zip
is read directly. Or pass the zip or folder itself:
  python -m rwsjax.data.prepare tiny_imagenet --manual_dir=PATH --data_dir=DIR
"""

_CITATION = """\
@article{le2015tiny,
  title={Tiny ImageNet Visual Recognition Challenge},
  author={Le, Ya and Yang, Xuan},
  journal={CS 231N},
  year={2015}
}
"""

_DESCRIPTION = """\
Tiny-ImageNet (Le & Yang, CS231N): 200 ImageNet classes, 64x64 RGB images,
500 training and 50 validation images per class in the official release. The
validation split is what papers call the Tiny-ImageNet test set. Labels index
the wnids in sorted order (torchvision ImageFolder order). Written by
rwsjax.data.tiny_imagenet (JPEG bytes kept as they are; greyscale images
converted to RGB and stored as PNG).
"""

_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
_VAL_NUMBER = re.compile(r"val_(\d+)")
_HINT = f"Use the official {ARCHIVE_NAME} ({ARCHIVE_URL}) or a zip / folder with its layout."


def _is_image(name: str) -> bool:
    return name.lower().endswith(_IMAGE_EXTENSIONS)


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]


def find_source(path: str | os.PathLike) -> str:
    """Resolves what the user points at to the Tiny-ImageNet zip or ``tiny-imagenet-200/`` folder to read.

    Args:
      path: a zip with a top-level ``tiny-imagenet-200/`` folder (the official
        ``tiny-imagenet-200.zip`` or a subset with its layout); the extracted
        ``tiny-imagenet-200/`` folder (one holding ``wnids.txt``); or a
        directory (a TFDS manual dir) holding ``tiny-imagenet-200/`` or
        ``tiny-imagenet-200.zip`` or exactly one other ``.zip``.

    Returns:
      Absolute path of the zip file or of the ``tiny-imagenet-200`` folder.

    Raises:
      FileNotFoundError: `path` does not exist, or is a directory holding none
        of the above (the message says where to download the archive).
      ValueError: `path` is a file but not a zip; or a directory holding
        several zips and no ``tiny-imagenet-200.zip`` (ambiguous).
    """
    p = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(p):
        raise FileNotFoundError(
            f"Tiny-ImageNet source {p} does not exist.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    if os.path.isfile(p):
        if not zipfile.is_zipfile(p):
            raise ValueError(f"{p} is not a zip archive. {_HINT}")
        return p
    if os.path.basename(p) == ROOT or os.path.isfile(os.path.join(p, "wnids.txt")):  # the extracted folder itself
        return p
    if os.path.isdir(os.path.join(p, ROOT)):
        return os.path.join(p, ROOT)
    if os.path.isfile(os.path.join(p, ARCHIVE_NAME)):
        return os.path.join(p, ARCHIVE_NAME)
    zips = sorted(n for n in os.listdir(p) if n.lower().endswith(".zip") and os.path.isfile(os.path.join(p, n)))
    if len(zips) == 1:
        return os.path.join(p, zips[0])
    if zips:
        raise ValueError(
            f"{p} holds several zips ({', '.join(zips)}) and no {ARCHIVE_NAME}: pass the one to use "
            "(--manual_dir=PATH/TO/ZIP) or leave only one there."
        )
    raise FileNotFoundError(
        f"No Tiny-ImageNet archive in {p}: it holds neither {ARCHIVE_NAME} (or another zip) nor an "
        f"extracted {ROOT}/ folder.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )


class _Tree:
    """Read-only view of the files under ``tiny-imagenet-200/`` in a zip or a folder (POSIX paths)."""

    def __init__(self, source: str):
        self.source = source
        self._zip = None
        if os.path.isdir(source):
            self._prefix = source
            files = []
            for dirpath, dirnames, filenames in os.walk(source):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = os.path.relpath(dirpath, source)
                for f in filenames:
                    if not f.startswith("."):
                        files.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
            self.files = files
            return
        self._zip = zipfile.ZipFile(source)
        names = [n for n in self._zip.namelist() if not n.startswith("__MACOSX/")]
        marker = ROOT + "/"
        roots = sorted(
            {n[: n.index(marker) + len(marker)] for n in names if n.startswith(marker) or f"/{marker}" in n},
            key=lambda r: (r.count("/"), r),
        )
        if not roots:
            shown = ", ".join(sorted({n.split("/")[0] + ("/" if "/" in n else "") for n in names})[:5]) or "nothing"
            self._zip.close()
            raise ValueError(
                f"{source} has no {ROOT}/ root folder (it holds {shown}). Tiny-ImageNet archives keep "
                f"everything under {ROOT}/ (wnids.txt, train/, val/). {_HINT} To zip an extracted copy: "
                f"cd PARENT && zip -r -0 tiny.zip {ROOT}"
            )
        self._prefix = roots[0]
        self.files = [n[len(self._prefix):] for n in names if n.startswith(self._prefix) and not n.endswith("/")]

    def where(self, rel: str) -> str:
        if self._zip is None:
            return os.path.join(self._prefix, *rel.split("/"))
        return f"{self.source}:{self._prefix}{rel}"

    def read(self, rel: str) -> bytes:
        if self._zip is None:
            with open(os.path.join(self._prefix, *rel.split("/")), "rb") as f:
                return f.read()
        return self._zip.read(self._prefix + rel)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclasses.dataclass(frozen=True)
class _Index:
    """What to write: sorted wnids, and per split ``(relative path, id, wnid)`` in record order."""

    source: str
    wnids: tuple[str, ...]
    train: tuple[tuple[str, str, str], ...]
    validation: tuple[tuple[str, str, str], ...]


def _read_lines(tree: _Tree, rel: str, what: str) -> list[str]:
    if rel not in set(tree.files):
        raise ValueError(f"{tree.where(rel)} is missing: {what}. {_HINT}")
    return tree.read(rel).decode("utf-8").splitlines()


def _read_index(source: str) -> _Index:
    """Lists and checks the archive (no image is decoded). Raises ValueError naming the problem and the fix."""
    with _Tree(source) as tree:
        files = tree.files
        wnid_list = [w.strip() for w in _read_lines(tree, "wnids.txt", "it lists the class wnids") if w.strip()]
        if not wnid_list:
            raise ValueError(f"{tree.where('wnids.txt')} lists no wnid. {_HINT}")
        dup = sorted({w for w in wnid_list if wnid_list.count(w) > 1})
        if dup:
            raise ValueError(f"{tree.where('wnids.txt')} lists wnids more than once: {dup[:5]}. {_HINT}")
        known = set(wnid_list)

        train, train_dirs = [], set()
        for rel in files:
            parts = rel.split("/")
            if parts[0] != "train" or len(parts) < 3:
                continue
            train_dirs.add(parts[1])
            if len(parts) == 4 and parts[2] == "images" and _is_image(parts[3]):
                train.append((parts[1], parts[3], rel))
        unknown = sorted(train_dirs - known)
        if unknown:
            raise ValueError(
                f"{tree.where('train/')} has {len(unknown)} class folder(s) whose wnid is not in wnids.txt: "
                f"{unknown[:5]}. Their images would have no label: remove those folders or add the wnids to "
                f"wnids.txt. {_HINT}"
            )
        have = {w for w, _, _ in train}
        empty = sorted(known - have)
        if empty:
            raise ValueError(
                f"{tree.where('train/')} has no images (train/<wnid>/images/*.JPEG) for {len(empty)} of the "
                f"{len(known)} wnids of wnids.txt, e.g. {empty[:5]}: the archive is incomplete. {_HINT}"
            )
        train.sort()

        val_images = [rel for rel in files if rel.startswith("val/images/") and rel.count("/") == 2 and _is_image(rel)]
        if not val_images:
            raise ValueError(f"{tree.where('val/images/')} holds no image: the archive has no validation set. {_HINT}")
        ann_rel = "val/val_annotations.txt"
        annotations: dict[str, str] = {}
        for k, line in enumerate(_read_lines(tree, ann_rel, "it holds the validation labels (val/images/ is flat)"), 1):
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise ValueError(
                    f"{tree.where(ann_rel)} line {k}: expected 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1', "
                    f"got {line!r}"
                )
            name, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in known:
                raise ValueError(
                    f"{tree.where(ann_rel)} line {k}: {name} is labelled {wnid!r}, which is not in wnids.txt "
                    f"({len(known)} wnids): wnids.txt and the annotations come from different releases. {_HINT}"
                )
            if annotations.get(name, wnid) != wnid:
                raise ValueError(
                    f"{tree.where(ann_rel)} line {k}: {name} is labelled both {annotations[name]!r} and {wnid!r}"
                )
            annotations[name] = wnid
        missing = sorted(os.path.basename(rel) for rel in val_images if os.path.basename(rel) not in annotations)
        if missing:
            raise ValueError(
                f"{len(missing)} of the {len(val_images)} images in {tree.where('val/images/')} have no line in "
                f"{ann_rel}, e.g. {missing[:5]}: their label is unknown. Use the val_annotations.txt that came "
                f"with these images, or remove the unlabelled images. {_HINT}"
            )

        def val_key(rel):
            m = _VAL_NUMBER.fullmatch(_stem(rel))
            return (0, int(m.group(1)), rel) if m else (1, 0, rel)

        validation = tuple(
            (rel, _stem(rel), annotations[os.path.basename(rel)]) for rel in sorted(val_images, key=val_key)
        )
        return _Index(
            source=source,
            wnids=tuple(sorted(known)),
            train=tuple((rel, _stem(f), w) for w, f, rel in train),
            validation=validation,
        )


def _encode(data: bytes, where: str) -> bytes:
    """Bytes to hand TFDS: the original file if it is an RGB JPEG/PNG, else a PNG of ``convert("RGB")``.

    Raises:
      ValueError: not a readable image, or not 64x64.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != IMAGE_SHAPE[1::-1]:
                raise ValueError(
                    f"{where} is {im.size[0]}x{im.size[1]}; Tiny-ImageNet images are 64x64. {_HINT}"
                )
            if im.mode == "RGB" and im.format in ("JPEG", "PNG"):
                return data
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{where} is not a readable image ({e})") from e
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


class TinyImagenet(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """TFDS builder of ``tiny_imagenet`` 1.0.0 (see the module docstring), writing without TensorFlow.

    Use `prepare`, or::

        b = TinyImagenet(source="tiny-imagenet-200.zip", data_dir=DIR, file_format="array_record")
        b.download_and_prepare(file_format="array_record",
                               download_config=tfds.download.DownloadConfig(
                                   compute_stats=tfds.download.ComputeStatsMode.SKIP))

    Without `source` the archive is looked up in the manual dir
    (``DownloadConfig(manual_dir=...)``, default ``<data_dir>/downloads/manual``)
    and the label names are `WNIDS`.

    Args:
      source: the zip, the ``tiny-imagenet-200/`` folder, or a directory
        holding either (see `find_source`); listed and checked at once.
      **kwargs: `tfds.core.DatasetBuilder` arguments (``data_dir``,
        ``file_format``, ...).

    Raises (construction, or ``download_and_prepare`` for the manual-dir flow):
      FileNotFoundError: the source / manual dir / archive is missing.
      ValueError: a malformed archive: no ``tiny-imagenet-200/`` root; no or
        bad ``wnids.txt``; a train folder whose wnid is not in ``wnids.txt``
        (or a wnid without training images); no ``val/val_annotations.txt``,
        a validation image without annotation, or an annotation wnid not in
        ``wnids.txt``; an image that is not 64x64 (found while writing);
        the archive's wnids differ from the label names (manual-dir flow).
    """

    name = NAME
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "Official archive layout; labels = sorted wnids; validation labels from val_annotations.txt."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def __init__(self, *, source: str | os.PathLike | None = None, **kwargs):
        self._rws_index = None if source is None else _read_index(find_source(source))
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        names = self._rws_index.wnids if self._rws_index is not None else WNIDS
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "image": tfds.features.Image(shape=IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(names=list(names)),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=HOMEPAGE,
            citation=_CITATION,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        index = self._rws_index
        if index is None:
            try:
                manual_dir = dl_manager.manual_dir
            except AssertionError as e:  # TFDS: manual dir missing or empty
                raise FileNotFoundError(f"No Tiny-ImageNet archive: {e}") from None  # e has the instructions
            index = _read_index(find_source(manual_dir))
            names = tuple(self.info.features["label"].names)
            if index.wnids != names:
                raise ValueError(
                    f"{index.source}: its wnids.txt does not list the 200 standard Tiny-ImageNet wnids "
                    f"(rwsjax.data.tiny_imagenet.WNIDS); build it with "
                    f"TinyImagenet(source=...) / prepare(source) to take the label names from the archive."
                )
        return {
            "train": self._generate_examples(index.source, index.train),
            "validation": self._generate_examples(index.source, index.validation),
        }

    def _generate_examples(self, source: str, items) -> Iterator[tuple[int, dict]]:
        with _Tree(source) as tree:
            for k, (rel, ident, wnid) in enumerate(items):
                yield k, {"id": ident, "image": _encode(tree.read(rel), tree.where(rel)), "label": wnid}


def prepare(
    source: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Builds ``tiny_imagenet`` 1.0.0 (ArrayRecord) in a TFDS data dir from the archive.

    Reads the zip directly (or the extracted folder), writes
    ``<data_dir>/tiny_imagenet/1.0.0/`` atomically (TFDS writes into a
    temporary folder and renames it), skips statistics, needs no TensorFlow
    and no network. A no-op when that version is already there (unless
    `overwrite`); the source is still located and checked.

    Args:
      source: the zip / folder / manual dir (see `find_source`).
      data_dir: TFDS data dir; None -> ``$TFDS_DATA_DIR``, else the TFDS default.
      overwrite: delete an existing ``tiny_imagenet/1.0.0`` first and rebuild
        (e.g. to replace a subset by the full set).

    Returns:
      The version directory written (``<data_dir>/tiny_imagenet/1.0.0``).

    Raises:
      FileNotFoundError / ValueError: as `TinyImagenet` (missing or malformed
        archive; the message names the problem and the fix).
    """
    from rwsjax.data.sources import resolve_data_dir

    builder = TinyImagenet(source=source, data_dir=resolve_data_dir(data_dir), file_format="array_record")
    mode = tfds.download.GenerateMode
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP,
            download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS,
        ),
    )
    return os.fspath(builder.data_dir)
