"""What a model expects of its input and what its outputs mean, carried with its parameters."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("resize_crop", "squash")

# The largest input side a spec may ask for: VGG16's activations at 4096 x 4096 already take gigabytes
# per image; a larger value is a damaged or mistyped spec, refused before anything is allocated.
MAX_INPUT_SIDE = 4096


class NewerSpecError(ValueError):
    """A spec with fields this jaxvis does not know: written by a newer jaxvis."""


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
        problem = spec_problem(self)
        if problem:
            raise ValueError(problem)

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
        if not isinstance(fields, dict):
            raise ValueError(f"model spec must be a JSON object of fields; got a {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise NewerSpecError(
                f"model spec has unknown fields {sorted(unknown)}; the file was written by a newer "
                "jaxvis: upgrade jaxvis to read it."
            )
        for key in ("input_size", "mean", "std", "value_range", "labels"):
            if isinstance(fields.get(key), list):
                fields[key] = tuple(fields[key])
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in fields]
        if missing:
            raise ValueError(f"model spec lacks the field(s) {', '.join(missing)}")
        return cls(**fields)

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _numbers(value, n: int, check) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == n and all(check(v) for v in value)


def spec_problem(spec: ModelSpec) -> str | None:
    """The first field of ``spec`` that holds an unusable value, as "FIELD must be ...; got VALUE", or None.

    Every field is checked, as safetensors checks every header field before reading data, so that a
    damaged or hand-edited spec is refused where it is read rather than failing later inside a network.
    """
    def bad(field: str, expected: str) -> str:
        return f"{field} must be {expected}; got {getattr(spec, field)!r}"

    for field in ("arch", "family"):
        if not isinstance(getattr(spec, field), str) or not getattr(spec, field):
            return bad(field, "a non-empty name")
    if not isinstance(spec.config, dict):
        return bad("config", "a JSON object of the module's keyword arguments")
    side = lambda v: _is_int(v) and 1 <= v <= MAX_INPUT_SIDE  # noqa: E731
    if not _numbers(spec.input_size, 2, side):
        return bad("input_size", f"two whole numbers from 1 to {MAX_INPUT_SIDE} (height, width)")
    if spec.resize not in RESIZE_MODES:
        return bad("resize", f"one of {', '.join(RESIZE_MODES)}")
    if spec.resize_size is not None and not side(spec.resize_size):
        return bad("resize_size", f"a whole number from 1 to {MAX_INPUT_SIDE}, or null")
    if spec.resize == "resize_crop" and (spec.resize_size is None or spec.resize_size < max(spec.input_size)):
        return bad("resize_size", f"at least the larger side of input_size {tuple(spec.input_size)} for "
                   "resize 'resize_crop' (the shorter side is resized to it, then input_size is cropped)")
    if not isinstance(spec.antialias, bool):
        return bad("antialias", "true or false")
    if not _numbers(spec.mean, 3, _is_real):
        return bad("mean", "3 finite numbers, one per channel")
    if not _numbers(spec.std, 3, lambda v: _is_real(v) and v > 0):
        return bad("std", "3 finite numbers above 0, one per channel (the input is divided by them)")
    if not _numbers(spec.value_range, 2, _is_real) or not spec.value_range[0] < spec.value_range[1]:
        return bad("value_range", "two finite numbers (low, high) with low < high")
    if spec.channel_order not in ("RGB", "BGR"):
        return bad("channel_order", "'RGB' or 'BGR'")
    if not isinstance(spec.labels, (tuple, list)) or not all(isinstance(v, str) for v in spec.labels):
        return bad("labels", "a list of class names")
    outputs = spec.config.get("num_classes")
    if spec.labels and isinstance(outputs, int) and len(spec.labels) != outputs:
        return bad("labels", f"one name per class output: {outputs} (config num_classes), not {len(spec.labels)}")
    for field in ("source", "source_sha256", "image_stats"):
        if not isinstance(getattr(spec, field), str):
            return bad(field, "a string")
    if spec.detection is not None and not isinstance(spec.detection, dict):
        return bad("detection", "a JSON object (for detectors) or null")
    return None
