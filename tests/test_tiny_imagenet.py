"""Tests of Tiny-ImageNet through TFDS (rwsjax.data.tiny_imagenet) and Tiny-ImageNet-C (rwsjax.corruptions).

The real Tiny-ImageNet subset ``../shared/tiny-imagenet-200-subset.zip``
(official layout, 50 train + 10 val images per class; override with
``$TINY_IMAGENET_ZIP``) is built once per session into a temporary TFDS data
dir; tests that need it skip without it. Expected labels, orders and pixels
are derived here from the zip itself (``wnids.txt``, the folder names,
``val/val_annotations.txt``, Pillow decodes of the original files), never from
the builder's output. Malformed archives are small fakes written to tmp.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZIP = os.environ.get("TINY_IMAGENET_ZIP") or os.path.join(os.path.dirname(ROOT), "shared", "tiny-imagenet-200-subset.zip")

needs_zip = pytest.mark.skipif(not os.path.isfile(ZIP), reason=f"Tiny-ImageNet zip not found at {ZIP}")

_BUILD_SECONDS: dict = {}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A TFDS data dir holding ``tiny_imagenet/1.0.0`` built from the subset zip (once per session)."""
    if not os.path.isfile(ZIP):
        pytest.skip(f"Tiny-ImageNet zip not found at {ZIP}")
    from rwsjax.data.tiny_imagenet import prepare

    data_dir = str(tmp_path_factory.mktemp("tiny_tfds"))
    t = time.time()
    path = prepare(ZIP, data_dir)
    _BUILD_SECONDS["subset"] = time.time() - t
    assert path == os.path.join(data_dir, "tiny_imagenet", "1.0.0")
    return data_dir


@pytest.fixture(scope="session")
def raw():
    """The zip parsed independently: sorted wnids, train ``{stem: wnid}``, val ``{stem: wnid}``, bytes by stem."""
    if not os.path.isfile(ZIP):
        pytest.skip(f"Tiny-ImageNet zip not found at {ZIP}")
    with zipfile.ZipFile(ZIP) as z:
        names = z.namelist()
        wnids = sorted(z.read("tiny-imagenet-200/wnids.txt").decode().split())
        val = {}
        for line in z.read("tiny-imagenet-200/val/val_annotations.txt").decode().splitlines():
            if line.strip():
                f, w = line.split("\t")[:2]
                val[f[: -len(".JPEG")]] = w
        train, data = {}, {}
        for n in names:
            m = re.fullmatch(r"tiny-imagenet-200/train/(n\d+)/images/((n\d+)_\d+)\.JPEG", n)
            if m:
                train[m.group(2)] = m.group(1)
                data[m.group(2)] = z.read(n)
            m = re.fullmatch(r"tiny-imagenet-200/val/images/(val_\d+)\.JPEG", n)
            if m:
                data[m.group(1)] = z.read(n)
    return {"wnids": wnids, "train": train, "val": val, "data": data}


def _source(data_dir, split, **kw):
    import tensorflow_datasets as tfds

    return tfds.data_source("tiny_imagenet", split=split, data_dir=data_dir, **kw)


def _ids_labels(data_dir, split):
    import tensorflow_datasets as tfds

    src = _source(data_dir, split, decoders={"image": tfds.decode.SkipDecoding()})
    recs = src.__getitems__(list(range(len(src))))
    return [r["id"].decode() for r in recs], np.array([r["label"] for r in recs])


def _pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- the real subset


@needs_zip
def test_splits_features_and_record_order(tiny_dir, raw):
    train, val = _source(tiny_dir, "train"), _source(tiny_dir, "validation")
    assert (len(train), len(val)) == (10_000, 2_000)
    feats = train.dataset_info.features
    assert set(feats.keys()) == {"id", "image", "label"}
    assert feats["label"].names == raw["wnids"] and feats["label"].num_classes == 200
    assert tuple(feats["image"].shape) == (64, 64, 3)
    assert str(train.dataset_info.version) == "1.0.0"
    ids, _ = _ids_labels(tiny_dir, "train")
    assert ids == sorted(raw["train"], key=lambda s: (raw["train"][s], s))  # (wnid, file name)
    vids, _ = _ids_labels(tiny_dir, "validation")
    assert vids == sorted(raw["val"], key=lambda s: int(s.split("_")[1]))  # val_<n> by n
    assert "subset" in _BUILD_SECONDS and _BUILD_SECONDS["subset"] < 60
    print(f"built the subset in {_BUILD_SECONDS['subset']:.1f}s")


@needs_zip
def test_every_validation_label_is_its_annotation(tiny_dir, raw):
    ids, labels = _ids_labels(tiny_dir, "validation")
    want = np.array([raw["wnids"].index(raw["val"][i]) for i in ids])
    assert len(ids) == 2000 and set(ids) == set(raw["val"])
    np.testing.assert_array_equal(labels, want)
    assert np.bincount(labels, minlength=200).tolist() == [10] * 200


@needs_zip
def test_train_labels_are_their_folders(tiny_dir, raw):
    ids, labels = _ids_labels(tiny_dir, "train")
    np.testing.assert_array_equal(labels, [raw["wnids"].index(raw["train"][i]) for i in ids])
    assert np.bincount(labels, minlength=200).tolist() == [50] * 200


@needs_zip
def test_pixels_equal_pillow_decode_and_greyscale_becomes_rgb(tiny_dir, raw):
    grey = []
    for split in ("train", "validation"):
        src = _source(tiny_dir, split)
        for r in src.__getitems__(list(range(len(src)))):
            stem = r["id"].decode()
            img = r["image"]
            assert img.dtype == np.uint8 and img.shape == (64, 64, 3), stem
            with Image.open(io.BytesIO(raw["data"][stem])) as im:
                mode, ref = im.mode, np.asarray(im)
            if mode == "L":
                grey.append(stem)
                for c in range(3):
                    np.testing.assert_array_equal(img[..., c], ref, err_msg=stem)
            else:
                assert mode == "RGB"
                np.testing.assert_array_equal(img, ref, err_msg=stem)
    assert 150 < len(grey) < 300  # ~1.9% of 12,000


@needs_zip
def test_fresh_process_reads_it_without_rwsjax(tiny_dir):
    code = (
        "import sys, tensorflow_datasets as tfds\n"
        f"s = tfds.data_source('tiny_imagenet', split='validation', data_dir={tiny_dir!r})\n"
        "r = s[0]\n"
        "assert 'rwsjax' not in sys.modules\n"
        "print(len(s), r['image'].shape, r['image'].dtype, r['label'], r['id'].decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:1] == ["2000"] and "(64, 64, 3) uint8" in out.stdout and "val_0" in out.stdout


@needs_zip
def test_load_splits_test_is_the_validation_split(tiny_dir, raw):
    from rwsjax.data.sources import DATASETS, load_labels, load_split
    from rwsjax.data.splits import load_splits

    info = DATASETS["tiny_imagenet"]
    assert (info.num_classes, info.image_shape, info.test_split) == (200, (64, 64, 3), "validation")
    ids, val_labels = _ids_labels(tiny_dir, "validation")
    np.testing.assert_array_equal(load_labels("tiny_imagenet", "test", tiny_dir), val_labels)
    sp = load_splits("tiny_imagenet", data_dir=tiny_dir, val_size=200, progress=False)
    assert (len(sp["train"]), len(sp["val"]), len(sp["test"])) == (9_800, 200, 2_000)
    np.testing.assert_array_equal(sp["test"].source_indices, np.arange(2000))
    np.testing.assert_array_equal(sp["test"].labels, [raw["wnids"].index(raw["val"][i]) for i in ids])
    assert not set(sp["train"].source_indices) & set(sp["val"].source_indices)
    assert np.bincount(sp["val"].labels, minlength=200).tolist() == [1] * 200
    k = 1234
    np.testing.assert_array_equal(sp["test"].images[k], _pil(raw["data"][ids[k]]))
    sub = load_splits("tiny_imagenet", data_dir=tiny_dir, val_size=0, train_size=400, test_size=400, progress=False)
    assert np.bincount(sub["test"].labels, minlength=200).tolist() == [2] * 200
    np.testing.assert_array_equal(sub["test"].images, load_split("tiny_imagenet", "validation", tiny_dir,
                                                                 sub["test"].source_indices, progress=False).images)


# ----------------------------------------------------------------------------- bad inputs (small fakes)


def _jpeg(mode="RGB", size=64, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="JPEG")
    return buf.getvalue()


def _fake_files(*, wnids=("n02", "n01"), train=None, val=None, ann=None, prefix="tiny-imagenet-200/"):
    """A minimal official-layout tree: {path: bytes}."""
    train = train if train is not None else {"n01": 2, "n02": 1}
    val = val if val is not None else ["val_0", "val_1", "val_10", "val_2"]
    ann = ann if ann is not None else {"val_0": "n02", "val_1": "n01", "val_10": "n01", "val_2": "n02"}
    files = {f"{prefix}wnids.txt": "\n".join(wnids).encode() + b"\n", f"{prefix}words.txt": b"n01\tone\nn02\ttwo\n"}
    for w, n in train.items():
        for k in range(n):
            files[f"{prefix}train/{w}/images/{w}_{k}.JPEG"] = _jpeg("L" if k == 1 else "RGB", seed=k)
        files[f"{prefix}train/{w}/{w}_boxes.txt"] = b""
    for v in val:
        files[f"{prefix}val/images/{v}.JPEG"] = _jpeg(seed=7)
    files[f"{prefix}val/val_annotations.txt"] = "".join(f"{f}.JPEG\t{w}\t0\t0\t63\t63\n" for f, w in ann.items()).encode()
    return files


def _zip(path, files) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return str(path)


def test_fake_archive_zip_and_folder_build_the_same(tmp_path):
    import tensorflow_datasets as tfds

    from rwsjax.data.tiny_imagenet import prepare

    files = _fake_files()
    _zip(tmp_path / "fake.zip", files)
    for name, data in files.items():  # the extracted folder
        (tmp_path / "x" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "x" / name).write_bytes(data)
    out = {}
    for kind, source in (("zip", tmp_path / "fake.zip"), ("folder", tmp_path / "x"), ("root", tmp_path / "x" / "tiny-imagenet-200")):
        d = str(tmp_path / f"tfds_{kind}")
        prepare(source, d)
        recs = {}
        for split in ("train", "validation"):
            src = tfds.data_source("tiny_imagenet", split=split, data_dir=d)
            assert src.dataset_info.features["label"].names == ["n01", "n02"]
            recs[split] = [(r["id"].decode(), int(r["label"]), r["image"]) for r in src.__getitems__(list(range(len(src))))]
        out[kind] = recs
    tr, va = out["zip"]["train"], out["zip"]["validation"]
    assert [(i, y) for i, y, _ in tr] == [("n01_0", 0), ("n01_1", 0), ("n02_0", 1)]
    assert [(i, y) for i, y, _ in va] == [("val_0", 1), ("val_1", 0), ("val_2", 1), ("val_10", 0)]
    grey = np.asarray(Image.open(io.BytesIO(files["tiny-imagenet-200/train/n01/images/n01_1.JPEG"])))
    assert tr[1][2].shape == (64, 64, 3) and all(np.array_equal(tr[1][2][..., c], grey) for c in range(3))
    for kind in ("folder", "root"):
        for split in ("train", "validation"):
            for a, b in zip(out["zip"][split], out[kind][split], strict=True):
                assert a[:2] == b[:2] and np.array_equal(a[2], b[2])


def test_missing_archive_raises_with_the_fix(tmp_path):
    from rwsjax.data.prepare import prepare as prepare_cli
    from rwsjax.data.sources import DatasetNotFoundError, load_split
    from rwsjax.data.tiny_imagenet import prepare

    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*cs231n\.stanford\.edu/tiny-imagenet-200\.zip"):
        prepare(tmp_path / "nope.zip", str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"(?s)No Tiny-ImageNet archive in .*tiny-imagenet-200\.zip"):
        prepare(tmp_path / "empty", str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"cs231n\.stanford\.edu/tiny-imagenet-200\.zip.*--manual_dir"):
        prepare_cli("tiny_imagenet", str(tmp_path / "out"))
    with pytest.raises(DatasetNotFoundError, match=r"(?s)prepare tiny_imagenet --manual_dir=.*tiny-imagenet-200\.zip"):
        load_split("tiny_imagenet", "test", str(tmp_path / "out"), progress=False)
    assert not os.path.exists(tmp_path / "out" / "tiny_imagenet" / "1.0.0")


def test_tfds_manual_dir_flow(tmp_path):
    """``TinyImagenet().download_and_prepare(download_config=DownloadConfig(manual_dir=...))`` finds the zip there."""
    import tensorflow_datasets as tfds

    from rwsjax.data.tiny_imagenet import TinyImagenet

    def build(manual_dir, data_dir):
        b = TinyImagenet(data_dir=str(data_dir), file_format="array_record")
        b.download_and_prepare(file_format="array_record", download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir), compute_stats=tfds.download.ComputeStatsMode.SKIP))

    with pytest.raises(FileNotFoundError, match=r"(?s)No Tiny-ImageNet archive.*tiny-imagenet-200\.zip"):
        build(tmp_path / "none", tmp_path / "a")
    (tmp_path / "manual").mkdir()
    _zip(tmp_path / "manual" / "tiny-imagenet-200.zip", _fake_files())
    with pytest.raises(ValueError, match="does not list the 200 standard Tiny-ImageNet wnids"):
        build(tmp_path / "manual", tmp_path / "b")  # label names default to the 200 WNIDS; this fake has 2


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_root", r"no tiny-imagenet-200/ root folder"),
        ("val_without_annotation", r"1 of the 4 images in .*val/images/ have no line in val/val_annotations\.txt.*val_2"),
        ("annotation_wnid_unknown", r"val_1\.JPEG is labelled 'n99', which is not in wnids\.txt"),
        ("train_folder_unknown", r"train/ has 1 class folder\(s\) whose wnid is not in wnids\.txt: \['n03'\]"),
        ("no_annotations_file", r"val/val_annotations\.txt is missing"),
        ("not_64", r"n01_0\.JPEG is 32x32; Tiny-ImageNet images are 64x64"),
    ],
)
def test_malformed_archive_raises_clear_error(tmp_path, case, match):
    from rwsjax.data.tiny_imagenet import prepare

    if case == "no_root":
        files = _fake_files(prefix="")
    elif case == "val_without_annotation":
        files = _fake_files(ann={"val_0": "n02", "val_1": "n01", "val_10": "n01"})
    elif case == "annotation_wnid_unknown":
        files = _fake_files(ann={"val_0": "n02", "val_1": "n99", "val_10": "n01", "val_2": "n02"})
    elif case == "train_folder_unknown":
        files = _fake_files(train={"n01": 1, "n02": 1, "n03": 1})
    elif case == "no_annotations_file":
        files = _fake_files()
        del files["tiny-imagenet-200/val/val_annotations.txt"]
    else:
        files = _fake_files()
        files["tiny-imagenet-200/train/n01/images/n01_0.JPEG"] = _jpeg(size=32)
    source = _zip(tmp_path / "bad.zip", files)
    with pytest.raises(ValueError, match=match):
        prepare(source, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "tiny_imagenet" / "1.0.0")


# ----------------------------------------------------------------------------- Tiny-ImageNet-C


@needs_zip
def test_tiny_imagenet_c_gaussian_noise_round_trip(tiny_dir, tmp_path):
    import tensorflow_datasets as tfds

    from rwsjax.corruptions import PARAMS, corrupt
    from rwsjax.corruptions.datasets import generate, load_corrupted, read_manifest
    from rwsjax.data.sources import DatasetNotFoundError, load_split

    out_dir = str(tmp_path / "c")
    idx = np.arange(3, 2000, 100)  # 20 validation images
    path = generate("tiny_imagenet", "gaussian_noise", 3, split="test", indices=idx, out_data_dir=out_dir,
                    source_data_dir=tiny_dir, progress=False)
    assert path == os.path.join(out_dir, "tiny_imagenet_corrupted", "gaussian_noise_3", "1.0.0")
    s = load_corrupted("tiny_imagenet", "gaussian_noise", 3, data_dir=out_dir, indices=idx)
    assert s.images.dtype == np.uint8 and s.images.shape == (20, 64, 64, 3)
    clean = load_split("tiny_imagenet", "validation", tiny_dir, idx, progress=False)
    np.testing.assert_array_equal(s.labels, clean.labels)
    np.testing.assert_array_equal(s.source_indices, idx)
    for j, i in enumerate(idx):
        np.testing.assert_array_equal(s.images[j], corrupt(clean.images[j], "gaussian_noise", 3, seed=0, index=int(i),
                                                           resolution=64))
    # Tiny-ImageNet-C's sigma at severity 3 is 0.12 (make_tinyimagenet_c.py; CIFAR-10-C's is 0.08)
    assert PARAMS[64]["gaussian_noise"][2] == 0.12
    x, y = clean.images / 255.0, s.images / 255.0
    mid = (x > 0.45) & (x < 0.55)  # far from clipping
    assert abs((y - x)[mid].std() - 0.12) < 0.006

    src = tfds.data_source("tiny_imagenet_corrupted/gaussian_noise_3", split="test", data_dir=out_dir)
    assert tuple(src.dataset_info.features["image"].shape) == (64, 64, 3)
    assert src.dataset_info.features["label"].names == _source(tiny_dir, "train").dataset_info.features["label"].names
    man = read_manifest(path, "test")
    assert (man["resolution"], man["params"], man["source_split"], man["source_tfds_split"]) == (64, 0.12, "test", "validation")
    with pytest.raises(ValueError, match="SUBSET: 20 of the 2000"):
        load_corrupted("tiny_imagenet", "gaussian_noise", 3, data_dir=out_dir)
    with pytest.raises(DatasetNotFoundError, match="--dataset tiny_imagenet") as e:
        load_corrupted("tiny_imagenet", "fog", 1, data_dir=out_dir)
    assert "tfds.builder" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("imagecorruptions") is None, reason="frost textures need imagecorruptions")
@needs_zip
def test_tiny_imagenet_c_frost_uses_the_64px_constants(tiny_dir, tmp_path):
    """Frost at 64 px by hand (make_tinyimagenet_c.py): texture x0.3, c = (0.9, 0.4) at severity 2."""
    import cv2

    from rwsjax.corruptions import PARAMS, image_rng
    from rwsjax.corruptions.datasets import generate, load_corrupted
    from rwsjax.corruptions.ops import frost_texture_path
    from rwsjax.data.sources import load_split

    assert PARAMS[64]["frost"][1] == (0.9, 0.4)
    idx = np.array([5, 1500])
    generate("tiny_imagenet", "frost", 2, out_data_dir=str(tmp_path), indices=idx, seed=4, source_data_dir=tiny_dir,
             progress=False)
    got = load_corrupted("tiny_imagenet", "frost", 2, data_dir=str(tmp_path), indices=idx).images
    clean = load_split("tiny_imagenet", "test", tiny_dir, idx, progress=False).images
    for j, i in enumerate(idx):
        r = image_rng(4, int(i), "frost", 2)
        tex = cv2.resize(cv2.imread(frost_texture_path(int(r.integers(5)))), (0, 0), fx=0.3, fy=0.3)
        x0, y0 = int(r.integers(0, tex.shape[0] - 64)), int(r.integers(0, tex.shape[1] - 64))
        crop = tex[x0 : x0 + 64, y0 : y0 + 64][..., [2, 1, 0]].astype(float)
        want = np.clip(0.9 * clean[j].astype(float) + 0.4 * crop, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(got[j], want)


@needs_zip
def test_cli_generates_tiny_imagenet_c(tiny_dir, tmp_path, capsys):
    import tensorflow_datasets as tfds

    from rwsjax.corruptions.__main__ import main, subset_indices
    from rwsjax.data.splits import load_splits

    out_dir = str(tmp_path / "c")
    argv = ["generate", "--dataset", "tiny_imagenet", "--corruptions", "contrast", "--severities", "1",
            "--out_data_dir", out_dir, "--num_examples", "200", "--source_data_dir", tiny_dir, "--no_progress"]
    assert main(argv) == 0
    src = tfds.data_source("tiny_imagenet_corrupted/contrast_1", split="test", data_dir=out_dir)
    assert len(src) == 200
    idx = subset_indices("tiny_imagenet", "test", 200, 0, tiny_dir)
    splits = load_splits("tiny_imagenet", data_dir=tiny_dir, val_size=0, train_size=10, test_size=200, progress=False)
    np.testing.assert_array_equal(splits["test"].source_indices, idx)  # the run's test images
    x = splits["test"].images[:4] / 255.0
    mean = x.mean(axis=(1, 2), keepdims=True)
    got = np.stack([src[j]["image"] for j in range(4)]).astype(float)
    np.testing.assert_allclose(got, np.floor(np.clip((x - mean) * 0.4 + mean, 0, 1) * 255), atol=1)  # Tiny: 0.4
