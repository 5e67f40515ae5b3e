"""Data layer: TFDS CIFAR reading, stratified splits, batching and augmentation."""

from rwsjax.data.augment import crop_flip, random_crop_flip
from rwsjax.data.batching import (
    epoch_permutation,
    eval_batches,
    normalize,
    steps_per_epoch,
    to_float,
    train_batches,
)
from rwsjax.data.sources import (
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    Split,
    dataset_info,
    load_labels,
    load_split,
    resolve_data_dir,
)
from rwsjax.data.splits import load_splits
