"""The 19 corruptions of CIFAR-10-C, batched, with explicit constants and RNGs.

Each function here is the batched transliteration of the function of the same
name in Hendrycks & Dietterich's ``make_cifar_c.py`` (ICLR 2019,
``hendrycks/robustness``, ``ImageNet-C/create_c/``; the Tiny-ImageNet
generator ``make_tinyimagenet_c.py`` differs only in its constants and image
size). Common signature::

    fn(images, c, rngs) -> np.ndarray  # [N, H, W, 3], values in [0, 255]

* ``images``: uint8 ``[N, H, W, 3]`` RGB (square, H = W = 32 or 64).
* ``c``: that corruption's constants at one severity, i.e. one entry of
  `rwsjax.corruptions.params.PARAMS` (a number or a tuple).
* ``rngs``: one `np.random.Generator` per image (ignored by the
  deterministic corruptions; may then be None). Image ``i`` draws only from
  ``rngs[i]``, in the same order as the reference draws from ``np.random``,
  so a result never depends on the other images of the batch.

The return value is the reference's float (or uint8) result *before* its
final ``np.uint8`` cast; `rwsjax.corruptions.corrupt_batch` applies that cast
(clip to [0, 255], then truncate). Use that function unless you need custom
constants; these do not validate their inputs.

Operations follow the reference step by step, in the same floating-point
types (float64 from ``x / 255.``, float32 where the reference casts), with the
same library calls where they exist today: ``skimage.filters.gaussian`` is
``scipy.ndimage.gaussian_filter`` (which it wraps; default mode ``nearest``,
truncate 4), ``skimage.color`` for HSV, ``skimage.util.random_noise`` for
salt-and-pepper, OpenCV for the disk kernel, filter2D, Canny, distance
transform, affine warps and the frost texture resize, Pillow for JPEG and box
resizing. Deliberate deviations are listed in each function's docstring (and
in ``docs/corruptions.md``):

* motion_blur / snow: ImageMagick's ``MagickMotionBlurImage`` (through Wand)
  is replaced by a NumPy line kernel that re-implements it (`im_motion_blur`).
* glass_blur: vectorized; bit-exact with the reference loop, including its
  aliasing "swap" that is really a copy (see `glass_blur`).
* spatter: a guard for the (rare) all-dry liquid layer, where the reference
  divides 0 by 0.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import os
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from rwsjax.corruptions.params import FROST_FILES, FROST_SCALE, PLASMA_MAPSIZE

__all__ = [
    "OPS",
    "brightness",
    "contrast",
    "defocus_blur",
    "disk_kernel",
    "elastic_transform",
    "fog",
    "frost",
    "frost_texture",
    "frost_texture_path",
    "gaussian_blur",
    "gaussian_noise",
    "glass_blur",
    "im_motion_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "plasma_fractal",
    "saturate",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "zoom_blur",
]

Rngs = Sequence[np.random.Generator]


def _cv2():
    import cv2

    return cv2


def _gaussian(x: np.ndarray, sigma: float, *, batched: bool, channels: bool, mode: str = "nearest",
              truncate: float = 4.0) -> np.ndarray:
    """``skimage.filters.gaussian`` (``preserve_range`` irrelevant for floats) on a batch.

    skimage calls ``scipy.ndimage.gaussian_filter`` with sigma on the spatial
    axes and 0 on the channel axis; a 0 sigma on the batch axis makes it skip
    that axis, so every image is filtered exactly as on its own.
    """
    sig = ([0.0] if batched else []) + [sigma, sigma] + ([0.0] if channels else [])
    return ndimage.gaussian_filter(x, sigma=sig, mode=mode, truncate=truncate)


# ----------------------------------------------------------------------------- noise


def gaussian_noise(images: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    """Additive Gaussian noise: ``clip(x/255 + N(0, c^2), 0, 1) * 255`` (float64).

    Reference: ``make_cifar_c.py::gaussian_noise``.
    """
    x = images / 255.0
    noise = np.stack([r.normal(size=x.shape[1:], scale=c) for r in rngs])
    return np.clip(x + noise, 0, 1) * 255


def shot_noise(images: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    """Poisson noise: ``clip(Poisson(c * x/255) / c, 0, 1) * 255`` (float64).

    Reference: ``make_cifar_c.py::shot_noise``.
    """
    x = images / 255.0
    counts = np.stack([r.poisson(xi * c) for r, xi in zip(rngs, x, strict=True)])
    return np.clip(counts / c, 0, 1) * 255


def impulse_noise(images: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    """Salt-and-pepper noise on a fraction ``c`` of the pixel *channels* (float64).

    ``skimage.util.random_noise(x/255, mode='s&p', amount=c)`` per image:
    each channel value is hit with probability ``c`` and set to 0 or 1 with
    equal odds. Reference: ``make_cifar_c.py::impulse_noise``.
    """
    from skimage.util import random_noise

    x = images / 255.0
    out = np.stack([random_noise(xi, mode="s&p", amount=c, rng=r) for r, xi in zip(rngs, x, strict=True)])
    return np.clip(out, 0, 1) * 255


def speckle_noise(images: np.ndarray, c: float, rngs: Rngs) -> np.ndarray:
    """Multiplicative noise: ``clip(x + x * N(0, c^2), 0, 1) * 255`` on x/255 (float64).

    Reference: ``make_cifar_c.py::speckle_noise``.
    """
    x = images / 255.0
    noise = np.stack([r.normal(size=x.shape[1:], scale=c) for r in rngs])
    return np.clip(x + x * noise, 0, 1) * 255


# ----------------------------------------------------------------------------- blur


def gaussian_blur(images: np.ndarray, c: float, rngs: Rngs | None = None) -> np.ndarray:
    """Gaussian blur with sigma ``c`` px (mode ``nearest``, truncate 4), float64.

    Reference: ``make_cifar_c.py::gaussian_blur`` (``skimage.filters.gaussian``).
    """
    x = _gaussian(images / 255.0, c, batched=True, channels=True)
    return np.clip(x, 0, 1) * 255


@functools.lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk kernel (float32, read-only).

    A normalized binary disk ``X^2 + Y^2 <= radius^2`` on a 17x17 grid (radius
    <= 8) smoothed by ``cv2.GaussianBlur`` with a 3x3 kernel of sigma
    ``alias_blur``. Reference: ``make_cifar_c.py::disk``.
    """
    cv2 = _cv2()
    if radius <= 8:
        L = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        L = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    X, Y = np.meshgrid(L, L)
    aliased = np.array((X**2 + Y**2) <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    k = cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur)
    k.setflags(write=False)
    return k


def defocus_blur(images: np.ndarray, c: tuple, rngs: Rngs | None = None) -> np.ndarray:
    """Defocus: each channel correlated with `disk_kernel` ``(radius, alias)`` (float64).

    ``cv2.filter2D`` (border ``BORDER_REFLECT_101``) per image and channel, as
    the reference. Reference: ``make_cifar_c.py::defocus_blur``.
    """
    cv2 = _cv2()
    kernel = disk_kernel(float(c[0]), float(c[1]))
    x = images / 255.0
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for d in range(3):
            out[i, :, :, d] = cv2.filter2D(x[i, :, :, d], -1, kernel)
    return np.clip(out, 0, 1) * 255


def glass_blur(images: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    """Glass blur: blur, locally shuffle pixels, blur again (float64).

    ``c = (sigma, delta, iterations)``. Reference:
    ``make_cifar_c.py::glass_blur``, whose loop is::

        x = np.uint8(gaussian(x / 255., sigma) * 255)
        for _ in range(iterations):
            for h in range(H - delta, delta, -1):
                for w in range(W - delta, delta, -1):
                    dx, dy = np.random.randint(-delta, delta, size=(2,))
                    x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]
        return clip(gaussian(x / 255., sigma), 0, 1) * 255

    Two facts make it vectorizable *exactly*:

    * The "swap" is a copy: the right-hand side holds NumPy *views*, so after
      ``x[h, w]`` is overwritten, ``x[h', w'] = view of x[h, w]`` writes the
      pixel's own (new) value back. Pixel (h, w) takes the value of
      ``(h + dy, w + dx)`` and the source is left unchanged.
    * ``randint(-delta, delta)`` excludes ``delta``: shifts are in
      ``[-delta, delta - 1]``. For delta = 1 (all CIFAR severities, the
      first three Tiny-ImageNet ones) every source is up/left of its target
      (or the target itself), i.e. not yet visited in the reverse raster
      order, so one iteration is a single parallel gather from the image as
      it was before the iteration.

    For delta >= 2 a source may already have been overwritten; the exact
    sequential semantics are then resolved on an index map (a Python loop
    over pixel positions, vectorized over the batch).

    Random draws per image and iteration: one ``integers(-delta, delta,
    size=(P, 2))`` call giving ``(dx, dy)`` for the P positions in loop
    order (the reference draws them two at a time from the global stream).
    """
    sigma, delta, iterations = float(c[0]), int(c[1]), int(c[2])
    n, h_size, w_size, _ = images.shape
    x = np.uint8(_gaussian(images / 255.0, sigma, batched=True, channels=True) * 255)
    hs = np.arange(h_size - delta, delta, -1)
    ws = np.arange(w_size - delta, delta, -1)
    ph = np.repeat(hs, ws.size)  # positions in loop order
    pw = np.tile(ws, hs.size)
    p = ph.size
    batch = np.arange(n)[:, None]
    for _ in range(iterations):
        shifts = np.stack([r.integers(-delta, delta, size=(p, 2)) for r in rngs]).reshape(n, p, 2)
        dx, dy = shifts[..., 0], shifts[..., 1]
        if delta == 1:
            src = x.copy()
            x[batch, ph[None], pw[None]] = src[batch, ph[None] + dy, pw[None] + dx]
        else:
            flat = x.reshape(n, h_size * w_size, 3)
            idx = np.broadcast_to(np.arange(h_size * w_size), (n, h_size * w_size)).copy()
            tgt = ph * w_size + pw
            srcs = (ph[None] + dy) * w_size + (pw[None] + dx)
            rows = np.arange(n)
            for j in range(p):
                idx[:, tgt[j]] = idx[rows, srcs[:, j]]
            x = np.take_along_axis(flat, idx[..., None], axis=1).reshape(x.shape)
    out = _gaussian(x / 255.0, sigma, batched=True, channels=True)
    return np.clip(out, 0, 1) * 255


def im_motion_blur(images: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's ``MotionBlurImage`` for 8-bit images, re-implemented in NumPy.

    A one-sided line kernel: ``width = 2 * ceil(radius) + 1`` taps with
    weights ``exp(-i^2 / (2 sigma^2))`` (i = 0..width-1, normalized); tap i
    reads the pixel at offset ``(ceil(i sin(a) - 0.5), ceil(i cos(a) - 0.5))``
    (rows, cols) from the output pixel, with edge-replicating borders (IM's
    default virtual pixels). The result is quantized as ImageMagick 6 Q16
    writing an 8-bit PNG: ``q = round(257 * sum)`` (the Q16 quantum), then
    ``out = q // 257``.

    This substitutes for the reference's Wand/ImageMagick call (the same
    algorithm as ImageMagick 6's ``effect.c``; cf. the NumPy substitute of
    the ``imagecorruptions`` package, which does not model the quantization).
    Checked against ImageMagick 6.9.11-60 Q16 through Wand (RGB and
    grayscale, radii 6-14, angles over the full circle): bit-identical. The
    2018 generator ran an older ImageMagick 6 build; Q8 or HDRI builds would
    quantize differently.

    Args:
      images: uint8 ``[N, H, W]`` or ``[N, H, W, C]``.
      radius, sigma: IM's motion-blur radius and sigma, in px.
      angles: float ``[N]`` angles in degrees, one per image.

    Returns:
      uint8 array of the shape of `images`.
    """
    squeeze = images.ndim == 3
    x = images[..., None] if squeeze else images
    n, h, w, _ = x.shape
    width = int(2 * math.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(i * i) / (2.0 * sigma * sigma)) / (math.sqrt(2.0 * math.pi) * sigma)
    kernel = kernel / kernel.sum()
    rad = np.deg2rad(np.asarray(angles, dtype=np.float64))
    px = width * np.sin(rad)  # IM: point.x
    py = width * np.cos(rad)  # IM: point.y
    hyp = np.hypot(px, py)
    off_c = np.ceil(i[None, :] * py[:, None] / hyp[:, None] - 0.5).astype(np.int64)  # IM offset.x
    off_r = np.ceil(i[None, :] * px[:, None] / hyp[:, None] - 0.5).astype(np.int64)  # IM offset.y
    xq = x.astype(np.float64) * 257.0  # 8-bit -> Q16 quantum
    acc = np.zeros(x.shape, dtype=np.float64)
    b = np.arange(n)[:, None, None]
    rows, cols = np.arange(h), np.arange(w)
    for j in range(width):
        r = np.clip(rows[None, :] + off_r[:, j, None], 0, h - 1)
        cc = np.clip(cols[None, :] + off_c[:, j, None], 0, w - 1)
        acc += kernel[j] * xq[b, r[:, :, None], cc[:, None, :]]
    q = np.floor(acc + 0.5)  # ClampToQuantum: round to the Q16 quantum
    out = (q // 257.0).clip(0, 255).astype(np.uint8)  # 8-bit PNG export: truncating quantum / 257
    return out[..., 0] if squeeze else out


def motion_blur(images: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    """Motion blur along a random angle ``U(-45, 45)`` degrees (uint8).

    ``c = (radius, sigma)``. Reference: ``make_cifar_c.py::motion_blur``,
    which calls ImageMagick through Wand; here `im_motion_blur` (a NumPy
    line-kernel re-implementation of it) is used instead. Draws: one
    ``uniform(-45, 45)`` per image.
    """
    angles = np.array([r.uniform(-45, 45) for r in rngs])
    return im_motion_blur(images, float(c[0]), float(c[1]), angles)


def _clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """Reference ``clipped_zoom`` on a batch ``[N, h, h, C]`` (centre crop, zoom, trim).

    The reference zooms one ``[ch, ch, C]`` crop with factors ``(z, z, 1)``.
    Here the batch is moved into that last, unzoomed axis (``[ch, ch, N*C]``):
    along it every output sits exactly on an input sample (linear weights 1
    and 0), so each image gets the same values as on its own, in one call.
    """
    n, h, _, nc = img.shape
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    crop = np.ascontiguousarray(img[:, top : top + ch, top : top + ch].transpose(1, 2, 0, 3)).reshape(ch, ch, n * nc)
    out = ndimage.zoom(crop, (zoom_factor, zoom_factor, 1), order=1)
    out = out.reshape(out.shape[0], out.shape[1], n, nc).transpose(2, 0, 1, 3)
    trim_top = (out.shape[1] - h) // 2
    return out[:, trim_top : trim_top + h, trim_top : trim_top + h]


def zoom_blur(images: np.ndarray, c: float, rngs: Rngs | None = None) -> np.ndarray:
    """Zoom blur: mean of the image and its centre zooms by ``np.arange(1, c, 0.01)`` (float32).

    Zooms are ``scipy.ndimage.zoom(order=1)`` of a centre crop, trimmed back
    to H x W. Reference: ``make_cifar_c.py::zoom_blur`` / ``clipped_zoom``.
    """
    factors = np.arange(1, c, 0.01)
    x = (images / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for z in factors:
        out += _clipped_zoom(x, z)
    x = (x + out) / (len(factors) + 1)
    return np.clip(x, 0, 1) * 255


# ----------------------------------------------------------------------------- weather


def snow(images: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    """Snow: a thresholded, zoomed, motion-blurred noise layer added twice (float64).

    ``c = (mean, std, zoom, threshold, blur radius, blur sigma, blend)``.
    Reference: ``make_cifar_c.py::snow``; its ImageMagick motion blur of the
    8-bit snow layer (angle ``U(-135, -45)``) is `im_motion_blur`. Draws per
    image: ``normal(mean, std, (H, W))`` then the angle.
    """
    cv2 = _cv2()
    n, h, w, _ = images.shape
    x = np.array(images, dtype=np.float32) / 255.0
    layer = np.stack([r.normal(size=(h, w), loc=c[0], scale=c[1]) for r in rngs])
    angles = np.array([r.uniform(-135, -45) for r in rngs])
    layer = _clipped_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer8 = (np.clip(layer[..., 0], 0, 1) * 255).astype(np.uint8)  # PIL 'L' image, PNG round trip
    layer = im_motion_blur(layer8, float(c[4]), float(c[5]), angles) / 255.0
    layer = layer[..., np.newaxis]
    gray = np.stack([cv2.cvtColor(xi, cv2.COLOR_RGB2GRAY) for xi in x])[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2, axes=(1, 2)), 0, 1) * 255


def frost_texture_path(i: int) -> str:
    """Path of frost texture ``FROST_FILES[i]`` inside the installed ``imagecorruptions`` package.

    The six frost photographs are those of Hendrycks & Dietterich's
    ``ImageNet-C/create_c/`` (frost1.png .. frost6.jpg), as redistributed by
    the ``imagecorruptions`` PyPI package (bethgelab, Apache-2.0) in its
    ``imagecorruptions/frost/`` folder. They are read from there (found
    without importing that package) and not copied into rwsjax.

    Raises:
      ModuleNotFoundError: ``imagecorruptions`` is not installed.
      FileNotFoundError: the texture is missing from it.
    """
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The frost corruption needs the frost textures shipped by the 'imagecorruptions' "
            "package: pip install imagecorruptions",
            name="imagecorruptions",
        )
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "frost", FROST_FILES[i])
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"frost texture {FROST_FILES[i]} not found in {list(spec.submodule_search_locations)}")


@functools.lru_cache(maxsize=16)
def frost_texture(i: int, scale: float) -> np.ndarray:
    """Frost texture ``i`` as the reference loads it: ``cv2.imread`` (BGR uint8) resized by `scale`.

    ``cv2.resize(img, (0, 0), fx=scale, fy=scale)`` (bilinear). Read-only,
    cached.
    """
    cv2 = _cv2()
    img = cv2.imread(frost_texture_path(i))
    if img is None:
        raise OSError(f"could not decode frost texture {frost_texture_path(i)}")
    out = cv2.resize(img, (0, 0), fx=scale, fy=scale)
    out.setflags(write=False)
    return out


def frost(images: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    """Frost: ``clip(c0 * x + c1 * crop, 0, 255)`` with a random crop of a frost photo (float64).

    The texture is one of the first five frost images (``integers(5)``),
    resized by `FROST_SCALE` (0.2 at 32 px, 0.3 at 64 px), cropped at a
    random H x W window (start ``integers(0, size - H)``, as the reference's
    exclusive bound) and converted BGR -> RGB. Texture files: see
    `frost_texture_path`. Reference: ``make_cifar_c.py::frost``.
    """
    n, h, w, _ = images.shape
    scale = FROST_SCALE[h]
    crops = np.empty(images.shape, dtype=np.uint8)
    for k, r in enumerate(rngs):
        idx = int(r.integers(5))
        tex = frost_texture(idx, scale)
        x0 = int(r.integers(0, tex.shape[0] - h))
        y0 = int(r.integers(0, tex.shape[1] - w))
        crops[k] = tex[x0 : x0 + h, y0 : y0 + w][..., [2, 1, 0]]
    return np.clip(c[0] * images + c[1] * crops, 0, 255)


def plasma_fractal(rngs: Rngs, mapsize: int = 32, wibbledecay: float = 3) -> np.ndarray:
    """Diamond-square plasma fractals in [0, 1], one per generator: float64 ``[N, mapsize, mapsize]``.

    Reference: ``make_cifar_c.py::plasma_fractal`` (a modification of
    FLHerne/mapgen's ``diamondsquare.py``), vectorized over the batch; each
    map draws ``uniform(-wibble, wibble, shape)`` from its own generator in
    the reference's order. `mapsize` must be a power of two.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    n = len(rngs)
    m = np.zeros((n, mapsize, mapsize), dtype=np.float64)
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        noise = np.stack([r.uniform(-wibble, wibble, array.shape[1:]) for r in rngs])
        return array / 4 + wibble * noise

    while stepsize >= 2:
        half = stepsize // 2
        # fill squares
        cornerref = m[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=1)
        squareaccum += np.roll(squareaccum, shift=-1, axis=2)
        m[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        # fill diamonds
        drgrid = m[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = m[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        ldrsum = drgrid + np.roll(drgrid, 1, axis=1)
        lulsum = ulgrid + np.roll(ulgrid, -1, axis=2)
        m[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ldrsum + lulsum)
        tdrsum = drgrid + np.roll(drgrid, 1, axis=2)
        tulsum = ulgrid + np.roll(ulgrid, -1, axis=1)
        m[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tdrsum + tulsum)
        stepsize //= 2
        wibble /= wibbledecay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def fog(images: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    """Fog: add ``c0 *`` a plasma fractal (decay ``c1``), rescale by max/(max + c0) (float64).

    Reference: ``make_cifar_c.py::fog``; the map side is `PLASMA_MAPSIZE`
    (32 / 64), cropped to H x W.
    """
    n, h, w, _ = images.shape
    x = images / 255.0
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    plasma = plasma_fractal(rngs, mapsize=PLASMA_MAPSIZE[h], wibbledecay=c[1])
    x += c[0] * plasma[:, :h, :w, np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


# ----------------------------------------------------------------------------- digital


def brightness(images: np.ndarray, c: float, rngs: Rngs | None = None) -> np.ndarray:
    """Brightness: ``V += c`` (clipped to [0, 1]) in HSV (``skimage.color``), float64.

    Reference: ``make_cifar_c.py::brightness``.
    """
    from skimage import color

    x = color.rgb2hsv(images / 255.0)
    x[..., 2] = np.clip(x[..., 2] + c, 0, 1)
    x = color.hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


def saturate(images: np.ndarray, c: tuple, rngs: Rngs | None = None) -> np.ndarray:
    """Saturation change: ``S = clip(S * c0 + c1, 0, 1)`` in HSV, float64.

    Reference: ``make_cifar_c.py::saturate``.
    """
    from skimage import color

    x = color.rgb2hsv(images / 255.0)
    x[..., 1] = np.clip(x[..., 1] * c[0] + c[1], 0, 1)
    x = color.hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


def contrast(images: np.ndarray, c: float, rngs: Rngs | None = None) -> np.ndarray:
    """Contrast: ``(x - mean) * c + mean`` with per-image, per-channel means on x/255 (float64).

    Reference: ``make_cifar_c.py::contrast``.
    """
    x = images / 255.0
    means = np.mean(x, axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(images: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    """Elastic transform: random affine warp, then a smooth random displacement field (float32).

    ``c = (alpha, sigma, affine)`` as fractions of the image size (the
    reference multiplies them by IMSIZE = 32 / 64). Steps per image: the
    three points ``centre +- size//3`` are jittered by ``uniform(-affine,
    affine)`` px and ``cv2.warpAffine`` (bilinear, ``BORDER_REFLECT_101``)
    applied; then ``dx, dy = gaussian(uniform(-1, 1, (H, W)), sigma,
    mode='reflect', truncate=3) * alpha`` and ``map_coordinates(order=1,
    mode='reflect')``. Reference: ``make_cifar_c.py::elastic_transform``
    (itself after erniejunior's gist).
    """
    cv2 = _cv2()
    from scipy.ndimage import map_coordinates

    n, h, w, ch = images.shape
    imsize = h
    cc = (imsize * c[0], imsize * c[1], imsize * c[2])
    out = np.empty(images.shape, dtype=np.float32)
    shape = (h, w, ch)
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32(
        [
            center_square + square_size,
            [center_square[0] + square_size, center_square[1] - square_size],
            center_square - square_size,
        ]
    )
    gx, gy, gz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    for k, r in enumerate(rngs):
        image = np.array(images[k], dtype=np.float32) / 255.0
        pts2 = pts1 + r.uniform(-cc[2], cc[2], size=pts1.shape).astype(np.float32)
        M = cv2.getAffineTransform(pts1, pts2)
        image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
        dx = (_gaussian(r.uniform(-1, 1, size=shape_size), cc[1], batched=False, channels=False,
                        mode="reflect", truncate=3) * cc[0]).astype(np.float32)
        dy = (_gaussian(r.uniform(-1, 1, size=shape_size), cc[1], batched=False, channels=False,
                        mode="reflect", truncate=3) * cc[0]).astype(np.float32)
        dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
        indices = np.reshape(gy + dy, (-1, 1)), np.reshape(gx + dx, (-1, 1)), np.reshape(gz, (-1, 1))
        out[k] = map_coordinates(image, indices, order=1, mode="reflect").reshape(shape)
    return np.clip(out, 0, 1) * 255


def pixelate(images: np.ndarray, c: float, rngs: Rngs | None = None) -> np.ndarray:
    """Pixelate: Pillow BOX resize to ``int(size * c)`` and back (uint8).

    Reference: ``make_cifar_c.py::pixelate``.
    """
    from PIL import Image

    n, h, w, _ = images.shape
    small = (int(w * c), int(h * c))
    out = np.empty_like(images)
    for k in range(n):
        im = Image.fromarray(images[k]).resize(small, Image.BOX)
        out[k] = np.asarray(im.resize((w, h), Image.BOX))
    return out


def jpeg_compression(images: np.ndarray, c: int, rngs: Rngs | None = None) -> np.ndarray:
    """JPEG round trip through Pillow at quality ``c`` (Pillow's other defaults), uint8.

    Reference: ``make_cifar_c.py::jpeg_compression``. Bytes can differ
    between libjpeg builds (Pillow's bundled libjpeg-turbo here).
    """
    from PIL import Image

    out = np.empty_like(images)
    for k in range(images.shape[0]):
        buf = io.BytesIO()
        Image.fromarray(images[k]).save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        with Image.open(buf) as im:
            out[k] = np.asarray(im.convert("RGB"))
    return out


def spatter(images: np.ndarray, c: tuple, rngs: Rngs) -> np.ndarray:
    """Spatter: water drops (mode 0) or mud (mode 1) from a thresholded smoothed noise layer (float32).

    ``c = (loc, scale, sigma, threshold, intensity, mode)``. Reference:
    ``make_cifar_c.py::spatter`` (OpenCV Canny / distance transform /
    equalizeHist / emboss kernel for water; Gaussian-smoothed mask and mud
    brown (63, 42, 20) for mud). Draws: one ``normal(loc, scale, (H, W))``
    per image.

    Deviation: in water mode, when no pixel of the liquid layer passes the
    threshold the reference computes 0/0 (NaN) and its uint8 cast gives an
    undefined (in practice black) image; here that image is left unchanged
    (no drops). This is rare (the layer is smoothed noise around ``loc``).
    """
    cv2 = _cv2()
    n, h, w, _ = images.shape
    out = np.empty(images.shape, dtype=np.float32)
    for k, r in enumerate(rngs):
        x = np.array(images[k], dtype=np.float32) / 255.0
        liquid = r.normal(size=x.shape[:2], loc=c[0], scale=c[1])
        liquid = _gaussian(liquid, c[2], batched=False, channels=False)
        liquid[liquid < c[3]] = 0
        if c[5] == 0:
            liquid = (liquid * 255).astype(np.uint8)
            dist = 255 - cv2.Canny(liquid, 50, 150)
            dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
            dist = cv2.equalizeHist(dist)
            ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)  # exact small ints
            dist = cv2.filter2D(dist, cv2.CV_8U, ker)
            dist = cv2.blur(dist, (3, 3)).astype(np.float32)
            m = cv2.cvtColor(liquid * dist, cv2.COLOR_GRAY2BGRA)
            mmax = np.max(m, axis=(0, 1))
            if not np.all(mmax > 0):  # all dry: reference 0/0 -> NaN
                out[k] = x * 255
                continue
            m /= mmax
            m *= c[4]
            color = np.concatenate(
                (
                    175 / 255.0 * np.ones_like(m[..., :1]),
                    238 / 255.0 * np.ones_like(m[..., :1]),
                    238 / 255.0 * np.ones_like(m[..., :1]),
                ),
                axis=2,
            )
            color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
            xb = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
            out[k] = cv2.cvtColor(np.clip(xb + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
        else:
            m = np.where(liquid > c[3], 1, 0)
            m = _gaussian(m.astype(np.float32), c[4], batched=False, channels=False)
            m[m < 0.8] = 0
            color = np.concatenate(
                (
                    63 / 255.0 * np.ones_like(x[..., :1]),
                    42 / 255.0 * np.ones_like(x[..., :1]),
                    20 / 255.0 * np.ones_like(x[..., :1]),
                ),
                axis=2,
            )
            color *= m[..., np.newaxis]
            x *= 1 - m[..., np.newaxis]
            out[k] = np.clip(x + color, 0, 1) * 255
    return out


#: name -> batched op, in `CORRUPTIONS` order.
OPS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "spatter": spatter,
    "saturate": saturate,
}
