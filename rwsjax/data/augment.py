"""Standard CIFAR training augmentation as pure, jit-able JAX functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["crop_flip", "random_crop_flip"]


def _check(images, pad: int) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative Python int, got {pad!r}")
    h, w = images.shape[1:3]
    if pad >= h or pad >= w:
        raise ValueError(f"reflect padding needs pad < H and pad < W; got pad={pad}, H={h}, W={w}")


def crop_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array, pad: int = 4) -> jax.Array:
    """Deterministic per-example reflect-pad, crop and optional horizontal flip.

    Example ``i`` is reflect-padded by `pad` pixels on each side of H and W
    (``jnp.pad(..., mode="reflect")``, edge pixel not repeated), then the
    ``H x W`` window starting at row/column ``offsets[i]`` of the padded image
    is taken, then mirrored left-right if ``flips[i]``. ``offsets[i] == (pad,
    pad)`` with no flip returns the original image.

    Args:
      images: ``[B, H, W, C]`` (any dtype; float32 in practice).
      offsets: int ``[B, 2]`` crop corners (row, col), each in ``[0, 2*pad]``.
      flips: bool ``[B]``.
      pad: static Python int, ``0 <= pad < min(H, W)``.

    Returns:
      ``[B, H, W, C]``, same dtype as `images`.

    Raises:
      ValueError: if `images` is not rank 4 or `pad` is invalid.
    """
    _check(images, pad)
    _, h, w, c = images.shape

    def one(img, off, flip):
        padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        crop = jax.lax.dynamic_slice(padded, (off[0], off[1], 0), (h, w, c))
        return jnp.where(flip, crop[:, ::-1, :], crop)

    return jax.vmap(one)(images, jnp.asarray(offsets, jnp.int32), jnp.asarray(flips, bool))


def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = 4, *, flip_prob: float = 0.5) -> jax.Array:
    """Random crop after reflect padding, and random horizontal flip, per example.

    For each example independently: reflect-pad by `pad` pixels (H and W),
    take a random ``H x W`` crop (offsets uniform in ``[0, 2*pad]``), and
    mirror it left-right with probability `flip_prob`. Pure function of
    `key` (same key and images -> same output); usable inside ``jax.jit``
    (`pad` must be static).

    Args:
      key: a JAX PRNG key (raw uint32[2] or typed).
      images: float32 ``[B, H, W, C]`` (e.g. from `batching.to_float`).
      pad: padding in pixels, static Python int in ``[0, min(H, W))``.
      flip_prob: probability of a horizontal flip (keyword only).

    Returns:
      ``[B, H, W, C]``, same dtype as `images`.

    Raises:
      ValueError: if `images` is not rank 4 or `pad` is invalid.
    """
    _check(images, pad)
    b = images.shape[0]
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (b, 2), 0, 2 * pad + 1, dtype=jnp.int32)
    flips = jax.random.bernoulli(k_flip, flip_prob, (b,))
    return crop_flip(images, offsets, flips, pad)
