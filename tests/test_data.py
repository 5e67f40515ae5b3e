"""Tests for rwsjax.data on the real TFDS CIFAR data (TFDS_DATA_DIR)."""

from __future__ import annotations

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rwsjax.data import augment, batching, prepare, sources, splits
from rwsjax.data.sources import DATASETS, DatasetNotFoundError, Split

DATA_DIR = os.environ.get("TFDS_DATA_DIR")
VAL, TRAIN, TEST = 1000, 2000, 500


def _have_cifar10() -> bool:
    return bool(DATA_DIR) and os.path.isdir(os.path.join(DATA_DIR, "cifar10"))


needs_data = pytest.mark.skipif(
    not _have_cifar10(), reason="set TFDS_DATA_DIR to a dir holding prepared cifar10"
)


@pytest.fixture(scope="module")
def cifar10():
    return splits.load_splits(
        "cifar10", data_dir=DATA_DIR, val_size=VAL, train_size=TRAIN, test_size=TEST, seed=0,
        progress=False,
    )


def _synthetic(n: int) -> Split:
    """Split whose label is the example's index, and whose image encodes it too."""
    images = np.zeros((n, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 0, 0, 1] = np.arange(n) // 256
    return Split(images=images, labels=np.arange(n, dtype=np.int32))


# ----------------------------------------------------------------- sources


def test_dataset_info_table():
    assert set(DATASETS) == {"cifar10", "cifar100", "tiny_imagenet"}
    assert DATASETS["cifar10"].num_classes == 10 and DATASETS["cifar100"].num_classes == 100
    assert DATASETS["tiny_imagenet"].num_classes == 200 and DATASETS["tiny_imagenet"].image_shape == (64, 64, 3)
    assert [DATASETS[n].test_split for n in ("cifar10", "cifar100", "tiny_imagenet")] == ["test", "test", "validation"]
    assert DATASETS["cifar100"].mean == (0.5071, 0.4865, 0.4409)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["cifar10"].num_classes = 3  # type: ignore[misc]


def test_split_validates_and_subsets():
    s = _synthetic(10)
    assert len(s) == 10
    sub = s.subset([3, 1])
    np.testing.assert_array_equal(sub.labels, [3, 1])
    with pytest.raises(ValueError, match="int32"):
        Split(images=s.images, labels=s.labels.astype(np.int64))
    with pytest.raises(ValueError, match="uint8"):
        Split(images=s.images.astype(np.float32), labels=s.labels)
    with pytest.raises(ValueError, match="labels"):
        Split(images=s.images, labels=s.labels[:5])


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10") as e:
        sources.load_split("mnist", "train", data_dir=DATA_DIR)
    assert "cifar100" in str(e.value)
    with pytest.raises(ValueError, match="cifar10"):
        splits.load_splits("imagenet", data_dir=DATA_DIR, val_size=10)


@pytest.mark.parametrize("sub", ["", "does/not/exist"])
def test_missing_dataset_raises_helpful_error(tmp_path, sub):
    data_dir = str(tmp_path / sub)
    with pytest.raises(DatasetNotFoundError) as e:
        sources.load_split("cifar10", "test", data_dir=data_dir)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert "TFDS_DATA_DIR" in msg and "--config.data.data_dir" in msg
    assert f"rwsjax prepare cifar10 --data_dir={os.path.abspath(data_dir)}" in msg
    assert e.value.__cause__ is not None  # chained from tfds's own exception
    assert not os.path.exists(os.path.join(data_dir, "cifar10"))  # nothing downloaded/created
    with pytest.raises(DatasetNotFoundError, match="rwsjax prepare cifar100"):
        splits.load_splits("cifar100", data_dir=data_dir, val_size=100)


def test_missing_dataset_via_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert sources.resolve_data_dir(None) == str(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        sources.load_split("cifar10", "train")


def test_prepare_cli_validates_arguments(capsys):
    assert prepare.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--data_dir" in out and "--manual_dir" in out
    assert prepare.main(["mnist"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown dataset 'mnist'; python -m rwsjax.data.prepare "
                                               "prepares cifar10, cifar100, tiny_imagenet")
    assert prepare.main([]) == 2
    with pytest.raises(ValueError, match="cifar10"):
        prepare.prepare("mnist", "/nonexistent")


@needs_data
def test_load_split_reads_requested_records():
    import tensorflow_datasets as tfds

    idx = [7, 0, 49999, 7]
    s = sources.load_split("cifar10", "train", data_dir=DATA_DIR, indices=idx, progress=False)
    chex.assert_shape(s.images, (4, 32, 32, 3))
    chex.assert_type([s.images, s.labels], [np.uint8, np.int32])
    np.testing.assert_array_equal(s.source_indices, idx)
    ref = tfds.data_source("cifar10", split="train", data_dir=DATA_DIR, download=False)
    for j, i in enumerate(idx):
        np.testing.assert_array_equal(s.images[j], ref[i]["image"])
        assert s.labels[j] == ref[i]["label"]
    labels = sources.load_labels("cifar10", "train", DATA_DIR)
    chex.assert_shape(labels, (50000,))
    np.testing.assert_array_equal(labels[idx], s.labels)
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 5000))
    with pytest.raises(IndexError):
        sources.load_split("cifar10", "test", data_dir=DATA_DIR, indices=[10000])


# ------------------------------------------------------------------ splits


@needs_data
def test_load_splits_sizes_dtypes_balance(cifar10):
    assert set(cifar10) == {"train", "val", "test"}
    for name, n in [("train", TRAIN), ("val", VAL), ("test", TEST)]:
        s = cifar10[name]
        assert len(s) == n
        chex.assert_shape(s.images, (n, 32, 32, 3))
        chex.assert_type([s.images, s.labels], [np.uint8, np.int32])
        np.testing.assert_array_equal(np.bincount(s.labels, minlength=10), np.full(10, n // 10))
        assert len(np.unique(s.source_indices)) == n
    assert cifar10["val"].images.std() > 10  # real pixels, not zeros


@needs_data
def test_train_val_disjoint_by_tfds_id(cifar10):
    import tensorflow_datasets as tfds

    tr, va = cifar10["train"].source_indices, cifar10["val"].source_indices
    assert not set(tr.tolist()) & set(va.tolist())
    src = tfds.data_source(
        "cifar10", split="train", data_dir=DATA_DIR, download=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    recs_tr = src.__getitems__(tr.tolist())
    recs_va = src.__getitems__(va.tolist())
    ids_tr = {r["id"] for r in recs_tr}
    ids_va = {r["id"] for r in recs_va}
    assert len(ids_tr) == TRAIN and len(ids_va) == VAL
    assert not ids_tr & ids_va
    # Labels correspond to the TFDS records named by source_indices.
    np.testing.assert_array_equal([r["label"] for r in recs_va], cifar10["val"].labels)


@needs_data
def test_load_splits_deterministic(cifar10):
    again = splits.load_splits(
        "cifar10", data_dir=DATA_DIR, val_size=VAL, train_size=TRAIN, test_size=TEST, seed=0,
        progress=False,
    )
    for k in cifar10:
        np.testing.assert_array_equal(again[k].images, cifar10[k].images)
        np.testing.assert_array_equal(again[k].labels, cifar10[k].labels)
        np.testing.assert_array_equal(again[k].source_indices, cifar10[k].source_indices)
    other = splits.load_splits(
        "cifar10", data_dir=DATA_DIR, val_size=VAL, train_size=TRAIN, test_size=TEST, seed=1,
        progress=False,
    )
    for k in cifar10:
        assert not np.array_equal(other[k].source_indices, cifar10[k].source_indices)
        assert not np.array_equal(other[k].images, cifar10[k].images)


def test_val_selection_is_independent_of_train_size():
    labels = np.repeat(np.arange(10, dtype=np.int32), 50)
    a = splits.stratified_val_indices(labels, 10, 100, np.random.default_rng(0))
    b = splits.stratified_val_indices(labels, 10, 100, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.bincount(labels[a]), np.full(10, 10))


def test_stratified_sample_handles_remainders():
    labels = np.repeat(np.arange(10, dtype=np.int32), 50)
    pool = np.arange(500)
    got = splits.stratified_sample(labels, pool, 123, 10, np.random.default_rng(0), field="x")
    assert len(np.unique(got)) == 123
    counts = np.bincount(labels[got], minlength=10)
    assert set(counts.tolist()) <= {12, 13}
    with pytest.raises(ValueError, match=r"x=501.*\[1, 500\]"):
        splits.stratified_sample(labels, pool, 501, 10, np.random.default_rng(0), field="x")


@needs_data
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(val_size=1005), r"data\.val_size=1005.*multiple of num_classes=10"),
        (dict(val_size=-10), r"data\.val_size"),
        (dict(val_size=50000), r"data\.val_size=50000.*at most 49990"),
        (dict(val_size=1000, train_size=49001), r"data\.train_size=49001.*\[1, 49000\]"),
        (dict(val_size=1000, train_size=0), r"data\.train_size=0"),
        (dict(val_size=1000, train_size=10, test_size=10001), r"data\.test_size=10001.*\[1, 10000\]"),
    ],
)
def test_load_splits_impossible_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        splits.load_splits("cifar10", data_dir=DATA_DIR, progress=False, **kwargs)


# ---------------------------------------------------------------- batching


def test_epoch_permutation_deterministic():
    p = batching.epoch_permutation(100, seed=3, epoch=2)
    np.testing.assert_array_equal(np.sort(p), np.arange(100))
    np.testing.assert_array_equal(p, batching.epoch_permutation(100, seed=3, epoch=2))
    assert not np.array_equal(p, batching.epoch_permutation(100, seed=3, epoch=3))
    assert not np.array_equal(p, batching.epoch_permutation(100, seed=4, epoch=2))


def test_train_batches_cover_each_index_once():
    s = _synthetic(1000)
    assert batching.steps_per_epoch(1000, 100) == 10
    seen = []
    for images, labels in batching.train_batches(s, 100, seed=0, epoch=0):
        chex.assert_shape([images, labels], [(100, 4, 4, 3), (100,)])
        chex.assert_type([images, labels], [np.uint8, np.int32])
        np.testing.assert_array_equal(images[:, 0, 0, 0], labels % 256)  # pairs stay aligned
        seen.append(labels)
    seen = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(seen), np.arange(1000))
    # With a remainder: 7 full batches of 128, each index at most once.
    labels = np.concatenate([l for _, l in batching.train_batches(s, 128, seed=0, epoch=1)])
    assert len(labels) == 7 * 128 == len(np.unique(labels))


@needs_data
def test_train_batches_resume_equals_tail(cifar10):
    s = cifar10["train"]
    full = list(batching.train_batches(s, 128, seed=5, epoch=4))
    assert len(full) == batching.steps_per_epoch(len(s), 128) == 15
    for k in (0, 1, 7, 15):
        tail = list(batching.train_batches(s, 128, seed=5, epoch=4, start_step=k))
        assert len(tail) == len(full) - k
        for (ia, la), (ib, lb) in zip(tail, full[k:]):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(la, lb)
    with pytest.raises(ValueError, match="start_step"):
        batching.train_batches(s, 128, seed=5, epoch=4, start_step=16)
    with pytest.raises(ValueError, match="batch_size"):
        batching.train_batches(s, len(s) + 1, seed=0, epoch=0)


@needs_data
def test_eval_batches_mask(cifar10):
    s = cifar10["test"]
    batches = list(batching.eval_batches(s, 128))
    assert len(batches) == 4
    for images, labels, mask in batches:
        chex.assert_shape([images, labels, mask], [(128, 32, 32, 3), (128,), (128,)])
        assert mask.dtype == bool
    masks = np.concatenate([m for _, _, m in batches])
    assert masks.sum() == len(s) == TEST
    np.testing.assert_array_equal(np.concatenate([l for _, l, _ in batches])[masks], s.labels)
    np.testing.assert_array_equal(np.concatenate([i for i, _, _ in batches])[masks], s.images)
    last_images, _, last_mask = batches[-1]
    np.testing.assert_array_equal(last_images[~last_mask], np.broadcast_to(s.images[-1], (12, 32, 32, 3)))
    # Exact multiple: no padding.
    assert sum(m.sum() for _, _, m in batching.eval_batches(s, 100)) == TEST
    assert list(batching.eval_batches(_synthetic(0), 8)) == []


@needs_data
def test_per_host_rows_and_lazy_reading(cifar10):
    """Two "processes" each read half of every batch: together exactly the one-process batches,
    and a lazy split decodes only the rows its process asks for."""
    s = cifar10["train"]
    lazy = splits.load_splits("cifar10", data_dir=DATA_DIR, val_size=VAL, train_size=TRAIN, test_size=TEST,
                              seed=0, progress=False, lazy=True)["train"]
    assert isinstance(lazy.images, sources.RecordImages) and lazy.images.decoded == 0
    halves = (slice(0, 64), slice(64, 128))
    whole = list(batching.train_batches(s, 128, seed=3, epoch=1))
    parts = [list(batching.train_batches(lazy, 128, seed=3, epoch=1, rows=r)) for r in halves]
    for (images, labels), a, b in zip(whole, *parts):
        np.testing.assert_array_equal(np.concatenate([a[0], b[0]]), images)
        np.testing.assert_array_equal(np.concatenate([a[1], b[1]]), labels)
    assert lazy.images.decoded == len(whole) * 128  # each record read once, by the process that feeds it
    assert lazy.subset([5, 1]).images.decoded == 0
    np.testing.assert_array_equal(lazy.subset([5, 1]).images[np.arange(2)], s.images[[5, 1]])
    test = cifar10["test"]  # the last batch of 128 is padded
    counted = sum(m.sum() for r in halves for _, _, m in batching.eval_batches(test, 128, r))
    assert counted == len(test)


def test_to_float_and_normalize_in_jit():
    x = np.array([[0, 128, 255]], np.uint8)
    y = jax.jit(batching.to_float)(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, [[0.0, 128 / 255, 1.0]], rtol=1e-6)
    info = DATASETS["cifar10"]
    z = jax.jit(lambda a: batching.normalize(a, info.mean, info.std))(jnp.broadcast_to(jnp.asarray(info.mean), (2, 3)))
    np.testing.assert_allclose(z, 0.0, atol=1e-6)


# ----------------------------------------------------------------- augment


def _candidates(img: np.ndarray, pad: int = 4) -> np.ndarray:
    """All crops (and their flips) of the reflect-padded image: [(2p+1)^2 * 2, H, W, C]."""
    h, w = img.shape[:2]
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    crops = [padded[dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return np.stack(crops + [c[:, ::-1] for c in crops])


def _match(out: np.ndarray, cands: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.all(cands == out[None], axis=(1, 2, 3)))


@needs_data
def test_random_crop_flip_on_real_images(cifar10):
    images = np.asarray(batching.to_float(cifar10["val"].images[:16]))
    key = jax.random.key(0)
    aug = jax.jit(augment.random_crop_flip, static_argnames=("pad",))
    out = np.asarray(aug(key, images))
    chex.assert_shape(out, images.shape)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.asarray(aug(key, images)))  # same key, same output
    np.testing.assert_array_equal(out, np.asarray(augment.random_crop_flip(key, images)))  # jit == eager
    assert not np.array_equal(out, np.asarray(aug(jax.random.key(1), images)))
    assert not np.array_equal(out, images)
    flipped = 0
    for i in range(len(images)):
        m = _match(out[i], _candidates(images[i]))
        assert m.size >= 1, f"example {i} is not a crop/flip of its reflect-padded original"
        flipped += int(m.min() >= 81)
    assert 0 < flipped < 16
    # flip disabled: every output is an unflipped crop.
    no_flip = np.asarray(augment.random_crop_flip(jax.random.key(2), images, flip_prob=0.0))
    for i in range(len(images)):
        assert (_match(no_flip[i], _candidates(images[i])) < 81).any()


@needs_data
def test_crop_flip_offsets_and_reflect(cifar10):
    images = np.asarray(batching.to_float(cifar10["val"].images[:2]))
    center = augment.crop_flip(images, np.full((2, 2), 4), np.zeros(2, bool))
    np.testing.assert_array_equal(center, images)
    flipped = augment.crop_flip(images, np.full((2, 2), 4), np.ones(2, bool))
    np.testing.assert_array_equal(flipped, images[:, :, ::-1])
    corner = np.asarray(augment.crop_flip(images, np.zeros((2, 2), int), np.zeros(2, bool)))
    # Reflect (not edge/symmetric) padding: padded row 0 == original row 4.
    np.testing.assert_array_equal(corner[:, 0, 4:], images[:, 4, :28])
    np.testing.assert_array_equal(corner[:, 4:, 4:], images[:, :28, :28])
    with pytest.raises(ValueError, match="pad"):
        augment.random_crop_flip(jax.random.key(0), images, pad=32)
