"""Parameter tables of the 19 common corruptions, keyed by image resolution.

Source: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations" (ICLR 2019), public generators in
``hendrycks/robustness``:

* ``PARAMS[32]``: ``ImageNet-C/create_c/make_cifar_c.py`` (CIFAR-10-C /
  CIFAR-100-C, 32x32 images);
* ``PARAMS[64]``: ``ImageNet-C/create_c/make_tinyimagenet_c.py``
  (Tiny-ImageNet-C, 64x64 images).

Every entry is a tuple of 5 values, one per severity 1..5 (index
``severity - 1``). The meaning of each value (all intensities on [0, 1]
pixels unless noted):

==================  ==========================================================
gaussian_noise      sigma of additive N(0, sigma^2) noise
shot_noise          lambda: photons per unit intensity, x' = Poisson(lambda x)/lambda
impulse_noise       salt-and-pepper amount (fraction of pixel *channels* hit)
defocus_blur        (disk radius px, sigma px of the 3x3 anti-alias Gaussian)
glass_blur          (Gaussian sigma px, max shift delta px, iterations)
motion_blur         (radius px, sigma px) of ImageMagick's motion blur
zoom_blur           end of ``np.arange(1, end, 0.01)`` (zoom factors)
snow                (mean, std, zoom, threshold, blur radius px, blur sigma px, blend)
frost               (image weight, frost weight)
fog                 (strength, wibble decay of the plasma fractal)
brightness          added to V in HSV
contrast            factor around the per-channel mean
elastic_transform   (alpha, sigma, affine) as fractions of the image size
pixelate            down-scale factor of the box resize
jpeg_compression    JPEG quality (Pillow)
speckle_noise       sigma of multiplicative noise, x' = x + x n
gaussian_blur       sigma px
spatter             (loc, scale, sigma, threshold, intensity, mode 0=water/1=mud)
saturate            (scale, shift) of S in HSV
==================  ==========================================================

Resolution-dependent constants that are not per-severity (frost texture
scale, plasma-fractal map size) are in `FROST_SCALE` and `PLASMA_MAPSIZE`.
"""

from __future__ import annotations

import numbers
import types

__all__ = [
    "BENCHMARK_CORRUPTIONS",
    "CORRUPTIONS",
    "CORRUPTION_IDS",
    "EXTRA_CORRUPTIONS",
    "FROST_FILES",
    "FROST_SCALE",
    "MONOTONE_CORRUPTIONS",
    "NON_MONOTONE_CORRUPTIONS",
    "PARAMS",
    "PLASMA_MAPSIZE",
    "RANDOM_CORRUPTIONS",
    "RESOLUTIONS",
    "RIFT_CORRUPTIONS",
    "SEVERITIES",
    "TFDS_CORRUPTION_NAMES",
    "params_for",
]

#: The 15 benchmark corruptions (noise 1-3, blur 4-7, weather 8-11, digital
#: 12-15), in the order of the paper's tables.
BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)

#: The 4 "extra" (held-out / validation) corruptions released with CIFAR-10-C.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

#: All 19, in table order (15 benchmark, then 4 extra).
CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS

#: The 18-corruption list of the official RiFT code (Zhu et al., ICCV 2023;
#: ``microsoft/robustlearn``, ``RiFT/utils.py``, ``evaluate_cifar_corruption``
#: and ``RiFT/dataloader.py``, ``CIFAR10C``), in that code's order: all 19
#: except glass_blur. RiFT evaluates each corruption's whole 50,000-image
#: ``.npy`` file, i.e. all 5 severities, and averages the 18 accuracies.
RIFT_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "speckle_noise",
    "impulse_noise",
    "defocus_blur",
    "gaussian_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "spatter",
    "saturate",
    "frost",
)

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: Stable small integer per corruption (its position in `CORRUPTIONS`); part
#: of every image's random seed, so never renumber.
CORRUPTION_IDS: types.MappingProxyType = types.MappingProxyType(
    {name: i for i, name in enumerate(CORRUPTIONS)}
)

#: Corruptions that draw random numbers (the others are deterministic).
RANDOM_CORRUPTIONS: frozenset[str] = frozenset(
    {
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "glass_blur",
        "motion_blur",
        "snow",
        "frost",
        "fog",
        "elastic_transform",
        "speckle_noise",
        "spatter",
    }
)

#: Corruptions whose mean |corrupted - clean| does NOT grow with severity in
#: the reference generator (measured on real CIFAR-10 test images): glass and
#: motion blur, frost, spatter, saturate (severity 3 *raises* saturation after
#: two decreases) and elastic_transform (changes pixels least at severity 5).
NON_MONOTONE_CORRUPTIONS: frozenset[str] = frozenset(
    {"glass_blur", "motion_blur", "frost", "spatter", "saturate", "elastic_transform"}
)
#: The other 13, for which a higher severity changes pixels more on average.
MONOTONE_CORRUPTIONS: tuple[str, ...] = tuple(c for c in CORRUPTIONS if c not in NON_MONOTONE_CORRUPTIONS)

#: Builder-config spelling used by TFDS's ``cifar10_corrupted`` (config
#: ``<tfds name>_<severity>``): TFDS renames two corruptions.
TFDS_CORRUPTION_NAMES: types.MappingProxyType = types.MappingProxyType(
    {name: {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}.get(name, name) for name in CORRUPTIONS}
)

_P32 = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}

_P64 = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
    "shot_noise": (250, 100, 50, 30, 15),
    "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
    "defocus_blur": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
    "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
    "motion_blur": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.8),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6),
    ),
    "frost": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
    "fog": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "jpeg_compression": (65, 58, 50, 40, 25),
    "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
    "gaussian_blur": (0.5, 0.75, 1, 1.25, 1.5),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.6, 0),
        (0.65, 0.1, 0.8, 0.7, 0.6, 0),
        (0.65, 0.3, 1, 0.69, 0.6, 0),
        (0.65, 0.1, 0.7, 0.68, 0.6, 1),
        (0.65, 0.1, 0.5, 0.67, 0.6, 1),
    ),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
}

#: ``PARAMS[resolution][corruption][severity - 1]``.
PARAMS: types.MappingProxyType = types.MappingProxyType(
    {32: types.MappingProxyType(_P32), 64: types.MappingProxyType(_P64)}
)
RESOLUTIONS: tuple[int, ...] = tuple(sorted(PARAMS))

#: Frost texture down-scale factor (``cv2.resize(fx=fy=scale)``) per resolution.
FROST_SCALE: types.MappingProxyType = types.MappingProxyType({32: 0.2, 64: 0.3})
#: Side of the plasma-fractal map for fog (a power of two) per resolution.
PLASMA_MAPSIZE: types.MappingProxyType = types.MappingProxyType({32: 32, 64: 64})
#: Frost textures in the reference's list order; the reference draws
#: ``np.random.randint(5)``, so only the first five are ever used.
FROST_FILES: tuple[str, ...] = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


def check_name(name) -> str:
    """Returns `name` if it is one of `CORRUPTIONS`.

    Raises:
      TypeError: `name` is not a str.
      ValueError: unknown corruption; the message lists all valid names.
    """
    if not isinstance(name, str):
        raise TypeError(f"corruption name must be a str, got {type(name).__name__}; valid names: {', '.join(CORRUPTIONS)}")
    if name not in CORRUPTION_IDS:
        raise ValueError(f"Unknown corruption {name!r}; valid names: {', '.join(CORRUPTIONS)}")
    return name


def check_severity(severity) -> int:
    """Returns `severity` as an int if it is an integer in 1..5.

    Raises:
      TypeError: not an integer (bools and floats are refused).
      ValueError: outside 1..5.
    """
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral):
        raise TypeError(f"severity must be an int in {list(SEVERITIES)}, got {severity!r} ({type(severity).__name__})")
    severity = int(severity)
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {severity}")
    return severity


def check_resolution(resolution) -> int:
    """Returns `resolution` if a parameter table exists for it (32 or 64).

    Raises:
      ValueError: no table for it (lists the valid resolutions).
    """
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or int(resolution) not in PARAMS:
        raise ValueError(
            f"resolution must be one of {list(RESOLUTIONS)} (32: CIFAR-10/100-C constants, "
            f"64: Tiny-ImageNet-C constants), got {resolution!r}"
        )
    return int(resolution)


def params_for(name: str, severity: int, resolution: int = 32):
    """The reference constants of one corruption at one severity.

    Args:
      name: one of `CORRUPTIONS`.
      severity: int in 1..5.
      resolution: 32 (CIFAR) or 64 (Tiny-ImageNet).

    Returns:
      A number or a tuple of numbers (see the module docstring for meanings).

    Raises:
      ValueError: unknown name, severity or resolution (lists the valid ones).
      TypeError: severity is not an int.
    """
    check_name(name)
    check_severity(severity)
    check_resolution(resolution)
    return PARAMS[resolution][name][severity - 1]


def _check_tables() -> None:
    for res, table in PARAMS.items():
        assert set(table) == set(CORRUPTIONS), res
        for name, row in table.items():
            assert len(row) == 5, (res, name)
    assert len(RIFT_CORRUPTIONS) == 18 and set(RIFT_CORRUPTIONS) == set(CORRUPTIONS) - {"glass_blur"}
    assert len(MONOTONE_CORRUPTIONS) == 13


_check_tables()
