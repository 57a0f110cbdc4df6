"""A loaded model: spec, parameters, and pure functions to preprocess and apply."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvis import models, params as params_io, preprocess as pre
from jaxvis.spec import ModelSpec


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

    def preprocess(self, images) -> jax.Array:
        """RGB images in [0, 1], (N, H, W, 3) or (H, W, 3), any size -> the model's input."""
        return pre.preprocess(self.spec, images)

    def to_image(self, x: jax.Array) -> jax.Array:
        """Model input -> RGB in [0, 1] for display (inverse of the normalisation, not clipped)."""
        return pre.to_image(self.spec, x)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        h, w = self.spec.input_size
        return (batch, h, w, 3)


def from_spec(spec: ModelSpec, variables: Any) -> Model:
    """A Model from a spec and variables (nested dict of arrays), placed on the default device."""
    return Model(spec=spec, params=jax.tree.map(jnp.asarray, variables), module=models.build(spec))


def load(path: str | os.PathLike, arch: str | None = None) -> Model:
    """Loads a params file written by jaxvis (``converters.torchvision`` or a training script).

    The architecture is read from the file's metadata; give ``arch`` to insist on one. Nothing in the
    file is executed, and no random initialisation is run.
    """
    variables, spec, _ = params_io.load(path)
    if arch is not None and arch != spec.arch:
        raise params_io.ParamsFileError(
            f"{os.fspath(path)!r} holds a {spec.arch} but {arch} was asked for; pass the params file of a "
            f"{arch}, or ask for {spec.arch}."
        )
    model = from_spec(spec, variables)
    check_variables(model)
    return model


def check_variables(model: Model) -> None:
    """Checks that the variables have exactly the names and shapes the module expects."""
    h, w = model.spec.input_size
    expected = jax.eval_shape(model.module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    want = {k: v.shape for k, v in params_io.flatten(expected).items()}
    have = {k: tuple(v.shape) for k, v in params_io.flatten(model.params).items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = sorted(f"{k}: file {have[k]}, model {want[k]}" for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if shapes:
            parts.append(f"wrong shapes [{'; '.join(shapes)}]")
        raise params_io.ParamsFileError(
            f"params do not fit a {model.spec.arch}: {', '.join(parts)}; the file is damaged or its spec "
            "does not describe its tensors."
        )
