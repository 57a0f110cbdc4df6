"""Between images (RGB in [0, 1]) and a model's input space, following the model's spec.

``preprocess`` reproduces torchvision's tensor transforms: for classifiers, resize of the shorter side
(bilinear, antialiased) and a centre crop, then ``(x - mean) / std``; for detectors, a squash-resize
without antialiasing. ``to_image`` is the inverse of the normalisation, used to display an image that
was optimised in the model's input space.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.spec import ModelSpec


def resized_shape(h: int, w: int, shorter: int) -> tuple[int, int]:
    """Output (height, width) when the shorter side becomes ``shorter`` (torchvision's rule: int())."""
    if h <= w:
        return shorter, int(shorter * w / h)
    return int(shorter * h / w), shorter


def crop_offsets(h: int, w: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """Top-left corner of torchvision's centre crop (Python's round, so .5 goes to even)."""
    return int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))


def _check_images(images) -> jax.Array:
    if isinstance(images, jax.core.Tracer):
        x = images
    else:
        x = np.asarray(images)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        elif not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"images must be float RGB in [0, 1] or uint8, got dtype {x.dtype}")
        elif x.size and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise ValueError(
                f"images must be RGB in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]; "
                "divide 8-bit pixel values by 255."
            )
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(
            f"images must be RGB arrays shaped (H, W, 3) or (N, H, W, 3), got shape {tuple(x.shape)}; "
            "convert grayscale or RGBA images to RGB first."
        )
    x = jnp.asarray(x)
    return x if x.dtype == jnp.float64 else x.astype(jnp.float32)


def normalize(spec: ModelSpec, x: jax.Array) -> jax.Array:
    """RGB [0, 1] (any spatial size) -> the model's value range, channel order and mean/std."""
    lo, hi = spec.value_range
    x = lo + x * (hi - lo)
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    mean = jnp.asarray(spec.mean, x.dtype)
    std = jnp.asarray(spec.std, x.dtype)
    return (x - mean) / std


def to_image(spec: ModelSpec, x: jax.Array) -> jax.Array:
    """Inverse of ``normalize``: model input -> RGB in [0, 1] (not clipped)."""
    lo, hi = spec.value_range
    x = jnp.asarray(x)
    x = x * jnp.asarray(spec.std, x.dtype) + jnp.asarray(spec.mean, x.dtype)
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    return (x - lo) / (hi - lo)


def _resize(x: jax.Array, h: int, w: int, antialias: bool) -> jax.Array:
    if x.shape[-3:-1] == (h, w):
        return x
    shape = x.shape[:-3] + (h, w, x.shape[-1])
    return jax.image.resize(x, shape, method="bilinear", antialias=antialias)


def resize_to_input(spec: ModelSpec, x: jax.Array) -> jax.Array:
    """RGB image(s) of any size -> the spatial size the model expects, as torchvision would."""
    th, tw = spec.input_size
    h, w = x.shape[-3:-1]
    if spec.resize == "squash":
        return _resize(x, th, tw, spec.antialias)
    rh, rw = resized_shape(h, w, spec.resize_size)
    x = _resize(x, rh, rw, spec.antialias)
    if rh < th or rw < tw:
        raise ValueError(f"resize_size {spec.resize_size} is smaller than the crop {spec.input_size}")
    top, left = crop_offsets(rh, rw, th, tw)
    return x[..., top:top + th, left:left + tw, :]


def preprocess(spec: ModelSpec, images: jax.Array | np.ndarray | Sequence[np.ndarray]) -> jax.Array:
    """RGB images in [0, 1] (or uint8), NHWC or HWC, any size -> the model's normalised input.

    A list of images of different sizes is processed image by image and stacked.
    """
    if isinstance(images, (list, tuple)):
        return jnp.stack([preprocess(spec, im) for im in images])
    x = _check_images(images)
    return normalize(spec, resize_to_input(spec, x))
