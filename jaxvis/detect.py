"""SSD post-processing as a fixed-size, jittable function, with torchvision's rules.

Per image: softmax over classes; decode every default box and clip it to the input; per class (the
background excluded) keep scores above ``score_thresh`` and the ``topk_candidates`` best; NMS within each
class at ``nms_thresh``; the ``detections_per_img`` best of what remains, by descending score. Outputs
have a fixed number of rows and a ``valid`` mask instead of a varying length.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxvis import boxes as bx


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    topk_candidates: int = 400
    detections_per_img: int = 200
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    clamp_decode: bool = True


def postprocess(cls_logits: jax.Array, bbox_regression: jax.Array, anchors: jax.Array,
                input_size: tuple[int, int], cfg: PostprocessConfig = PostprocessConfig()) -> dict[str, jax.Array]:
    """One image's detections: ``boxes`` (D, 4) xyxy in input pixels, ``scores`` (D,), ``labels`` (D,)
    int32 class ids, ``valid`` (D,) bool, and ``anchor`` (D,) the default box behind each detection."""
    height, width = input_size
    scores = jax.nn.softmax(cls_logits, axis=-1)
    decoded = bx.clip_to_image(bx.decode(bbox_regression, anchors, cfg.box_weights, cfg.clamp_decode), height, width)
    per_class = scores[:, 1:].T                                              # (K-1, A)
    per_class = jnp.where(per_class > cfg.score_thresh, per_class, -jnp.inf)
    k = min(cfg.topk_candidates, anchors.shape[0])
    top_scores, top_idx = jax.lax.top_k(per_class, k)                        # (K-1, k), descending
    cand = decoded[top_idx]                                                  # (K-1, k, 4)
    keep = jax.vmap(bx.nms_sorted, in_axes=(0, 0, None))(cand, top_scores > -jnp.inf, cfg.nms_thresh)
    flat = jnp.where(keep, top_scores, -jnp.inf).reshape(-1)
    d = min(cfg.detections_per_img, flat.shape[0])
    det_scores, det_idx = jax.lax.top_k(flat, d)
    cls_idx, slot = det_idx // k, det_idx % k
    valid = det_scores > -jnp.inf
    return {
        "boxes": jnp.where(valid[:, None], cand[cls_idx, slot], 0.0),
        "scores": jnp.where(valid, det_scores, 0.0),
        "labels": jnp.where(valid, cls_idx + 1, 0).astype(jnp.int32),
        "valid": valid,
        "anchor": jnp.where(valid, top_idx[cls_idx, slot], -1).astype(jnp.int32),
    }
