"""SSD's matcher and MultiBox loss, jittable with padded, fixed-size targets and differentiable in the image.

Targets are padded to a fixed number of boxes ``M`` per image with a validity mask, so that one compiled
function serves any number of ground-truth boxes (zero included) and ``vmap`` runs over target sets.
Boxes are xyxy pixels of the network input (300x300 for SSD300).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxvis import boxes as bx


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The MultiBox criterion's settings.

    Defaults are torchvision's SSD: positives at IoU >= 0.5 plus each box's best anchor, 3 hard negatives
    per positive, both terms divided by max(1, positives in the batch). ``amdegroot()`` gives
    amdegroot/ssd.pytorch's variant: negatives capped at anchors - 1, positives and negatives taken as a
    set (torchvision may count an anchor twice when 3 x positives exceeds the negatives), and divided by
    the number of positives without the max(1, .) guard.
    """

    iou_threshold: float = 0.5
    neg_pos_ratio: int = 3
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    cap_negatives: bool = False
    union: bool = False
    guard_normaliser: bool = True

    @classmethod
    def amdegroot(cls) -> "LossConfig":
        return cls(cap_negatives=True, union=True, guard_normaliser=False)


def match(gt_boxes: jax.Array, gt_valid: jax.Array, anchors: jax.Array, iou_threshold: float = 0.5) -> jax.Array:
    """Index of the ground-truth box matched to each anchor, or -1 (background); shape (A,).

    An anchor matches the box it overlaps most when that IoU >= ``iou_threshold``; then each valid box's
    best anchor is forced to match it (a later box wins when two share a best anchor), as torchvision's
    SSDMatcher does.
    """
    overlaps = bx.iou(gt_boxes, anchors)                                   # (M, A)
    overlaps = jnp.where(gt_valid[:, None], overlaps, -1.0)
    best_gt = jnp.argmax(overlaps, axis=0)
    best_iou = jnp.max(overlaps, axis=0)
    matches = jnp.where(best_iou >= iou_threshold, best_gt, -1)
    best_anchor = jnp.argmax(overlaps, axis=1)                             # (M,)
    m = gt_boxes.shape[0]
    hits = (best_anchor[:, None] == jnp.arange(anchors.shape[0])[None, :]) & gt_valid[:, None]
    forced = jnp.max(jnp.where(hits, jnp.arange(m)[:, None], -1), axis=0)  # latest box wins
    return jnp.where(forced >= 0, forced, matches)


def smooth_l1(x: jax.Array, beta: float = 1.0) -> jax.Array:
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def _first_ranks(values: jax.Array, k) -> jax.Array:
    """Whether each entry is among the ``k`` largest, ties going to the lower index: the first ``k`` of a
    stable descending sort, as torchvision's two argsorts select them, from one sort of the values and
    a running count of the entries tied at the threshold."""
    n = values.shape[0]
    threshold = -jnp.sort(-values)[jnp.clip(k - 1, 0, n - 1)]
    above = values > threshold
    tied = values == threshold
    return (above | (tied & (jnp.cumsum(tied) <= k - jnp.sum(above)))) & (k > 0)


def _image_terms(cls_logits, bbox_regression, anchors, gt_boxes, gt_labels, gt_valid, cfg: LossConfig):
    """Per-image sums: (box loss, classification loss, number of positives)."""
    matches = match(gt_boxes, gt_valid, anchors, cfg.iou_threshold)
    positive = matches >= 0
    idx = jnp.maximum(matches, 0)
    target = bx.encode(gt_boxes[idx], anchors, cfg.box_weights)
    # Where the anchor is not positive the target is meaningless (and may be inf); mask before the loss.
    diff = jnp.where(positive[:, None], bbox_regression - jnp.where(positive[:, None], target, 0.0), 0.0)
    box_loss = jnp.sum(smooth_l1(diff))
    labels = jnp.where(positive, gt_labels[idx], 0)
    log_p = jax.nn.log_softmax(cls_logits, axis=-1)
    ce = -jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    foreground = labels > 0
    num_pos = jnp.sum(foreground)
    num_neg = cfg.neg_pos_ratio * num_pos
    if cfg.cap_negatives:
        num_neg = jnp.minimum(num_neg, anchors.shape[0] - 1)
    # Hard negatives: rank anchors by loss with positives last, keep the first num_neg ranks.
    ranking = jax.lax.stop_gradient(jnp.where(foreground, -jnp.inf, ce))
    hard = _first_ranks(ranking, num_neg)
    if cfg.union:
        cls_loss = jnp.sum(jnp.where(foreground | hard, ce, 0.0))
    else:
        cls_loss = jnp.sum(jnp.where(foreground, ce, 0.0)) + jnp.sum(jnp.where(hard, ce, 0.0))
    return box_loss, cls_loss, jnp.sum(positive)


def multibox_loss(cls_logits: jax.Array, bbox_regression: jax.Array, anchors: jax.Array,
                  gt_boxes: jax.Array, gt_labels: jax.Array, gt_valid: jax.Array,
                  cfg: LossConfig = LossConfig()) -> dict[str, jax.Array]:
    """The MultiBox loss of a batch.

    Args:
      cls_logits: (B, A, K); bbox_regression: (B, A, 4); anchors: (A, 4) xyxy.
      gt_boxes: (B, M, 4) xyxy in the network input's pixels; gt_labels: (B, M) int class ids (> 0);
      gt_valid: (B, M) bool, False for padding.
    Returns:
      ``bbox_regression`` and ``classification`` (each divided by the batch's positives) and ``total``.
    """
    box, cls, pos = jax.vmap(
        lambda c, r, b, l, v: _image_terms(c, r, anchors, b, l, v, cfg))(
        cls_logits, bbox_regression, gt_boxes, gt_labels, gt_valid)
    total_pos = jnp.sum(pos).astype(cls_logits.dtype)
    n = jnp.maximum(total_pos, 1.0) if cfg.guard_normaliser else total_pos
    out = {"bbox_regression": jnp.sum(box) / n, "classification": jnp.sum(cls) / n}
    out["total"] = out["bbox_regression"] + out["classification"]
    return out


def pad_targets(boxes_per_image, labels_per_image, max_boxes: int | None = None):
    """Lists of (m_i, 4) boxes and (m_i,) labels -> padded (B, M, 4), (B, M), validity mask (B, M)."""
    import numpy as np

    sizes = [len(b) for b in boxes_per_image]
    m = max(sizes + [1]) if max_boxes is None else max_boxes
    if max(sizes + [0]) > m:
        raise ValueError(f"an image has {max(sizes)} target boxes but max_boxes is {m}")
    n = len(boxes_per_image)
    out_boxes = np.zeros((n, m, 4), np.float32)
    out_boxes[..., 2:] = 1.0  # a harmless unit box in padded slots keeps encode finite
    out_labels = np.zeros((n, m), np.int32)
    valid = np.zeros((n, m), bool)
    for i, (b, lab) in enumerate(zip(boxes_per_image, labels_per_image)):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        out_boxes[i, :len(b)] = b
        out_labels[i, :len(b)] = np.asarray(lab, np.int32).reshape(-1)
        valid[i, :len(b)] = True
    return jnp.asarray(out_boxes), jnp.asarray(out_labels), jnp.asarray(valid)
