"""Label lists that ship with the package."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def _read(name: str) -> tuple[str, ...]:
    text = resources.files("jaxvis.assets").joinpath(name).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def imagenet() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in torchvision's order (index 0 "tench")."""
    return _read("imagenet1k_labels.txt")


def coco91() -> tuple[str, ...]:
    """torchvision's 91 COCO detection labels: background, then names at COCO category ids, "N/A" gaps."""
    return _read("coco91_labels.txt")
