"""Files that ship with jaxvis: label lists and the small shapes models trained by
experiments/train_shapes.py."""

from __future__ import annotations

import os
from importlib import resources

SHIPPED = {
    "classifier": "shapes_vgg.safetensors",   # VGG-style shapes classifier, 64x64 input
    "judge": "shapes_judge.safetensors",      # an independently trained classifier of other widths
    "detector": "shapes_ssd.safetensors",     # SSD-style shapes detector, 128x128 input
    # the same detector fine-tuned on adversarial scenes (experiments/train_shapes.py): its class models
    # draw the shapes
    "detector_robust": "shapes_ssd_robust.safetensors",
}


def path(name: str) -> str:
    """Path of a shipped file, by file name or by SHIPPED key."""
    name = SHIPPED.get(name, name)
    p = os.fspath(resources.files(__name__).joinpath(name))
    if not os.path.exists(p):
        raise FileNotFoundError(f"jaxvis ships no file {name!r}; shipped models: {', '.join(SHIPPED)}")
    return p


# The image statistics of the shapes models: the shapes generator's (``shapes_image_stats.npz``). The training
# specs name them (``ModelSpec.image_stats``); the shipped files predate that field, and get them on loading.
SHIPPED_STATS = "shapes"
STATS_FILES = {"shapes": "shapes_image_stats.npz"}


def image_stats_of(params_file: str) -> str:
    """The statistics that go with a shipped model file, or a copy of one (``SHIPPED_STATS``); "" for any
    other file. Only a shipped file of the same size is hashed."""
    from jaxvis.fileio import sha256

    try:
        size = os.path.getsize(params_file)
        same_size = [p for p in (os.fspath(resources.files(__name__).joinpath(n)) for n in SHIPPED.values())
                     if os.path.exists(p) and os.path.getsize(p) == size]
        if same_size and sha256(params_file) in {sha256(p) for p in same_size}:
            return SHIPPED_STATS
    except OSError:
        pass
    return ""
