"""Weakly supervised localisation from a saliency map (Simonyan et al. 2013, section 6).

Pixels whose saliency is above the 95% quantile seed the foreground, those below the 30% quantile the
background; OpenCV's GrabCut (a GraphCut colour segmentation, initialised from that mask) labels the rest
from the colour models; the box of the largest connected foreground component is the object's box.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Localisation:
    box: tuple[float, float, float, float] | None  # x1, y1, x2, y2 in image pixels (x2, y2 exclusive)
    mask: np.ndarray                               # (H, W) bool, the largest foreground component


def seeds(saliency_map: np.ndarray, fg_quantile: float = 0.95, bg_quantile: float = 0.30) -> np.ndarray:
    """GrabCut's initial mask: sure foreground above ``fg_quantile``, sure background below
    ``bg_quantile``, the rest probable background."""
    import cv2

    m = np.asarray(saliency_map, np.float64)
    hi, lo = np.quantile(m, fg_quantile), np.quantile(m, bg_quantile)
    mask = np.full(m.shape, cv2.GC_PR_BGD, np.uint8)
    mask[m <= lo] = cv2.GC_BGD
    mask[m >= hi] = cv2.GC_FGD
    return mask


def localize(image: np.ndarray, saliency_map: np.ndarray, fg_quantile: float = 0.95, bg_quantile: float = 0.30,
             iterations: int = 5) -> Localisation:
    """The box of the object that the map points at, in the image's pixels.

    Args:
      image: RGB (H, W, 3), floats in [0, 1] or uint8.
      saliency_map: (H, W), higher = more salient (e.g. the max-abs gradient map).
    """
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if img.shape[:2] != np.shape(saliency_map):
        raise ValueError(f"image {img.shape[:2]} and saliency map {np.shape(saliency_map)} differ in size; give the "
                         "map in the image's pixels (saliency with preprocess=True, the default).")
    mask = seeds(saliency_map, fg_quantile, bg_quantile)
    if not (mask == cv2.GC_FGD).any() or not (mask == cv2.GC_BGD).any():
        return Localisation(box=None, mask=np.zeros(mask.shape, bool))
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(img[..., ::-1]), mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count <= 1:
        return Localisation(box=None, mask=np.zeros(fg.shape, bool))
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[largest, :4])
    return Localisation(box=(float(x), float(y), float(x + w), float(y + h)), mask=labels == largest)
