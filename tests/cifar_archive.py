"""Writes a CIFAR python-version archive (the official layout) from the real images of a prepared TFDS copy."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np


def write(name: str, data_dir: str, out: str, *, train: int, test: int) -> str:
    """``out``: a ``.tar.gz`` with the first `train` / `test` records of `name` in `data_dir`.

    Batches as in the official archive: pickled dicts (protocol 2) of ``b"data"`` uint8 [N, 3072]
    (R, G, B planes) and label lists; CIFAR-10 has five training batches, CIFAR-100 one.
    """
    import tensorflow_datasets as tfds

    from rwsjax.data.cifar import ARCHIVES

    a = ARCHIVES[name]
    members = {}
    for split, n, names in (("train", train, a.train), ("test", test, a.test)):
        src = tfds.data_source(name, split=split, data_dir=data_dir)
        records = src.__getitems__(list(range(n)))  # real images; their order here becomes the archive's
        data = np.stack([r["image"].transpose(2, 0, 1).reshape(-1) for r in records]).astype(np.uint8)
        for k, part in enumerate(np.array_split(np.arange(n), len(names))):
            batch = {b"batch_label": f"{names[k]} (rwsjax test)".encode(), b"data": data[part],
                     b"filenames": [f"{i}.png".encode() for i in part]}
            for feature, key in a.label_keys:
                batch[key] = [int(records[i][feature]) for i in part]
            members[names[k]] = pickle.dumps(batch, protocol=2)
    info = tfds.data_source(name, split="test", data_dir=data_dir).dataset_info
    meta = {key: [s.encode() for s in info.features[feature].names]
            for (feature, _), key in zip(a.label_keys, a.names_keys)}
    members[a.meta] = pickle.dumps(meta, protocol=2)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for member, payload in members.items():
            ti = tarfile.TarInfo(f"{a.root}/{member}")
            ti.size = len(payload)
            tar.addfile(ti, io.BytesIO(payload))
    return out
