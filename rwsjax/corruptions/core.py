"""Public entry points: `corrupt` (one image) and `corrupt_batch` (a batch), with validation.

Both implement Hendrycks & Dietterich's CIFAR-10-C generator
(``make_cifar_c.py``, ICLR 2019; see `rwsjax.corruptions.ops`) with the
constants of `rwsjax.corruptions.params`, and cast the result as the
reference stores it: ``np.uint8(np.clip(x, 0, 255))``, i.e. truncation toward
zero, not rounding.

Randomness: image ``i`` of a batch gets its own generator,
``np.random.default_rng(np.random.SeedSequence([seed, index, corruption_id,
severity, stream]))`` (`image_rng`), with ``corruption_id =
CORRUPTION_IDS[name]`` (its position in `CORRUPTIONS`). The bytes for a given
(seed, index, corruption, severity, stream) therefore never depend on the
other images of the batch, on batch size or on chunking. The reference uses
NumPy's global legacy stream instead, so its random draws (not its
distributions) differ.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from rwsjax.corruptions.ops import OPS
from rwsjax.corruptions.params import (
    CORRUPTION_IDS,
    PARAMS,
    RANDOM_CORRUPTIONS,
    RESOLUTIONS,
    check_name,
    check_resolution,
    check_severity,
)

__all__ = [
    "check_image",
    "check_images",
    "check_name",
    "check_resolution",
    "check_severity",
    "corrupt",
    "corrupt_batch",
    "image_rng",
]

#: Images per internal chunk of `corrupt_batch` (bounds float64 temporaries;
#: results do not depend on it).
_CHUNK = 500


def _check_seed(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be a non-negative int, got {value!r} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{what} must be a non-negative int, got {value}")
    return int(value)


def _check_pixels(x, what: str, ndim: int, layout: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray of dtype uint8 {layout}, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise TypeError(
            f"{what} must have dtype uint8 (raw pixels in [0, 255]) with shape {layout}, got dtype {x.dtype}; "
            "convert float images with np.uint8(np.clip(np.round(x * 255), 0, 255)) first"
        )
    if x.ndim != ndim or x.shape[-1] != 3:
        raise ValueError(f"{what} must have shape {layout} (RGB, channels last), got shape {x.shape}")
    return x


def _resolve_resolution(shape: tuple, resolution, what: str) -> int:
    h, w = shape[-3], shape[-2]
    if h != w:
        raise ValueError(f"{what} must be square (H == W), got H={h}, W={w}")
    res = check_resolution(h if resolution is None else resolution)
    if res != h:
        raise ValueError(
            f"{what} is {h}x{w} but resolution={res}: the reference constants for {res} px apply to "
            f"{res}x{res} images only (supported: {list(RESOLUTIONS)})"
        )
    return res


def check_image(image, resolution=None) -> int:
    """Validates one image and returns its resolution (32 or 64).

    Raises:
      TypeError: not a uint8 ndarray.
      ValueError: not ``[H, H, 3]``, or H has no parameter table, or H differs
        from `resolution`.
    """
    _check_pixels(image, "image", 3, "[H, W, 3]")
    return _resolve_resolution(image.shape, resolution, "image")


def check_images(images, resolution=None) -> int:
    """Validates a batch ``[N, H, H, 3]`` uint8 and returns its resolution.

    Raises:
      TypeError / ValueError: as `check_image`.
    """
    _check_pixels(images, "images", 4, "[N, H, W, 3]")
    return _resolve_resolution(images.shape, resolution, "images")


def image_rng(seed: int, index: int, name: str, severity: int, stream: int = 0) -> np.random.Generator:
    """The generator that image `index` uses for corruption `name` at `severity`.

    ``np.random.default_rng(np.random.SeedSequence([seed, index,
    CORRUPTION_IDS[name], severity, stream]))``.

    Args:
      seed: global seed (non-negative int).
      index: the image's identity, e.g. its position in the source split.
      name: corruption name.
      severity: 1..5.
      stream: extra key separating uses of the same indices (the dataset
        generator uses 0 for test images and 1 for training images).

    Raises:
      TypeError / ValueError: invalid arguments.
    """
    check_name(name)
    severity = check_severity(severity)
    ss = np.random.SeedSequence(
        [_check_seed(seed, "seed"), _check_seed(index, "index"), CORRUPTION_IDS[name], severity, _check_seed(stream, "stream")]
    )
    return np.random.default_rng(ss)


def _cast(x: np.ndarray) -> np.ndarray:
    """The reference's storage cast: clip to [0, 255], then truncate (``np.uint8``)."""
    if x.dtype == np.uint8:
        return x
    return np.clip(x, 0, 255).astype(np.uint8)


def corrupt_batch(
    images: np.ndarray,
    name: str,
    severity: int,
    *,
    seed: int,
    indices: Sequence[int] | np.ndarray,
    resolution: int | None = None,
    stream: int = 0,
) -> np.ndarray:
    """Applies one corruption at one severity to a batch of images.

    Implements the function `name` of Hendrycks & Dietterich's
    ``make_cifar_c.py`` (ICLR 2019) -- see `rwsjax.corruptions.ops` for each
    corruption and its documented deviations -- with the constants
    ``PARAMS[resolution][name][severity - 1]``.

    Args:
      images: uint8 ``[N, H, H, 3]`` RGB pixels, H = 32 (CIFAR) or 64
        (Tiny-ImageNet). N may be 0.
      name: one of `CORRUPTIONS`.
      severity: int in 1..5.
      seed: non-negative int, the global seed.
      indices: ``[N]`` non-negative ints, the identity of each image (e.g.
        its position in the source split); with `seed` they key each image's
        random generator (`image_rng`), so results are independent of the
        batch composition.
      resolution: which parameter table to use; None -> H. Must equal H.
      stream: extra non-negative key (see `image_rng`).

    Returns:
      uint8 ``[N, H, H, 3]``: the reference result clipped to [0, 255] and
      truncated (``np.uint8``), as CIFAR-10-C stores it.

    Raises:
      TypeError: `images` is not a uint8 ndarray; severity/seed/indices not
        ints; name not a str.
      ValueError: wrong shape (not ``[N, H, H, 3]`` with H in 32/64),
        unknown corruption (lists the valid names), severity outside 1..5,
        `indices` of the wrong length or negative.
    """
    res = check_images(images, resolution)
    check_name(name)
    severity = check_severity(severity)
    seed = _check_seed(seed, "seed")
    stream = _check_seed(stream, "stream")
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.shape[0] != images.shape[0]:
        raise ValueError(f"indices must have shape [N] = [{images.shape[0]}], got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
    if idx.size and idx.min() < 0:
        raise ValueError(f"indices must be non-negative, got min {idx.min()}")
    c = PARAMS[res][name][severity - 1]
    op = OPS[name]
    out = np.empty_like(images)
    cid = CORRUPTION_IDS[name]
    for start in range(0, images.shape[0], _CHUNK):
        chunk = np.ascontiguousarray(images[start : start + _CHUNK])
        if name in RANDOM_CORRUPTIONS:
            rngs = [
                np.random.default_rng(np.random.SeedSequence([seed, int(i), cid, severity, stream]))
                for i in idx[start : start + _CHUNK]
            ]
        else:
            rngs = None
        out[start : start + chunk.shape[0]] = _cast(op(chunk, c, rngs))
    return out


def corrupt(
    image: np.ndarray,
    name: str,
    severity: int,
    *,
    seed: int,
    index: int,
    resolution: int | None = None,
    stream: int = 0,
) -> np.ndarray:
    """Applies one corruption at one severity to one image.

    Same as ``corrupt_batch(image[None], name, severity, seed=seed,
    indices=[index])[0]`` (bit-identical).

    Args:
      image: uint8 ``[H, H, 3]`` RGB, H = 32 or 64.
      name: one of `CORRUPTIONS`.
      severity: int in 1..5.
      seed: non-negative int.
      index: non-negative int identifying the image (keys its generator).
      resolution: parameter table; None -> H (must equal H).
      stream: extra non-negative key (see `image_rng`).

    Returns:
      uint8 ``[H, H, 3]``.

    Raises:
      TypeError / ValueError: as `corrupt_batch` (bad dtype or shape,
      unknown name, severity outside 1..5, bad seed or index).
    """
    check_image(image, resolution)
    index = _check_seed(index, "index")
    return corrupt_batch(image[None], name, severity, seed=seed, indices=[index], resolution=resolution, stream=stream)[0]
