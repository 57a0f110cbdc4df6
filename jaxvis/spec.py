"""What a model expects of its input and what its outputs mean, carried with its parameters."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("resize_crop", "squash")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model's architecture and input conventions.

    Attributes:
      arch: architecture name, e.g. ``"vgg16"``, ``"vgg16_bn"`` or a custom name for a small model.
      family: the module family that builds it (``"vgg"``).
      config: keyword arguments of the family's module (widths, classes, ...), JSON-serialisable.
      input_size: (height, width) of the network input that ``preprocess`` produces.
      resize: ``"resize_crop"``: shorter side to ``resize_size`` then a centre crop of ``input_size``
        (torchvision's ImageClassification); ``"squash"``: resize to ``input_size`` ignoring the
        aspect ratio (torchvision's detection transform).
      resize_size: shorter side after resizing, for ``"resize_crop"``.
      antialias: whether downscaling low-pass filters first (torchvision classifiers do; SSD does not).
      mean, std: per channel, in the model's channel order, applied to pixel values in ``value_range``.
      value_range: (low, high) of the pixel values that ``mean``/``std`` expect; images in [0, 1]
        are mapped linearly onto it.
      channel_order: ``"RGB"`` or ``"BGR"``.
      labels: class names, index = logit index.
      source: file name of the checkpoint the parameters came from.
      source_sha256: sha256 of that file.
      detection: for detectors, the default-box settings (``anchors``), the post-processing rules
        (``postprocess``) and the MultiBox loss variant (``loss``); None for classifiers.
      image_stats: the image statistics that parameterisations of this model's inputs use (the colour
        decorrelation matrix, MACO's magnitude spectrum): the name of a file jaxvis ships (``"shapes"``) or
        a path to one (``jaxvis.parameterizations.image_statistics`` writes it); empty: none (Lucid's
        ImageNet colour matrix; no MACO spectrum).
    """

    arch: str
    family: str
    config: dict[str, Any]
    input_size: tuple[int, int]
    resize: str = "resize_crop"
    resize_size: int | None = 256
    antialias: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    value_range: tuple[float, float] = (0.0, 1.0)
    channel_order: str = "RGB"
    labels: tuple[str, ...] = ()
    source: str = ""
    source_sha256: str = ""
    detection: dict[str, Any] | None = None
    image_stats: str = ""

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {self.mean} and {self.std}")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def is_detector(self) -> bool:
        return self.detection is not None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        fields = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise ValueError(
                f"model spec has unknown fields {sorted(unknown)}; the file was written by a newer "
                "jaxvis: upgrade jaxvis to read it."
            )
        for key in ("input_size", "mean", "std", "value_range", "labels"):
            if key in fields and fields[key] is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)
