"""Tests of preparing CIFAR without TensorFlow (rwsjax.data.cifar, rwsjax.data.prepare).

The archives are built here in the official python-version layout from real
CIFAR images (the prepared copy in ../shared). Reference: stock TFDS's own
``cifar10`` / ``cifar100`` builder run on the binary version of the same
archive (its TensorFlow file reading and PNG encoding replaced by plain
Python / Pillow, which changes bytes but not pixels), so the records, their
order, the features and the label names are compared with what stock TFDS
writes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import pickle
import tarfile
import threading
import time
import types

import cifar_archive
import numpy as np
import pytest

from rwsjax.data import cifar, prepare
from rwsjax.data.sources import DatasetNotFoundError

DATA_DIR = os.environ.get("TFDS_DATA_DIR", "")
pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.path.join(DATA_DIR, "cifar10")) or not os.path.isdir(os.path.join(DATA_DIR, "cifar100")),
    reason="needs the prepared CIFAR-10/100 (TFDS_DATA_DIR) for real images")


@functools.cache
def _archive(name: str, root: str) -> str:
    return cifar_archive.write(name, DATA_DIR, os.path.join(root, cifar.ARCHIVES[name].file_name),
                               train=500, test=200)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("archives"))
    return {name: _archive(name, root) for name in ("cifar10", "cifar100")}


def _records(name, split, data_dir):
    import tensorflow_datasets as tfds

    src = tfds.data_source(name, split=split, data_dir=data_dir)
    return src, [src[i] for i in range(len(src))]


def _binary_version(name: str, archive: str, out: str) -> None:
    """The binary-version files (``<label bytes><3072 image bytes>`` per record) of the same images."""
    a = cifar.ARCHIVES[name]
    with tarfile.open(archive) as tar:
        def get(member):
            return pickle.loads(tar.extractfile(f"{a.root}/{member}").read(), encoding="bytes")
        if name == "cifar10":
            folder = os.path.join(out, "cifar-10-batches-bin")
            pairs = [(m, f"{m}.bin") for m in (*a.train, *a.test)]
        else:
            folder = os.path.join(out, "cifar-100-binary")
            pairs = [("train", "train.bin"), ("test", "test.bin")]
        os.makedirs(folder)
        for member, file in pairs:
            b = get(member)
            labels = np.stack([np.asarray(b[key], np.uint8) for _, key in a.label_keys], 1)
            with open(os.path.join(folder, file), "wb") as f:
                f.write(np.concatenate([labels, b[b"data"]], 1).tobytes())
        meta = get(a.meta)
        files = ["batches.meta.txt"] if name == "cifar10" else ["coarse_label_names.txt", "fine_label_names.txt"]
        for file, key in zip(files, a.names_keys):
            with open(os.path.join(folder, file), "w") as f:
                f.write("\n".join(n.decode() for n in meta[key]) + "\n")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_prepared_copy_reads_as_stock_tfds_writes_it(name, archives, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.features import image_feature
    from tensorflow_datasets.image_classification import cifar as stock

    ours = cifar.prepare(name, archives[name], tmp_path / "ours")
    assert ours == str(tmp_path / "ours" / name / "3.0.2")

    _binary_version(name, archives[name], str(tmp_path / "binary"))
    monkeypatch.setattr(stock, "tf", types.SimpleNamespace(io=types.SimpleNamespace(
        gfile=types.SimpleNamespace(GFile=open))))
    monkeypatch.setattr(image_feature._ImageEncoder, "_encode_image", lambda self, image: cifar._png(image))
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                        lambda self, url: str(tmp_path / "binary"))
    builder = tfds.builder(name, data_dir=str(tmp_path / "stock"), file_format="array_record")
    assert type(builder).__module__ == stock.__name__
    builder.download_and_prepare(file_format="array_record", download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))

    keys = ["id", "image", "label"] + (["coarse_label"] if name == "cifar100" else [])
    for split, n in (("train", 500), ("test", 200)):
        src, mine = _records(name, split, tmp_path / "ours")
        _, theirs = _records(name, split, tmp_path / "stock")
        assert len(mine) == len(theirs) == n
        for k, (u, v) in enumerate(zip(mine, theirs)):
            assert sorted(u) == sorted(keys)
            for key in keys:
                np.testing.assert_array_equal(u[key], v[key], err_msg=f"{split} record {k} {key}")
        # the records are the archive's images, in TFDS's shuffled order (not the archive order)
        ids = [r["id"].decode() for r in mine]
        assert sorted(ids) == [f"{split}_{i:05d}" for i in range(n)] and ids != sorted(ids)
        assert src.dataset_info.features["image"].shape == (32, 32, 3)
    for file in ("features.json", "label.labels.txt") + (("coarse_label.labels.txt",) if name == "cifar100" else ()):
        with open(os.path.join(ours, file)) as f, open(os.path.join(builder.data_dir, file)) as g:
            assert f.read() == g.read(), file
        with open(os.path.join(ours, file)) as f, open(os.path.join(DATA_DIR, name, "3.0.2", file)) as g:
            assert f.read() == g.read(), file  # and as the copy in the data dir


def test_pixels_and_labels_are_the_archives(archives, tmp_path):
    cifar.prepare("cifar10", archives["cifar10"], tmp_path)
    _, records = _records("cifar10", "test", tmp_path)
    with tarfile.open(archives["cifar10"]) as tar:
        batch = pickle.loads(tar.extractfile("cifar-10-batches-py/test_batch").read(), encoding="bytes")
    for r in records[:50]:
        i = int(r["id"].decode().split("_")[1])
        np.testing.assert_array_equal(r["image"], batch[b"data"][i].reshape(3, 32, 32).transpose(1, 2, 0))
        assert r["label"] == batch[b"labels"][i]


def test_every_form_of_the_archive_prepares_the_same(archives, tmp_path):
    tar = archives["cifar10"]
    with tarfile.open(tar) as t:
        t.extractall(tmp_path / "extracted", filter="data")
    forms = {"tar": tar, "folder holding the tar": os.path.dirname(tar),
             "extracted folder": str(tmp_path / "extracted" / "cifar-10-batches-py"),
             "folder holding the extracted folder": str(tmp_path / "extracted")}
    first = None
    for k, (form, source) in enumerate(forms.items()):
        out = prepare.prepare("cifar10", tmp_path / f"d{k}", manual_dir=source, download=False)
        _, records = _records("cifar10", "train", out.rsplit("/cifar10/", 1)[0])
        ids = [r["id"] for r in records]
        first = first or ids
        assert ids == first, form
    with pytest.raises(ValueError, match="cifar100 archive"):
        cifar.prepare("cifar10", archives["cifar100"], tmp_path / "wrong")
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        cifar.find_source("cifar10", tmp_path / "nowhere")


def test_cli_prepares_then_leaves_it(archives, tmp_path, capsys):
    args = ["cifar100", f"--manual_dir={archives['cifar100']}", f"--data_dir={tmp_path}"]
    assert prepare.main(args) == 0
    assert "Prepared cifar100 (ArrayRecord)" in capsys.readouterr().out
    assert prepare.main(args) == 0
    assert "already prepared" in capsys.readouterr().out
    assert prepare.main(["cifar100", "--bogus"]) == 2
    assert "Unknown command line flag 'bogus'" in capsys.readouterr().err


def test_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with pytest.raises(ValueError, match="unexpected object"):
        cifar._unpickle(pickle.dumps({b"data": Evil()}, protocol=2), "evil")


class _Server:
    """Serves `directory` over HTTP on localhost; counts requests."""

    def __init__(self, directory: str):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
        handler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_checks_the_md5_and_leaves_nothing_on_failure(archives, tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    tar = archives["cifar10"]
    with open(tar, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    server = _Server(os.path.dirname(tar))
    try:
        url = f"{server.url}/{os.path.basename(tar)}"
        with pytest.raises(cifar.DownloadError, match="MD5"):
            cifar.download("cifar10", tmp_path / "bad", url=url, md5="0" * 32)
        assert os.listdir(tmp_path / "bad") == []
        # the main job's path: a missing dataset is downloaded into <data_dir>/downloads and prepared
        monkeypatch.setitem(cifar.ARCHIVES, "cifar10", dataclasses.replace(cifar.ARCHIVES["cifar10"], url=url, md5=md5))
        out = prepare.ensure("cifar10", tmp_path / "tfds")
        assert os.path.isfile(tmp_path / "tfds" / "downloads" / "cifar-10-python.tar.gz")
        assert prepare.prepared_dir("cifar10", tmp_path / "tfds") == out
    finally:
        server.close()


def test_offline_stops_at_once_in_one_line(tmp_path, monkeypatch):
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: refused at once, as with no network
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as e:
        prepare.ensure("cifar10", tmp_path, flag="--config.data.manual_dir")
    assert time.monotonic() - start < 10
    message = str(e.value)
    assert "\n" not in message
    for words in ("cifar10 is not prepared", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "163 MB",
                  "--config.data.manual_dir=PATH/cifar-10-python.tar.gz"):
        assert words in message, words
    assert not os.listdir(tmp_path / "downloads")
    with pytest.raises(DatasetNotFoundError, match="downloading is off"):
        prepare.ensure("cifar100", tmp_path, download=False)


def test_a_run_prepares_its_dataset_from_manual_dir(archives, tmp_path):
    from rwsjax.configs import rift
    from rwsjax.workflows.common import Task

    c = rift.get_config("smoke")
    c.data.data_dir, c.data.manual_dir = str(tmp_path / "tfds"), archives["cifar10"]
    task = Task(c, str(tmp_path / "w"))
    splits = task.splits
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (256, 100, 100)
    assert prepare.prepared_dir("cifar10", tmp_path / "tfds")
