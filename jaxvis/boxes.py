"""Boxes for detectors: default boxes (anchors), box coding, IoU and a fixed-size NMS, all jittable.

Boxes are ``(x1, y1, x2, y2)`` in pixels unless said otherwise. Default boxes are computed once, on the
host, in float64 and stored as float32, in the order the SSD heads emit their predictions: feature map,
then row, then column, then the box shapes of a location.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# torchvision's BoxCoder clamps dw, dh before exp() so that no box grows beyond 1000/16 of its anchor.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def box_shapes(aspect_ratios: Sequence[Sequence[float]], scales: Sequence[float]) -> list[np.ndarray]:
    """(width, height) pairs per feature map, relative to the image: (s_k, s_k), (s'_k, s'_k) with
    s'_k = sqrt(s_k s_{k+1}), then (s_k sqrt(ar), s_k / sqrt(ar)) and its transpose for each ratio."""
    if len(scales) != len(aspect_ratios) + 1:
        raise ValueError(f"need one more scale than feature maps: {len(scales)} scales for "
                         f"{len(aspect_ratios)} maps")
    out = []
    for k, ratios in enumerate(aspect_ratios):
        s, s_next = scales[k], scales[k + 1]
        pairs = [(s, s), (math.sqrt(s * s_next),) * 2]
        for ar in ratios:
            r = math.sqrt(ar)
            pairs += [(s * r, s / r), (s / r, s * r)]
        out.append(np.asarray(pairs, np.float64))
    return out


def default_boxes(feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int],
                  aspect_ratios: Sequence[Sequence[float]], scales: Sequence[float],
                  steps: Sequence[float] | None = None, clip: bool = True,
                  clip_centres: bool = False, dtype=np.float32) -> np.ndarray:
    """SSD default boxes, (A, 4) xyxy pixels of the network input (computed in float64).

    ``clip`` clamps the relative widths and heights to [0, 1] (torchvision's DefaultBoxGenerator);
    ``clip_centres`` clamps the relative centres too (amdegroot/ssd.pytorch's PriorBox clamps the whole
    (cx, cy, w, h) vector). Centres are ``(j + 0.5) / f_k`` with ``f_k = size / step_k``, or the
    feature map size when no steps are given.
    """
    height, width = image_size
    shapes = box_shapes(aspect_ratios, scales)
    if len(feature_sizes) != len(shapes):
        raise ValueError(f"{len(feature_sizes)} feature maps but anchor settings for {len(shapes)}")
    rows = []
    for k, ((fh, fw), wh) in enumerate(zip(feature_sizes, shapes)):
        if steps is not None:
            fy, fx = height / steps[k], width / steps[k]
        else:
            fy, fx = fh, fw
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) / fy, (np.arange(fw) + 0.5) / fx, indexing="ij")
        centres = np.stack([cx.ravel(), cy.ravel()], -1)                    # (H*W, 2)
        if clip:
            wh = np.clip(wh, 0.0, 1.0)
        centres = np.repeat(centres, len(wh), axis=0)                        # location-major
        sizes = np.tile(wh, (fh * fw, 1))
        if clip_centres:
            centres = np.clip(centres, 0.0, 1.0)
        rows.append(np.concatenate([centres, sizes], -1))
    cxcywh = np.concatenate(rows)
    scale = np.array([width, height])
    xyxy = np.concatenate([(cxcywh[:, :2] - cxcywh[:, 2:] / 2) * scale, (cxcywh[:, :2] + cxcywh[:, 2:] / 2) * scale], -1)
    return xyxy.astype(dtype)


def _centre_size(boxes: jax.Array) -> tuple[jax.Array, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(gt: jax.Array, anchors: jax.Array, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)) -> jax.Array:
    """Regression targets (dx, dy, dw, dh) of boxes ``gt`` relative to ``anchors`` (same shape)."""
    wx, wy, ww, wh = weights
    gx, gy, gw, gh = _centre_size(gt)
    ax, ay, aw, ah = _centre_size(anchors)
    return jnp.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                      ww * jnp.log(gw / aw), wh * jnp.log(gh / ah)], -1)


def decode(codes: jax.Array, anchors: jax.Array, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
           clamp: bool = True) -> jax.Array:
    """Boxes from regression outputs ``codes`` (..., 4) and ``anchors``; inverse of ``encode``.

    ``clamp`` limits dw, dh to log(1000/16) as torchvision does (amdegroot does not).
    """
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _centre_size(anchors)
    dx, dy = codes[..., 0] / wx, codes[..., 1] / wy
    dw, dh = codes[..., 2] / ww, codes[..., 3] / wh
    if clamp:
        dw = jnp.minimum(dw, BBOX_XFORM_CLIP)
        dh = jnp.minimum(dh, BBOX_XFORM_CLIP)
    cx, cy = dx * aw + ax, dy * ah + ay
    w, h = jnp.exp(dw) * aw, jnp.exp(dh) * ah
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def clip_to_image(boxes: jax.Array, height: float, width: float) -> jax.Array:
    x = jnp.clip(boxes[..., 0::2], 0, width)
    y = jnp.clip(boxes[..., 1::2], 0, height)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def area(boxes: jax.Array) -> jax.Array:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pairwise IoU, (M, 4) x (N, 4) -> (M, N)."""
    lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
    rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.clip(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def nms_sorted(boxes: jax.Array, valid: jax.Array, iou_threshold: float) -> jax.Array:
    """Greedy NMS over boxes already sorted by descending score; fixed size, jittable.

    Returns a bool mask: box i is kept when it is valid and no kept box before it overlaps it with
    IoU > ``iou_threshold``.
    """
    n = boxes.shape[0]
    overlaps = iou(boxes, boxes) > iou_threshold
    earlier = jnp.arange(n)

    def step(i, keep):
        suppressed = jnp.any(keep & overlaps[i] & (earlier < i))
        return keep.at[i].set(valid[i] & ~suppressed)

    return jax.lax.fori_loop(0, n, step, jnp.zeros(n, bool))
