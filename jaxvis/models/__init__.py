"""Model families and the torchvision architectures they reproduce."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn

from jaxvis import labels as _labels
from jaxvis.models import ssd, vgg
from jaxvis.spec import ModelSpec

FAMILIES: dict[str, Callable[..., nn.Module]] = {"vgg": vgg.VGG, "ssd": ssd.SSD}


def _vgg_config(arch: str) -> dict[str, Any]:
    base, _, bn = arch.partition("_")
    blocks = [list(b) for b in vgg.BLOCKS[vgg.ARCH_CFG[base]]]
    return {"blocks": blocks, "batch_norm": bn == "bn", "num_classes": 1000, "fc_width": 4096}


VGG_ARCHS = tuple(f"{b}{s}" for b in vgg.ARCH_CFG for s in ("", "_bn"))
SSD_ARCHS = ("ssd300_vgg16", "ssd300_vgg16_voc")

VOC_LABELS = ("__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
              "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
              "train", "tvmonitor")


def _ssd300_spec(arch: str) -> ModelSpec:
    voc = arch.endswith("_voc")
    config = {
        "num_classes": 21 if voc else 91,
        "blocks": [list(b) for b in vgg.BLOCKS["D"]],
        "fc_width": 1024,
        "fc_dilation": 6,
        "extras": [list(e) for e in ssd.SSD300_EXTRAS],
        "anchors_per_location": [4, 6, 6, 6, 4, 4],
        "l2norm": "add" if voc else "max",
    }
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    if voc:
        # amdegroot/ssd.pytorch's VOC priors: min sizes 30, 60, 111, 162, 213, 264 and max 315 on 300 px,
        # every (cx, cy, w, h) value clamped to [0, 1]; no dw/dh clamp when decoding.
        scales = [30 / 300, 60 / 300, 111 / 300, 162 / 300, 213 / 300, 264 / 300, 315 / 300]
        anchors = {"aspect_ratios": ratios, "scales": scales, "steps": [8, 16, 32, 64, 100, 300],
                   "clip": True, "clip_centres": True}
        post = {"topk_candidates": 200, "clamp_decode": False}
        loss = {"cap_negatives": True, "union": True, "guard_normaliser": False}
    else:
        scales = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
        anchors = {"aspect_ratios": ratios, "scales": scales, "steps": [8, 16, 32, 64, 100, 300],
                   "clip": True, "clip_centres": False}
        post, loss = {}, {}
    return ModelSpec(
        arch=arch,
        family="ssd",
        config=config,
        input_size=(300, 300),
        resize="squash",
        resize_size=None,
        antialias=False,
        # RGB in [0, 1] -> x * 255 - (123, 117, 104): torchvision's and amdegroot's input alike.
        mean=(0.48235, 0.45882, 0.40784) if not voc else (123 / 255, 117 / 255, 104 / 255),
        std=(1 / 255, 1 / 255, 1 / 255),
        labels=VOC_LABELS if voc else _labels.coco91(),
        detection={"anchors": anchors, "postprocess": post, "loss": loss},
    )


def arch_spec(arch: str) -> ModelSpec:
    """The spec of a known architecture (torchvision's VGGs and SSD300, amdegroot's VOC SSD300)."""
    if arch in VGG_ARCHS:
        return ModelSpec(
            arch=arch,
            family="vgg",
            config=_vgg_config(arch),
            input_size=(224, 224),
            resize="resize_crop",
            resize_size=256,
            labels=_labels.imagenet(),
        )
    if arch in SSD_ARCHS:
        return _ssd300_spec(arch)
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


ARCHS = VGG_ARCHS + SSD_ARCHS


def build(spec: ModelSpec) -> nn.Module:
    """The Flax module for a spec (no parameters are created)."""
    try:
        family = FAMILIES[spec.family]
    except KeyError:
        raise ValueError(
            f"unknown model family {spec.family!r} (known: {', '.join(FAMILIES)}); "
            "the params file may come from a newer jaxvis."
        ) from None
    config = dict(spec.config)
    for key in ("blocks", "extras"):
        if key in config:
            config[key] = tuple(tuple(b) for b in config[key])
    for key in ("pool_size", "anchors_per_location"):
        if key in config:
            config[key] = tuple(config[key])
    return family(**config)
