"""Tests of rwsjax.corruptions: the 19 CIFAR-10-C corruptions, the TFDS datasets, the OOD summary.

Real CIFAR-10 test images are read from ``$TFDS_DATA_DIR`` (CI:
``../shared/tensorflow_datasets``); tests that need them skip without it.
Reference values are derived by hand (formulas, the parameter table,
colorsys, SciPy/Pillow calls that restate one step) or, for the random
geometric corruptions, by a literal per-image transliteration of
``make_cifar_c.py`` drawing from the same per-image generator -- never from
the package's own output.
"""

from __future__ import annotations

import ast
import colorsys
import io
import math
import os
import time

import chex
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from rwsjax.corruptions import (
    BENCHMARK_CORRUPTIONS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    MONOTONE_CORRUPTIONS,
    NON_MONOTONE_CORRUPTIONS,
    PARAMS,
    RIFT_CORRUPTIONS,
    SEVERITIES,
    corrupt,
    corrupt_batch,
    image_rng,
    summarize,
)
from rwsjax.corruptions import core as core_mod
from rwsjax.corruptions.params import RANDOM_CORRUPTIONS, TFDS_CORRUPTION_NAMES

DATA_DIR = os.environ.get("TFDS_DATA_DIR")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS_MD = os.path.join(os.path.dirname(ROOT), "shared", "cifar_c_parameters.md")

needs_data = pytest.mark.skipif(
    not (DATA_DIR and os.path.isdir(os.path.join(DATA_DIR, "cifar10"))),
    reason="set TFDS_DATA_DIR to a dir holding prepared cifar10",
)


@pytest.fixture(scope="module")
def real():
    """32 real CIFAR-10 test images (uint8 [32,32,32,3]), labels and source positions."""
    if not (DATA_DIR and os.path.isdir(os.path.join(DATA_DIR, "cifar10"))):
        pytest.skip("set TFDS_DATA_DIR to a dir holding prepared cifar10")
    from rwsjax.data.sources import load_split

    s = load_split("cifar10", "test", DATA_DIR, np.arange(0, 10000, 312)[:32], progress=False)
    return s.images, s.labels, s.source_indices


def _c(name, sev, res=32):
    return PARAMS[res][name][sev - 1]


# ----------------------------------------------------------------------------- constants


def test_corruption_lists():
    assert len(CORRUPTIONS) == 19 and len(set(CORRUPTIONS)) == 19
    assert CORRUPTIONS == BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    assert len(BENCHMARK_CORRUPTIONS) == 15
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert len(RIFT_CORRUPTIONS) == 18 and set(RIFT_CORRUPTIONS) == set(CORRUPTIONS) - {"glass_blur"}
    assert set(MONOTONE_CORRUPTIONS) | NON_MONOTONE_CORRUPTIONS == set(CORRUPTIONS)
    assert NON_MONOTONE_CORRUPTIONS == {"glass_blur", "motion_blur", "frost", "spatter", "saturate", "elastic_transform"}
    assert TFDS_CORRUPTION_NAMES["glass_blur"] == "frosted_glass_blur"
    assert TFDS_CORRUPTION_NAMES["elastic_transform"] == "elastic"


def _md_tables(text):
    """The two parameter tables of cifar_c_parameters.md: {32: {name: [5 values]}, 64: {...}}."""
    out, res = {}, None
    for line in text.splitlines():
        if line.startswith("# CIFAR"):
            res = 32
        elif line.startswith("# Tiny"):
            res = 64
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if res is None or len(cells) < 6 or cells[-1] in ("5", "---"):
            continue
        if res == 32 and len(cells) == 8:
            name = cells[1]
        elif res == 64 and len(cells) == 6:
            name = cells[0].split()[0]
        else:
            continue
        if name in CORRUPTIONS:
            out.setdefault(res, {})[name] = [ast.literal_eval(v) for v in cells[-5:]]
    return out


@pytest.mark.skipif(not os.path.isfile(PARAMS_MD), reason="../shared/cifar_c_parameters.md not present")
def test_params_match_shared_table():
    tables = _md_tables(open(PARAMS_MD).read())
    for res in (32, 64):
        assert set(tables[res]) == set(CORRUPTIONS), res
        for name in CORRUPTIONS:
            want = tables[res][name]
            got = list(PARAMS[res][name])
            np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float), err_msg=f"{res} {name}")


# ----------------------------------------------------------------------------- shapes, determinism


@needs_data
def test_shapes_dtypes_every_corruption_and_severity(real):
    x, _, idx = real
    x, idx = x[:4], idx[:4]
    for name in CORRUPTIONS:
        for sev in SEVERITIES:
            out = corrupt_batch(x, name, sev, seed=0, indices=idx)
            chex.assert_shape(out, x.shape)
            chex.assert_type(out, np.uint8)
            assert out.flags.c_contiguous
            assert (out != x).any(), (name, sev)
            single = corrupt(x[0], name, sev, seed=0, index=int(idx[0]))
            chex.assert_shape(single, (32, 32, 3))
            assert single.dtype == np.uint8


@needs_data
def test_determinism_and_batch_independence(real, monkeypatch):
    x, _, idx = real
    x, idx = x[:6], idx[:6]
    perm = np.array([3, 0, 5, 1, 4, 2])
    for name in CORRUPTIONS:
        a = corrupt_batch(x, name, 4, seed=7, indices=idx)
        b = corrupt_batch(x, name, 4, seed=7, indices=idx)
        np.testing.assert_array_equal(a, b, err_msg=name)
        # batch == single images, and order/composition does not matter
        for i in (0, 4):
            np.testing.assert_array_equal(corrupt(x[i], name, 4, seed=7, index=int(idx[i])), a[i], err_msg=name)
        np.testing.assert_array_equal(corrupt_batch(x[perm], name, 4, seed=7, indices=idx[perm]), a[perm], err_msg=name)
        if name in RANDOM_CORRUPTIONS:
            other = corrupt(x[0], name, 4, seed=7, index=int(idx[0]) + 1)
            assert not np.array_equal(other, a[0]), f"{name}: index must change the random draws"
            assert not np.array_equal(corrupt(x[0], name, 4, seed=8, index=int(idx[0])), a[0]), name
            assert not np.array_equal(corrupt(x[0], name, 4, seed=7, index=int(idx[0]), stream=1), a[0]), name
        else:
            np.testing.assert_array_equal(corrupt(x[0], name, 4, seed=8, index=99), a[0], err_msg=name)
    # internal chunking does not change bytes
    names = ("glass_blur", "zoom_blur", "motion_blur", "fog")
    whole = {n: corrupt_batch(x, n, 5, seed=7, indices=idx) for n in names}
    monkeypatch.setattr(core_mod, "_CHUNK", 4)
    for n in names:
        np.testing.assert_array_equal(corrupt_batch(x, n, 5, seed=7, indices=idx), whole[n], err_msg=n)


@needs_data
@pytest.mark.parametrize("name", MONOTONE_CORRUPTIONS)
def test_severity_monotone(real, name):
    """Mean |corrupted - clean| grows with severity for these 13 corruptions.

    The other six (glass_blur, motion_blur, frost, spatter, saturate,
    elastic_transform) are not monotone in the reference generator itself
    (cifar_c_parameters.md: e.g. saturate's severity 3 raises saturation
    after two decreases, elastic_transform moves pixels least at severity
    5), so they are not tested here.
    """
    x, _, idx = real
    change = [np.abs(corrupt_batch(x, name, s, seed=0, indices=idx).astype(float) - x).mean() for s in SEVERITIES]
    assert all(b > a for a, b in zip(change, change[1:], strict=False)), (name, change)


# ----------------------------------------------------------------------------- reference values


def _mid(x, lo, hi):
    return (x >= lo) & (x <= hi)


@needs_data
def test_gaussian_noise_statistics(real):
    x, _, idx = real
    for sev in (1, 3, 5):
        sigma = _c("gaussian_noise", sev) * 255
        out = corrupt_batch(x, "gaussian_noise", sev, seed=1, indices=idx).astype(float)
        m = _mid(x, sigma * 3.5, 255 - sigma * 3.5)
        d = (out - x)[m]
        assert d.size > 5000
        assert abs(d.mean() + 0.5) < 0.6, d.mean()  # truncation lowers by 0.5 on average
        assert abs(d.std() / math.sqrt(sigma**2 + 1 / 12) - 1) < 0.05, (d.std(), sigma)


@needs_data
def test_shot_noise_lattice_and_variance(real):
    x, _, idx = real
    sev = 3
    lam = _c("shot_noise", sev)  # 100 photons
    out = corrupt_batch(x, "shot_noise", sev, seed=1, indices=idx)
    lattice = {int(np.floor(min(k / lam, 1.0) * 255)) for k in range(0, 10 * lam)}
    assert len(lattice) == lam + 1
    assert set(np.unique(out).tolist()) <= lattice  # outputs are floor(255 k / lambda)
    xf = x.astype(float)
    m = _mid(x, 60, 180)
    z = (out.astype(float) + 0.5 - xf)[m] / (255 * np.sqrt(xf[m] / 255 / lam))
    assert abs(z.std() - 1) < 0.07, z.std()
    assert abs(z.mean()) < 0.05


@needs_data
def test_impulse_noise_fraction(real):
    x, _, idx = real
    for sev in (1, 5):
        amount = _c("impulse_noise", sev)
        out = corrupt_batch(x, "impulse_noise", sev, seed=1, indices=idx)
        changed = out != x
        assert set(np.unique(out[changed]).tolist()) <= {0, 255}
        p_change = 0.5 * (x != 255) + 0.5 * (x != 0)
        expected = amount * p_change.mean()
        assert abs(changed.mean() / expected - 1) < 0.12, (changed.mean(), expected)


@needs_data
def test_speckle_noise_statistics(real):
    x, _, idx = real
    sev = 3
    c = _c("speckle_noise", sev)
    out = corrupt_batch(x, "speckle_noise", sev, seed=1, indices=idx).astype(float)
    m = _mid(x, 60, 180)
    rel = (out + 0.5 - x)[m] / x[m]
    assert abs(rel.std() / c - 1) < 0.07, (rel.std(), c)


@needs_data
def test_gaussian_blur_equals_scipy_filter(real):
    x, _, idx = real
    for sev in SEVERITIES:
        s = _c("gaussian_blur", sev)
        want = np.floor(np.clip(ndimage.gaussian_filter(x[:4] / 255.0, (0, s, s, 0), mode="nearest", truncate=4.0), 0, 1) * 255)
        np.testing.assert_array_equal(corrupt_batch(x[:4], "gaussian_blur", sev, seed=0, indices=idx[:4]), want)


@needs_data
def test_defocus_blur_hand_kernel(real):
    x, _, idx = real
    for sev in SEVERITIES:
        radius, alias = _c("defocus_blur", sev)
        L = np.arange(-8, 9)
        X, Y = np.meshgrid(L, L)
        disk = ((X**2 + Y**2) <= radius**2).astype(np.float32)  # float32 as the reference
        disk /= disk.sum()
        g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias**2))
        g /= g.sum()
        kernel = ndimage.correlate(disk, np.outer(g, g).astype(np.float32), mode="mirror")  # mirror == reflect-101
        want = np.floor(np.clip(ndimage.correlate(x[:4] / 255.0, kernel[None, :, :, None], mode="mirror"), 0, 1) * 255)
        got = corrupt_batch(x[:4], "defocus_blur", sev, seed=0, indices=idx[:4]).astype(float)
        d = np.abs(got - want)
        # flat regions land exactly on integer values, where the reference's float32 kernel and this
        # float64 one truncate to neighbouring integers: allow 1 in a few percent of the values
        assert d.max() <= 1 and (d == 0).mean() > 0.97, (sev, d.max(), (d == 0).mean())


@needs_data
def test_contrast_by_hand(real):
    x, _, idx = real
    for sev in SEVERITIES:
        c = _c("contrast", sev)
        xf = x[:4] / 255.0
        mean = xf.mean(axis=(1, 2), keepdims=True)
        want = np.floor(np.clip((xf - mean) * c + mean, 0, 1) * 255)
        got = corrupt_batch(x[:4], "contrast", sev, seed=0, indices=idx[:4]).astype(float)
        d = np.abs(got - want)
        assert d.max() <= 1 and (d == 0).mean() > 0.999


def _hsv_by_hand(img, fn):
    out = np.empty(img.shape, dtype=float)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            h, s, v = colorsys.rgb_to_hsv(*(img[i, j] / 255.0))
            h, s, v = fn(h, s, v)
            out[i, j] = np.floor(np.clip(colorsys.hsv_to_rgb(h, s, v), 0, 1) * 255)
    return out


@needs_data
def test_brightness_and_saturate_by_hand_hsv(real):
    x, _, idx = real
    img = x[1]
    for sev in (1, 5):
        c = _c("brightness", sev)
        want = _hsv_by_hand(img, lambda h, s, v, c=c: (h, s, min(v + c, 1.0)))
        d = np.abs(corrupt(img, "brightness", sev, seed=0, index=1).astype(float) - want)
        assert d.max() <= 1 and (d == 0).mean() > 0.99
        # one pixel, fully by hand: V = max channel; V + c; scale all channels' HSV back
        r, g, b = img[5, 7] / 255.0
        v = max(r, g, b)
        if v > 0 and v + c <= 1:  # no clipping: RGB scales by (v + c) / v, hue and saturation unchanged
            scale = (v + c) / v
            want_px = np.floor(np.array([r, g, b]) * scale * 255 + 1e-9)
            got_px = corrupt(img, "brightness", sev, seed=0, index=1)[5, 7].astype(float)
            assert np.abs(got_px - want_px).max() <= 1
    for sev in SEVERITIES:
        a, b = _c("saturate", sev)
        want = _hsv_by_hand(img, lambda h, s, v, a=a, b=b: (h, min(max(s * a + b, 0.0), 1.0), v))
        d = np.abs(corrupt(img, "saturate", sev, seed=0, index=1).astype(float) - want)
        assert d.max() <= 1 and (d == 0).mean() > 0.99


@needs_data
def test_jpeg_equals_pillow_round_trip(real):
    x, _, idx = real
    for sev in SEVERITIES:
        q = _c("jpeg_compression", sev)
        buf = io.BytesIO()
        Image.fromarray(x[2]).save(buf, "JPEG", quality=q)
        want = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        np.testing.assert_array_equal(corrupt(x[2], "jpeg_compression", sev, seed=0, index=2), want)


@needs_data
def test_pixelate_piecewise_constant_blocks(real):
    x, _, idx = real
    for sev in SEVERITIES:
        s = int(32 * _c("pixelate", sev))  # 30, 28, 27, 24, 20
        out = corrupt(x[3], "pixelate", sev, seed=0, index=3).astype(int)
        block = np.floor((np.arange(32) + 0.5) * s / 32).astype(int)  # output row/col -> small row/col
        for bi in range(s):
            for bj in range(s):
                tile = out[np.ix_(block == bi, block == bj)]
                assert (tile == tile.reshape(-1, 3)[0]).all()  # constant on the block
                # the value is a box average of the input window it comes from
                lo_r, hi_r = int(np.floor(bi * 32 / s)), int(np.ceil((bi + 1) * 32 / s))
                lo_c, hi_c = int(np.floor(bj * 32 / s)), int(np.ceil((bj + 1) * 32 / s))
                win = x[3][lo_r:hi_r, lo_c:hi_c].reshape(-1, 3).astype(int)
                v = tile.reshape(-1, 3)[0]
                assert (v >= win.min(0) - 1).all() and (v <= win.max(0) + 1).all()
        want = np.asarray(Image.fromarray(x[3]).resize((s, s), Image.BOX).resize((32, 32), Image.BOX))
        np.testing.assert_array_equal(out, want)


@needs_data
def test_fog_is_one_plasma_map_per_image(real):
    """Inverting fog's formula gives the same plasma value in all three channels, spanning [0, 1]."""
    x, _, idx = real
    for sev in SEVERITIES:
        c0 = _c("fog", sev)[0]
        out = corrupt_batch(x[:8], "fog", sev, seed=2, indices=idx[:8]).astype(float)
        xf = x[:8] / 255.0
        M = xf.reshape(8, -1).max(1)[:, None, None, None]
        P = ((out + 0.5) / 255 * (M + c0) / M - xf) / c0  # plasma estimate, +- tol from truncation
        tol = (0.5 / 255 * (M + c0) / M / c0)[..., 0]
        ok = ((out > 0) & (out < 255)).all(-1)
        spread = P.max(-1) - P.min(-1)
        assert (spread[ok] <= 2 * np.broadcast_to(tol, spread.shape)[ok] * (1 + 1e-6) + 1e-9).all()
        assert P[ok].min() >= -1.1 * tol.max() and P[ok].max() <= 1 + 1.1 * tol.max()
        for i in range(8):
            assert np.ptp(P[i][ok[i]]) > 0.5


@needs_data
def test_snow_only_brightens_by_the_formula(real):
    x, _, idx = real
    for sev in SEVERITIES:
        c = _c("snow", sev)
        out = corrupt_batch(x[:8], "snow", sev, seed=2, indices=idx[:8]).astype(float)
        xf = x[:8].astype(np.float32) / 255
        gray = (0.299 * xf[..., 0] + 0.587 * xf[..., 1] + 0.114 * xf[..., 2])[..., None]
        base = np.floor(np.clip(c[6] * xf + (1 - c[6]) * np.maximum(xf, gray * 1.5 + 0.5), 0, 1) * 255)
        assert (out >= base - 1).all()  # the snow layer only adds
        assert (np.abs(out - base) <= 1).mean() > 0.2  # and leaves snow-free pixels at the blended base
        assert out.mean() > base.mean() + 1


def _frost_textures(scale):
    import cv2

    from rwsjax.corruptions.ops import frost_texture_path

    return [cv2.resize(cv2.imread(frost_texture_path(i)), (0, 0), fx=scale, fy=scale)[..., ::-1] for i in range(5)]


@needs_data
def test_frost_is_a_crop_of_a_scaled_texture(real):
    """Search all 32x32 crops of the five textures (x0.2) for the one that reproduces the output exactly."""
    x, _, idx = real
    textures = _frost_textures(0.2)
    for sev in (1, 5):
        c0, c1 = _c("frost", sev)
        out = corrupt(x[4], "frost", sev, seed=3, index=4).astype(float)
        found = []
        for t, tex in enumerate(textures):
            win = np.lib.stride_tricks.sliding_window_view(tex, (32, 32, 3))[:, :, 0]  # [nx, ny, 32, 32, 3]
            for x0 in range(win.shape[0]):
                pred = np.floor(np.clip(c0 * x[4].astype(float) + c1 * win[x0], 0, 255))
                found += [(t, x0, int(y0)) for y0 in np.flatnonzero((pred == out).all(axis=(1, 2, 3)))]
        assert found, sev
        t, x0, y0 = found[0]
        tex = textures[t]
        assert x0 < tex.shape[0] - 32 and y0 < tex.shape[1] - 32  # the reference's exclusive bound


@needs_data
def test_spatter_water_and_mud(real):
    x, _, idx = real
    xi = x[:8].astype(float)
    for sev in (1, 2, 3):  # water: pale turquoise (175, 238, 238) added
        out = corrupt_batch(x[:8], "spatter", sev, seed=5, indices=idx[:8]).astype(float)
        d = out - xi
        assert (d >= -1).all()
        ch = (d > 1).any(-1) & (out < 254).all(-1)
        assert ch.sum() > 5
        assert (d[ch][:, 1] >= d[ch][:, 0] - 1).all() and (d[ch][:, 2] >= d[ch][:, 0] - 1).all()
    mud = np.array([63, 42, 20], dtype=float)
    for sev in (4, 5):  # mud: x (1 - m) + m * brown, one m >= 0.8 per pixel
        out = corrupt_batch(x[:8], "spatter", sev, seed=5, indices=idx[:8]).astype(float)
        ch = (np.abs(out - xi) > 1).any(-1)
        assert ch.sum() > 5
        a = xi[ch] - mud
        m_est = (xi[ch] - out[ch]) / np.where(np.abs(a) < 1e-9, np.nan, a)
        strong = np.abs(a) > 60  # truncation error of m_est <= 1 / 60
        sel = np.where(strong, m_est, np.nan)[strong.any(1)]
        assert np.nanmin(sel) > 0.8 - 0.02 and np.nanmax(sel) <= 1 + 0.02
        spread = np.nanmax(sel, 1) - np.nanmin(sel, 1)  # one blend factor for all channels
        assert np.nanmax(spread) < 0.04


@needs_data
def test_motion_blur_hand_kernel(real):
    """ImageMagick's motion blur by hand: shifted copies weighted by exp(-i^2/2s^2), Q16 round, /257 truncated."""
    x, _, idx = real
    for sev in (1, 5):
        radius, sigma = _c("motion_blur", sev)
        angle = image_rng(0, int(idx[0]), "motion_blur", sev).uniform(-45, 45)
        width = 2 * radius + 1
        k = np.exp(-np.arange(width) ** 2 / (2 * sigma**2))
        k /= k.sum()
        acc = np.zeros((32, 32, 3))
        src = x[0].astype(float) * 257
        for i in range(width):
            dr = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
            dc = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
            rows = np.clip(np.arange(32) + dr, 0, 31)
            cols = np.clip(np.arange(32) + dc, 0, 31)
            acc += k[i] * src[rows][:, cols]
        want = np.floor(acc + 0.5) // 257
        got = corrupt(x[0], "motion_blur", sev, seed=0, index=int(idx[0])).astype(float)
        d = np.abs(got - want)
        assert d.max() <= 1 and (d == 0).mean() > 0.99
    flat = np.full((32, 32, 3), 77, np.uint8)
    np.testing.assert_array_equal(corrupt(flat, "motion_blur", 5, seed=0, index=0), flat)


def test_motion_blur_matches_imagemagick():
    """Bit-exact against ImageMagick through Wand (the reference's call), where Wand is installed."""
    wand_image = pytest.importorskip("wand.image")
    import ctypes

    import cv2
    from wand.api import library

    from rwsjax.corruptions.ops import im_motion_blur

    library.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double)
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.integers(0, 256, (32, 32, 3)).astype(float), (1.5, 1.5, 0)).astype(np.uint8)
    img = np.clip((img.astype(int) - img.min()) * 3, 0, 255).astype(np.uint8)
    for radius, sigma in [(6, 1), (9, 2.5), (14, 12)]:
        for angle in (-130.0, -17.3, 0.0, 33.3, 90.0):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            with wand_image.Image(blob=buf.getvalue()) as w:
                library.MagickMotionBlurImage(w.wand, radius, sigma, angle)
                ref = cv2.imdecode(np.frombuffer(w.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
            ref = ref[..., ::-1] if ref.ndim == 3 else np.stack([ref] * 3, -1)
            np.testing.assert_array_equal(im_motion_blur(img[None], radius, sigma, np.array([angle]))[0], ref)


def test_zoom_blur_on_an_edge_by_hand():
    """A vertical step edge: zoom by z about the centre maps column j to c + (j - c) / z, so the mean of
    the zooms is a monotone ramp that widens with the largest zoom, with the far columns untouched."""
    # zoom factors np.arange(1, end, .01): float rounding makes arange(1, 1.06, .01) and
    # arange(1, 1.11, .01) include their end points
    assert [len(np.arange(1, _c("zoom_blur", s), 0.01)) for s in SEVERITIES] == [7, 12, 16, 21, 26]
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 200
    widths = []
    for sev in SEVERITIES:
        out = corrupt(img, "zoom_blur", sev, seed=0, index=0).astype(float)
        assert (out == out[:1]).all()  # every row identical (the edge is vertical)
        row = out[16, :, 0]
        assert (np.diff(row) >= 0).all()  # a monotone ramp
        assert row[:8].max() == 0 and row[26:].min() >= 199  # 200 * (1 / 255) * 255 may truncate to 199
        widths.append(int(((row > 0) & (row < 199)).sum()))
    assert widths == sorted(widths) and widths[-1] > widths[0], widths


def _glass_blur_by_hand(img, sev, rng):
    """make_cifar_c.py's glass_blur loop, literally (per pixel, NumPy-view 'swap')."""
    sigma, delta, iters = _c("glass_blur", sev)
    x = np.uint8(ndimage.gaussian_filter(img / 255.0, (sigma, sigma, 0), mode="nearest") * 255)
    for _ in range(iters):
        for h in range(32 - delta, delta, -1):
            for w in range(32 - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2,))
                hp, wp = h + dy, w + dx
                x[h, w], x[hp, wp] = x[hp, wp], x[h, w]
    return np.uint8(np.clip(ndimage.gaussian_filter(x / 255.0, (sigma, sigma, 0), mode="nearest"), 0, 1) * 255)


@needs_data
def test_glass_blur_equals_reference_loop(real):
    x, _, idx = real
    for sev in SEVERITIES:
        for i in (0, 1):
            want = _glass_blur_by_hand(x[i], sev, image_rng(4, int(idx[i]), "glass_blur", sev))
            np.testing.assert_array_equal(corrupt(x[i], "glass_blur", sev, seed=4, index=int(idx[i])), want)


def _elastic_by_hand(img, sev, rng):
    """make_cifar_c.py's elastic_transform, literally (cv2 warp + SciPy displacement)."""
    import cv2

    a, s, f = (32 * v for v in _c("elastic_transform", sev))
    image = img.astype(np.float32) / 255.0
    pts1 = np.float32([[26, 26], [26, 6], [6, 6]])  # centre 16 +- 32 // 3
    pts2 = pts1 + rng.uniform(-f, f, size=(3, 2)).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), (32, 32), borderMode=cv2.BORDER_REFLECT_101)
    dx = (ndimage.gaussian_filter(rng.uniform(-1, 1, (32, 32)), s, mode="reflect", truncate=3) * a).astype(np.float32)
    dy = (ndimage.gaussian_filter(rng.uniform(-1, 1, (32, 32)), s, mode="reflect", truncate=3) * a).astype(np.float32)
    yy, xx, zz = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    coords = [(yy + dy[..., None]).reshape(-1), (xx + dx[..., None]).reshape(-1), zz.reshape(-1)]
    out = ndimage.map_coordinates(image, coords, order=1, mode="reflect").reshape(32, 32, 3)
    return np.uint8(np.clip(out, 0, 1) * 255)


@needs_data
def test_elastic_transform_equals_reference_steps(real):
    x, _, idx = real
    for sev in SEVERITIES:
        want = _elastic_by_hand(x[5], sev, image_rng(6, int(idx[5]), "elastic_transform", sev))
        got = corrupt(x[5], "elastic_transform", sev, seed=6, index=int(idx[5]))
        np.testing.assert_array_equal(got, want)
    # severity 1 has alpha = 0: a pure affine warp; an independent SciPy warp agrees up to interpolation
    import cv2

    rng = image_rng(6, int(idx[5]), "elastic_transform", 1)
    pts1 = np.float32([[26, 26], [26, 6], [6, 6]])
    pts2 = pts1 + rng.uniform(-2.56, 2.56, size=(3, 2)).astype(np.float32)
    M = np.vstack([cv2.getAffineTransform(pts1, pts2), [0, 0, 1]])
    inv = np.linalg.inv(M)  # output (col, row) -> input (col, row)
    A = inv[:2, :2][::-1, ::-1]
    off = inv[:2, 2][::-1]
    sci = np.stack([ndimage.affine_transform(x[5][..., k] / 255.0, A, off, order=1, mode="mirror") for k in range(3)], -1)
    got = corrupt(x[5], "elastic_transform", 1, seed=6, index=int(idx[5])).astype(float)
    assert np.abs(got - np.floor(np.clip(sci, 0, 1) * 255)).mean() < 1.5


# ----------------------------------------------------------------------------- 64 px (Tiny-ImageNet constants)


@needs_data
def test_tiny_imagenet_resolution(real):
    x, _, idx = real
    big = np.repeat(np.repeat(x[:2], 2, axis=1), 2, axis=2)  # 64x64
    for name in CORRUPTIONS:
        out = corrupt_batch(big, name, 5, seed=0, indices=idx[:2])
        chex.assert_shape(out, (2, 64, 64, 3))
        assert out.dtype == np.uint8
    got = corrupt_batch(big, "contrast", 1, seed=0, indices=idx[:2], resolution=64).astype(float)
    mean = (big / 255.0).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, np.floor(((big / 255.0 - mean) * 0.4 + mean) * 255), atol=1)  # Tiny: 0.4


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        corrupt(img.astype(np.float32), "fog", 1, seed=0, index=0)
    with pytest.raises(TypeError, match="uint8"):
        corrupt(img.tolist(), "fog", 1, seed=0, index=0)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        corrupt(np.zeros((32, 32), np.uint8), "fog", 1, seed=0, index=0)
    with pytest.raises(ValueError, match="square"):
        corrupt(np.zeros((32, 30, 3), np.uint8), "fog", 1, seed=0, index=0)
    with pytest.raises(ValueError, match=r"\[32, 64\]"):
        corrupt(np.zeros((48, 48, 3), np.uint8), "fog", 1, seed=0, index=0)
    with pytest.raises(ValueError, match="resolution=64"):
        corrupt(img, "fog", 1, seed=0, index=0, resolution=64)
    with pytest.raises(ValueError) as e:
        corrupt(img, "gaussian_nosie", 1, seed=0, index=0)
    assert all(n in str(e.value) for n in CORRUPTIONS)
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match=r"\[1, 2, 3, 4, 5\]"):
            corrupt(img, "fog", bad, seed=0, index=0)
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError, match="severity"):
            corrupt(img, "fog", bad, seed=0, index=0)
    with pytest.raises(ValueError, match="non-negative"):
        corrupt(img, "fog", 1, seed=-1, index=0)
    with pytest.raises(ValueError, match="indices"):
        corrupt_batch(np.zeros((3, 32, 32, 3), np.uint8), "fog", 1, seed=0, indices=[0, 1])
    with pytest.raises(ValueError, match=r"\[N, W|\[N, H, W, 3\]"):
        corrupt_batch(img, "fog", 1, seed=0, indices=[0])
    out = corrupt_batch(np.zeros((0, 32, 32, 3), np.uint8), "fog", 1, seed=0, indices=[])
    assert out.shape == (0, 32, 32, 3)


# ----------------------------------------------------------------------------- OOD summary


def _full_acc():
    return {(n, s): 50.0 + i + s for i, n in enumerate(CORRUPTIONS) for s in SEVERITIES}


def test_summarize_means_by_hand():
    acc = _full_acc()
    out = summarize(acc, strict=True)
    assert out["per_corruption"]["gaussian_noise"] == pytest.approx(50 + 0 + 3)
    assert out["per_corruption"]["saturate"] == pytest.approx(50 + 18 + 3)
    # mean_15: corruption i = 0..14 -> mean(50 + i + 3) = 53 + 7
    assert out["mean_15"] == pytest.approx(60.0)
    ids = [CORRUPTIONS.index(n) for n in RIFT_CORRUPTIONS]
    assert out["mean_rift18"] == pytest.approx(53 + sum(ids) / 18)
    assert out["mean_19"] == pytest.approx(53 + 9)
    assert out["missing"] == {"mean_15": [], "mean_rift18": [], "mean_19": []}


def test_summarize_never_averages_a_partial_set():
    acc = _full_acc()
    del acc[("fog", 2)]
    del acc[("glass_blur", 5)]
    out = summarize(acc)
    assert out["mean_15"] is None and out["mean_19"] is None
    assert out["mean_rift18"] is None
    assert out["missing"]["mean_15"] == [("glass_blur", 5), ("fog", 2)]
    assert out["missing"]["mean_rift18"] == [("fog", 2)]
    assert out["incomplete_corruptions"] == {"glass_blur": [5], "fog": [2]}
    assert "fog" not in out["per_corruption"] and "snow" in out["per_corruption"]
    with pytest.raises(ValueError, match="fog"):
        summarize(acc, strict=True)
    only_rift = {k: v for k, v in _full_acc().items() if k[0] != "glass_blur"}
    out = summarize(only_rift)
    assert out["mean_15"] is None and out["mean_rift18"] is not None
    assert len(out["missing"]["mean_15"]) == 5
    with pytest.raises(ValueError, match="unknown corruption"):
        summarize({("glass", 1): 3.0})
    with pytest.raises(ValueError, match="severity"):
        summarize({("fog", 0): 3.0})
    with pytest.raises(ValueError, match="percentage"):
        summarize({("fog", 1): 300.0})
    with pytest.raises(ValueError, match="finite"):
        summarize({("fog", 1): float("nan")})


# ----------------------------------------------------------------------------- TFDS datasets


@needs_data
def test_tfds_round_trip(tmp_path):
    import tensorflow_datasets as tfds

    from rwsjax.corruptions.datasets import SIDECAR, generate, load_corrupted, stored_indices
    from rwsjax.data.sources import DatasetNotFoundError, load_split

    out_dir = str(tmp_path / "tfds")
    want_idx = np.array([3, 10, 7, 2, 5])
    path = generate("cifar10", "glass_blur", 2, out_data_dir=out_dir, indices=want_idx, seed=9,
                    source_data_dir=DATA_DIR, progress=False)
    assert path.endswith(os.path.join("cifar10_corrupted", "frosted_glass_blur_2", "1.0.0"))
    assert os.path.isfile(os.path.join(path, SIDECAR))
    assert not os.path.exists(os.path.join(out_dir, ".rwsjax_incomplete"))
    order = np.sort(want_idx)
    clean = load_split("cifar10", "test", DATA_DIR, order, progress=False)
    expected = corrupt_batch(clean.images, "glass_blur", 2, seed=9, indices=order)

    src = tfds.data_source("cifar10_corrupted/frosted_glass_blur_2", split="test", data_dir=out_dir)
    assert len(src) == 5
    for j in range(5):
        np.testing.assert_array_equal(src[j]["image"], expected[j])
        assert src[j]["label"] == clean.labels[j]
    # same features as TFDS's own cifar10_corrupted
    assert set(src.dataset_info.features.keys()) == {"image", "label"}
    assert src.dataset_info.features["image"].shape == (32, 32, 3)
    assert src.dataset_info.features["label"].num_classes == 10
    assert src.dataset_info.version == "1.0.0"

    s = load_corrupted("cifar10", "glass_blur", 2, data_dir=out_dir, indices=[7, 3])
    np.testing.assert_array_equal(s.images, expected[[3, 1]])
    np.testing.assert_array_equal(s.labels, clean.labels[[3, 1]])
    np.testing.assert_array_equal(s.source_indices, [7, 3])
    np.testing.assert_array_equal(stored_indices("cifar10", "glass_blur", 2, data_dir=out_dir), order)

    with pytest.raises(ValueError, match="SUBSET: 5 of the 10000"):
        load_corrupted("cifar10", "glass_blur", 2, data_dir=out_dir)
    with pytest.raises(ValueError, match=r"1 of the 2 requested .* e\.g\. source positions \[4\]"):
        load_corrupted("cifar10", "glass_blur", 2, data_dir=out_dir, indices=[3, 4])
    with pytest.raises(DatasetNotFoundError, match="python -m rwsjax.corruptions generate"):
        load_corrupted("cifar10", "fog", 2, data_dir=out_dir)
    with pytest.raises(DatasetNotFoundError):
        load_corrupted("cifar10", "glass_blur", 2, data_dir=out_dir, split="train")

    # cached: same request returns at once without rewriting; another request refuses without overwrite
    mtime = os.path.getmtime(os.path.join(path, "dataset_info.json"))
    t = time.time()
    assert generate("cifar10", "glass_blur", 2, out_data_dir=out_dir, indices=want_idx[::-1], seed=9,
                    source_data_dir=DATA_DIR, progress=False) == path
    assert time.time() - t < 1.0 and os.path.getmtime(os.path.join(path, "dataset_info.json")) == mtime
    with pytest.raises(ValueError, match="other arguments"):
        generate("cifar10", "glass_blur", 2, out_data_dir=out_dir, indices=want_idx, seed=10,
                 source_data_dir=DATA_DIR, progress=False)

    # corrupted training split next to the test split
    generate("cifar10", "glass_blur", 2, out_data_dir=out_dir, split="train", indices=[0, 1, 2], seed=9,
             source_data_dir=DATA_DIR, progress=False)
    tr = load_corrupted("cifar10", "glass_blur", 2, data_dir=out_dir, split="train", indices=[0, 1, 2])
    clean_tr = load_split("cifar10", "train", DATA_DIR, [0, 1, 2], progress=False)
    np.testing.assert_array_equal(tr.images, corrupt_batch(clean_tr.images, "glass_blur", 2, seed=9, indices=[0, 1, 2], stream=1))
    np.testing.assert_array_equal(tr.labels, clean_tr.labels)
    assert len(tfds.data_source("cifar10_corrupted/frosted_glass_blur_2", split="test", data_dir=out_dir)) == 5

    # overwrite replaces one split and keeps the other
    generate("cifar10", "glass_blur", 2, out_data_dir=out_dir, indices=[1, 4], seed=9, source_data_dir=DATA_DIR,
             overwrite=True, progress=False)
    assert len(tfds.data_source("cifar10_corrupted/frosted_glass_blur_2", split="test", data_dir=out_dir)) == 2
    assert len(tfds.data_source("cifar10_corrupted/frosted_glass_blur_2", split="train", data_dir=out_dir)) == 3

    # a dataset without sidecar (as TFDS's real CIFAR-10-C) is read by record position
    os.remove(os.path.join(path, SIDECAR))
    raw = load_corrupted("cifar10", "glass_blur", 2, data_dir=out_dir)
    np.testing.assert_array_equal(raw.source_indices, [0, 1])
    with pytest.raises(ValueError, match="not generated by rwsjax"):
        generate("cifar10", "glass_blur", 2, out_data_dir=out_dir, indices=[1, 4], seed=9, source_data_dir=DATA_DIR,
                 progress=False)


@needs_data
def test_killed_generation_leaves_nothing_complete(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from rwsjax.corruptions import datasets
    from rwsjax.corruptions.datasets import generate, is_generated

    out_dir = str(tmp_path / "tfds")
    real_corrupt = datasets.corrupt_batch

    def dying(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(datasets, "corrupt_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        generate("cifar10", "fog", 1, out_data_dir=out_dir, indices=[0, 1], source_data_dir=DATA_DIR, progress=False)
    assert not os.path.exists(os.path.join(out_dir, "cifar10_corrupted", "fog_1", "1.0.0"))
    assert not is_generated("cifar10", "fog", 1, out_data_dir=out_dir, indices=[0, 1], source_data_dir=DATA_DIR)
    monkeypatch.setattr(datasets, "corrupt_batch", real_corrupt)
    generate("cifar10", "fog", 1, out_data_dir=out_dir, indices=[0, 1], source_data_dir=DATA_DIR, progress=False)
    assert is_generated("cifar10", "fog", 1, out_data_dir=out_dir, indices=[1, 0], source_data_dir=DATA_DIR)
    assert len(tfds.data_source("cifar10_corrupted/fog_1", split="test", data_dir=out_dir)) == 2


@needs_data
def test_cifar100_corrupted(tmp_path):
    import tensorflow_datasets as tfds

    from rwsjax.corruptions.datasets import generate, load_corrupted
    from rwsjax.data.sources import load_split

    out_dir = str(tmp_path / "tfds")
    generate("cifar100", "elastic_transform", 3, out_data_dir=out_dir, indices=[0, 5, 9], source_data_dir=DATA_DIR,
             progress=False)
    src = tfds.data_source("cifar100_corrupted/elastic_3", split="test", data_dir=out_dir)
    clean_info = tfds.data_source("cifar100", split="test", data_dir=DATA_DIR).dataset_info
    assert src.dataset_info.features["label"].names == clean_info.features["label"].names
    s = load_corrupted("cifar100", "elastic_transform", 3, data_dir=out_dir, indices=[9, 0])
    clean = load_split("cifar100", "test", DATA_DIR, [9, 0], progress=False)
    np.testing.assert_array_equal(s.labels, clean.labels)
    np.testing.assert_array_equal(s.images, corrupt_batch(clean.images, "elastic_transform", 3, seed=0, indices=[9, 0]))


@needs_data
def test_cli_generate_and_gallery(tmp_path, capsys):
    import tensorflow_datasets as tfds

    from rwsjax.corruptions.__main__ import main, subset_indices

    out_dir = str(tmp_path / "tfds")
    argv = ["generate", "--dataset", "cifar10", "--corruptions", "contrast,saturate", "--severities", "2",
            "--out_data_dir", out_dir, "--num_examples", "20", "--source_data_dir", DATA_DIR, "--no_progress"]
    assert main(argv) == 0
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "already generated, skipped" in text and "2 cached" in text
    src = tfds.data_source("cifar10_corrupted/saturate_2", split="test", data_dir=out_dir)
    assert len(src) == 20
    idx = subset_indices("cifar10", "test", 20, 0, DATA_DIR)
    from rwsjax.data.splits import load_splits

    splits = load_splits("cifar10", data_dir=DATA_DIR, val_size=0, train_size=10, test_size=20, progress=False)
    np.testing.assert_array_equal(splits["test"].source_indices, idx)  # same subset as the cpu/smoke presets
    assert main(["generate", "--corruptions", "nope", "--out_data_dir", out_dir]) == 2
    assert "unknown corruption 'nope'" in capsys.readouterr().err
    png = tmp_path / "g.png"
    assert main(["gallery", "--out", str(png), "--data_dir", DATA_DIR]) == 0
    im = Image.open(png)
    assert im.size[0] > 400 and im.size[1] > 1200


def test_ood_description_states_source_and_robustbench_protocol():
    """The reports' OOD sentence: RobustBench's corruption number only for mean_15 over severities 1–5 on all
    10,000 test images; otherwise every difference is named; the source (generated / TFDS) is said."""
    from rwsjax.workflows.ood import describe
    full = dict(source="tfds", data_dir="/data/c10c", corruptions=list(range(15)), severities=[1, 2, 3, 4, 5],
                n=10_000, summary_key="mean_15")
    text = describe(full, "cifar10")
    assert "TFDS `cifar10_corrupted` build in /data/c10c" in text and "RobustBench's corruption protocol" in text
    part = dict(full, source="generate", severities=[3], n=2_000)
    text = describe(part, "cifar10")
    assert "generated by rwsjax.corruptions" in text and "not RobustBench's corruption number" in text
    assert "severities [3], not 1–5" in text and "2,000 test images, not all 10,000" in text
    assert "no tiny_imagenet corruption benchmark" in describe(dict(full, n=123), "tiny_imagenet")
