"""Weakly supervised localisation from a saliency map (Simonyan et al. 2013, section 6).

Pixels whose saliency is above the 95% quantile seed the foreground, those below the 30% quantile the
background; OpenCV's GrabCut (a GraphCut colour segmentation, initialised from that mask) labels the rest
from the colour models; the box of the largest connected foreground component is the object's box.

GrabCut's time grows faster than the pixel count, and on flat or nearly flat images its graph cut can run
for minutes: an image of more than ``MAX_PIXELS`` pixels is segmented at a reduced size (image and map
averaged over blocks, the aspect ratio kept) with the mask and box scaled back to the image's pixels, and
the cut is given ``timeout`` seconds, after which the map gets no box and ``Localisation.note`` says why.
Images up to ``MAX_PIXELS`` are segmented as they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MAX_PIXELS = 256 * 256  # the largest image segmented at full resolution (a few seconds at worst, for noise)
TIMEOUT = 30.0          # seconds GrabCut may take on one map


@dataclasses.dataclass
class Localisation:
    box: tuple[float, float, float, float] | None  # x1, y1, x2, y2 in image pixels (x2, y2 exclusive)
    mask: np.ndarray                               # (H, W) bool, the largest foreground component
    note: str | None = None                        # why there is no box, when GrabCut did not finish


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
             iterations: int = 5, timeout: float | None = TIMEOUT) -> Localisation:
    """The box of the object that the map points at, in the image's pixels.

    Args:
      image: RGB (H, W, 3), floats in [0, 1] or uint8.
      saliency_map: (H, W), higher = more salient (e.g. the max-abs gradient map).
      timeout: seconds the graph cut may take (None: no limit); past them the box is None and ``note``
        says so. The cut runs in a thread of its own, which is left to finish in the background.

    Returns:
      The box and mask in the image's pixels; for an image of more than ``MAX_PIXELS`` pixels they are
      found at a reduced size and scaled back (the box to whole pixels that contain it).
    """
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if img.shape[:2] != np.shape(saliency_map):
        raise ValueError(f"image {img.shape[:2]} and saliency map {np.shape(saliency_map)} differ in size; give the "
                         "map in the image's pixels (saliency with preprocess=True, the default).")
    h, w = img.shape[:2]
    scale = min(1.0, float(np.sqrt(MAX_PIXELS / (h * w))))
    m = np.asarray(saliency_map)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 sizes are (width, height)
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(m.astype(np.float64), size, interpolation=cv2.INTER_AREA)
    found = _segment(img, m, fg_quantile, bg_quantile, iterations, timeout)
    if scale == 1.0 or found.box is None:
        return found if found.box is not None else Localisation(None, np.zeros((h, w), bool), found.note)
    sy, sx = h / img.shape[0], w / img.shape[1]
    x1, y1, x2, y2 = found.box
    box = (float(np.floor(x1 * sx)), float(np.floor(y1 * sy)), float(min(w, np.ceil(x2 * sx))),
           float(min(h, np.ceil(y2 * sy))))
    mask = cv2.resize(found.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return Localisation(box=box, mask=mask)


def _segment(img: np.ndarray, saliency_map: np.ndarray, fg_quantile: float, bg_quantile: float,
             iterations: int, timeout: float | None) -> Localisation:
    import cv2

    mask = seeds(saliency_map, fg_quantile, bg_quantile)
    if not (mask == cv2.GC_FGD).any() or not (mask == cv2.GC_BGD).any():
        return Localisation(box=None, mask=np.zeros(mask.shape, bool))
    mask = _grabcut(np.ascontiguousarray(img[..., ::-1]), mask, iterations, timeout)
    if mask is None:
        return Localisation(None, np.zeros(img.shape[:2], bool),
                            f"GrabCut did not finish within {timeout:g} s on this {img.shape[1]}x{img.shape[0]} map "
                            "(flat or nearly flat images stall it); no box was derived")
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count <= 1:
        return Localisation(box=None, mask=np.zeros(fg.shape, bool))
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[largest, :4])
    return Localisation(box=(float(x), float(y), float(x + w), float(y + h)), mask=labels == largest)


def _grabcut(bgr: np.ndarray, mask: np.ndarray, iterations: int, timeout: float | None) -> np.ndarray | None:
    """GrabCut's final mask from the initial one, or None when it takes more than ``timeout`` seconds. OpenCV
    releases the GIL while it cuts, so the call runs in a daemon thread that is waited for."""
    import threading

    import cv2

    done: dict = {}

    def cut():
        try:
            m = mask.copy()
            cv2.grabCut(bgr, m, None, np.zeros((1, 65)), np.zeros((1, 65)), iterations, cv2.GC_INIT_WITH_MASK)
            done["mask"] = m
        except BaseException as e:  # handed to the caller's thread
            done["error"] = e

    if timeout is None:
        cut()
    else:
        worker = threading.Thread(target=cut, name="grabcut", daemon=True)
        worker.start()
        worker.join(timeout)
    if "error" in done:
        raise done["error"]
    return done.get("mask")
