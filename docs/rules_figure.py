"""The paper's section 4 side by side: the gradient, DeconvNet and Guided Backprop on the shipped classifier and
on single detections of the shipped detector, the paper's max over colour channels of |map|.

  python docs/rules_figure.py            # writes docs/rules.png

DeconvNet is the gradient with each rectifier passing the positive part of the signal coming back instead of
masking it by the forward input (Simonyan et al. 2013, section 4; tests/test_rules.py checks it against the
reconstruction run literally); Guided Backprop does both.
"""

import os

import jax
import numpy as np
from PIL import Image

import jaxvis
from jaxvis import assets, images as image_files, render, saliency as sal
from jaxvis.data import shapes

METHODS = (("gradient", sal.gradient()), ("deconvnet", sal.deconvnet()), ("guided backprop", sal.guided_backprop()))


def upscale(a: np.ndarray, size: int = 128) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((size, size), Image.NEAREST))


def main(out: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules.png")) -> str:
    cls = jaxvis.load(assets.path("classifier"))
    images, labels, _ = shapes.classification_set(3, 3)
    rows, names = [], []
    for i in range(3):
        row = [upscale((images[i] * 255).astype(np.uint8))]
        for _, method in METHODS:
            m = method.attribute(cls, images[i:i + 1], sal.class_score(labels[i:i + 1, None])).reduce()[0, 0]
            row.append(upscale(image_files.colourise(m)))
        rows.append(row)
        names.append(f"classifier: {cls.labels[int(labels[i])]}")
    det = jaxvis.load(assets.path("detector"))
    scenes = shapes.detection_set(5, 2)[0]
    found = jax.device_get(jax.jit(det.detect)(det.params, scenes))
    target = sal.detections(found, [[0]] * 2)
    for i in range(2):
        row = [(scenes[i] * 255).astype(np.uint8)]
        for _, method in METHODS:
            m = method.attribute(det, scenes[i:i + 1], target[i:i + 1]).reduce()[0, 0]
            row.append(image_files.colourise(m))
        box = found["boxes"][i, 0]
        row[0] = render.draw_boxes(row[0], [box])
        rows.append(row)
        names.append(f"detector: {det.labels[int(found['labels'][i, 0])]} {found['scores'][i, 0]:.2f}")
    picture = render.grid(rows, names, ["image"] + [n for n, _ in METHODS])
    Image.fromarray(picture).save(out, optimize=True)
    return out


if __name__ == "__main__":
    print("wrote", main())
