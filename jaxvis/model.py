"""A loaded model: spec, parameters, and pure functions to preprocess and apply."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvis import boxes as bx, detect as det, models, multibox, params as params_io, preprocess as pre
from jaxvis.spec import ModelSpec


def cached_on_model(fn):
    """Memoises ``fn(model, *args)`` (hashable ``args``) on the model itself: what it makes (a compiled program,
    shapes) lives as long as the model does. A module-level cache keyed on models would keep every model it
    saw, with its parameters, alive. ``fn.forget(model)`` drops the model's entries of ``fn``."""
    name = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def cached(model, *args):
        store = model.__dict__.setdefault("_cached", {}).setdefault(name, {})
        if args not in store:
            store[args] = fn(model, *args)
        return store[args]

    cached.forget = lambda model: model.__dict__.get("_cached", {}).pop(name, None)
    return cached


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A model ready to use.

    Attributes:
      spec: architecture and input conventions (``ModelSpec``).
      params: the variables as a plain pytree, ``{"params": ..., "batch_stats": ...}``.
      module: the Flax module (inference mode).
    """

    spec: ModelSpec
    params: Any
    module: nn.Module

    def apply(self, params: Any, x: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        """Pure forward pass: (outputs, named activations) for NHWC float32 input in the model's
        normalised input space (for a VGG, what torchvision's model takes, channels last)."""
        return self.module.apply(params, x)

    def with_conv_backend(self, backend: str) -> "Model":
        """The same model with its convolutions through ``backend``: "auto" (oneDNN on CPUs where its
        kernels can be used, XLA elsewhere), "onednn" or "xla" (see ``jaxvis.conv``). The module takes
        the convolution as a function (its ``conv_general_dilated`` field); this builds and injects it."""
        from jaxvis import conv

        return dataclasses.replace(self, module=self.module.clone(conv_general_dilated=conv.for_backend(backend)))

    @property
    def conv_backend(self) -> str | None:
        """The backend of the module's convolution function ("auto", "onednn", "xla"; None for a function
        that is not one of ``jaxvis.conv``'s)."""
        from jaxvis import conv

        return conv.backend_of(getattr(self.module, "conv_general_dilated", None))

    def preprocess(self, images) -> jax.Array:
        """RGB images in [0, 1], (N, H, W, 3) or (H, W, 3), any size -> the model's input."""
        return pre.preprocess(self.spec, images)

    def to_image(self, x: jax.Array) -> jax.Array:
        """Model input -> RGB in [0, 1] for display (inverse of the normalisation, not clipped)."""
        return pre.to_image(self.spec, x)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def is_detector(self) -> bool:
        return self.spec.is_detector

    def class_logits(self, outputs) -> jax.Array:
        """The class scores in ``outputs`` of ``apply``: (N, classes) for a classifier; a detector
        overrides this with its per-default-box scores (N, boxes, classes)."""
        return outputs

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        h, w = self.spec.input_size
        return (batch, h, w, 3)


@dataclasses.dataclass(frozen=True, eq=False)
class Detector(Model):
    """An SSD detector: a Model with default boxes, post-processing and the MultiBox loss.

    ``apply`` returns ``({"cls_logits": (N, A, K), "bbox_regression": (N, A, 4)}, activations)``.
    """

    @functools.cached_property
    def feature_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of each feature map the heads read."""
        _, acts = jax.eval_shape(self.module.apply, self.params,
                                 jax.ShapeDtypeStruct(self.input_shape(1), jnp.float32))
        n = len(self.spec.config["anchors_per_location"])
        return [tuple(acts[f"map{i}"].shape[1:3]) for i in range(n)]

    @functools.cached_property
    def head_ends(self) -> tuple[int, ...]:
        """Where each head's default boxes end in the rows of the outputs: the heads' rows are concatenated in
        map order, head k's (y, x, box) rows ending at ``head_ends[k]``."""
        counts = [h * w * a for (h, w), a in zip(self.feature_sizes, self.spec.config["anchors_per_location"])]
        return tuple(int(e) for e in np.cumsum(counts))

    @functools.cached_property
    def anchors(self) -> np.ndarray:
        """Default boxes, (A, 4) float32 xyxy pixels of the network input, in the heads' row order."""
        return self.default_boxes(np.float32)

    def default_boxes(self, dtype=np.float32) -> np.ndarray:
        cfg = self.spec.detection["anchors"]
        return bx.default_boxes(self.feature_sizes, self.spec.input_size, cfg["aspect_ratios"], cfg["scales"],
                                cfg.get("steps"), cfg.get("clip", True), cfg.get("clip_centres", False), dtype)

    @property
    def postprocess_config(self) -> det.PostprocessConfig:
        return det.PostprocessConfig(**self.spec.detection.get("postprocess", {}))

    @property
    def loss_config(self) -> multibox.LossConfig:
        return multibox.LossConfig(**self.spec.detection.get("loss", {}))

    def class_logits(self, outputs) -> jax.Array:
        """The class scores of every default box, (N, boxes, classes), background in column 0."""
        return outputs["cls_logits"]

    def postprocess(self, outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Batched head outputs -> fixed-size detections in network-input pixels (see jaxvis.detect)."""
        anchors = jnp.asarray(self.anchors)
        cfg = self.postprocess_config
        return jax.vmap(lambda c, r: det.postprocess(c, r, anchors, self.spec.input_size, cfg))(
            outputs["cls_logits"], outputs["bbox_regression"])

    def detect(self, params: Any, images: jax.Array) -> dict[str, jax.Array]:
        """Detections for RGB images in [0, 1], (N, H, W, 3): per image ``boxes`` (xyxy in the images'
        pixels), ``scores``, ``labels``, ``valid`` (a fixed number of rows, the valid ones first) and
        ``anchor`` (the default box behind each detection). Pure; usable under ``jit``."""
        images = jnp.asarray(images)
        if images.ndim == 3:
            images = images[None]
        height, width = images.shape[1:3]
        outputs, _ = self.apply(params, self.preprocess(images))
        out = self.postprocess(outputs)
        th, tw = self.spec.input_size
        scale = jnp.asarray([width / tw, height / th, width / tw, height / th], jnp.float32)
        out["boxes"] = out["boxes"] * scale
        return out

    def loss(self, params: Any, x: jax.Array, gt_boxes: jax.Array, gt_labels: jax.Array,
             gt_valid: jax.Array) -> dict[str, jax.Array]:
        """The MultiBox loss of input ``x`` (network input space) for padded targets in input pixels."""
        outputs, _ = self.apply(params, x)
        return multibox.multibox_loss(outputs["cls_logits"], outputs["bbox_regression"], jnp.asarray(self.anchors),
                                      gt_boxes, gt_labels, gt_valid, self.loss_config)


def from_spec(spec: ModelSpec, variables: Any) -> Model:
    """A Model (a Detector for detectors) from a spec and variables, placed on the default device."""
    cls = Detector if spec.is_detector else Model
    return cls(spec=spec, params=jax.tree.map(jnp.asarray, variables), module=models.build(spec))


def load(path: str | os.PathLike, arch: str | None = None) -> Model:
    """Loads a params file written by jaxvis (``converters.torchvision`` or a training script).

    The architecture is read from the file's metadata; give ``arch`` to insist on one. Nothing in the
    file is executed, and no random initialisation is run.

    Example:

    ```python
    import jax.numpy as jnp
    import jaxvis
    from jaxvis import assets

    model = jaxvis.load(assets.path("classifier"))   # a shipped model, or a file converters.torchvision wrote
    images = jnp.zeros((2, 64, 64, 3))               # RGB in [0, 1]
    logits, activations = model.apply(model.params, model.preprocess(images))
    print(model.spec.arch, logits.shape, sorted(activations)[:3])
    ```
    """
    variables, spec, _ = params_io.load(path)
    if arch is not None and arch != spec.arch:
        raise params_io.ParamsFileError(
            f"{os.fspath(path)!r} holds a {spec.arch} but {arch} was asked for; pass the params file of a "
            f"{arch}, or ask for {spec.arch}."
        )
    if not spec.image_stats:  # the shipped models' files predate the field
        from jaxvis import assets

        spec = spec.replace(image_stats=assets.image_stats_of(os.fspath(path)))
    model = from_spec(spec, variables)
    check_variables(model)
    return model


def check_variables(model: Model) -> None:
    """Checks that the variables have exactly the names and shapes the module expects."""
    h, w = model.spec.input_size
    expected = jax.eval_shape(model.module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    want = {k: v.shape for k, v in params_io.flatten(expected).items()}
    have = {k: tuple(v.shape) for k, v in params_io.flatten(model.params).items()}
    missing, unexpected, misshaped = params_io.shape_mismatches(have, want)
    if missing or unexpected or misshaped:
        lines = params_io.describe_mismatches(missing, unexpected, misshaped, noun="tensors")
        raise params_io.ParamsFileError(
            f"params do not fit a {model.spec.arch}; the file is damaged or its spec does not describe its "
            "tensors:\n" + "\n".join(lines))
