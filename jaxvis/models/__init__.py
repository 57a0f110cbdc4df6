"""Model families and the torchvision architectures they reproduce."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn

from jaxvis import labels as _labels
from jaxvis.models import vgg
from jaxvis.spec import ModelSpec

FAMILIES: dict[str, Callable[..., nn.Module]] = {"vgg": vgg.VGG}


def _vgg_config(arch: str) -> dict[str, Any]:
    base, _, bn = arch.partition("_")
    blocks = [list(b) for b in vgg.BLOCKS[vgg.ARCH_CFG[base]]]
    return {"blocks": blocks, "batch_norm": bn == "bn", "num_classes": 1000, "fc_width": 4096}


VGG_ARCHS = tuple(f"{b}{s}" for b in vgg.ARCH_CFG for s in ("", "_bn"))


def torchvision_spec(arch: str) -> ModelSpec:
    """The spec of a torchvision architecture with its published ImageNet conventions."""
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
    raise ValueError(f"unknown torchvision architecture {arch!r}; known: {', '.join(ARCHS)}")


ARCHS = VGG_ARCHS


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
    if "blocks" in config:
        config["blocks"] = tuple(tuple(b) for b in config["blocks"])
    if "pool_size" in config:
        config["pool_size"] = tuple(config["pool_size"])
    return family(**config)
