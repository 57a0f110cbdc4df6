"""Image-specific saliency (Simonyan et al. 2013, section 3) for classifiers and for single detections.

The paper's map is max over colour channels of |dS_c/dI|. Gradients are taken either with respect to
the network input (``space="input"``) or with respect to the input image's own pixels
(``space="image"``, the default): the preprocessing (resize, crop, normalisation) is differentiated
through, so the map has the image's height and width.

A target is a scalar read off the model's outputs:

| kind | score | per-target values |
|---|---|---|
| ``class`` | logit S_c (``score="logit"``), ``"prob"`` or ``"log_prob"`` of class c | ``class`` |
| ``detection`` | the class score (logit or probability) of the pre-NMS default box behind a detection | ``anchor``, ``class`` |
| ``box_coord`` | one decoded coordinate (x1, y1, x2, y2 = 0..3, input pixels) of that default box | ``anchor``, ``coord`` |
| ``box_label`` | sum over all default boxes of IoU(decoded box, given box) x probability of the class | ``box`` (input pixels), ``class`` |

Targets come with a leading (images, targets-per-image) shape; one compiled call computes every map of a
batch: one forward pass per image (and per noise sample or path step) and one backward pass per target.
Methods: ``gradient`` (the paper), ``smoothgrad`` (gradients averaged over noisy copies), ``integrated``
(Integrated Gradients: (x - baseline) times the gradient averaged along the straight path, midpoint
rule) and ``grad_x_input``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import boxes as bx
from jaxvis import preprocess as pre

KINDS = ("class", "detection", "box_coord", "box_label")
METHODS = ("gradient", "smoothgrad", "integrated", "grad_x_input")
REDUCTIONS = ("max", "sum", "l2", "signed", "none")
SCORES = ("logit", "prob", "log_prob")


TRACES = 0  # compilations of the batched saliency program (tests check that a batch is one call)


class SaliencyError(ValueError):
    """A saliency request that does not fit the model or its inputs."""


@dataclasses.dataclass
class Maps:
    """Saliency results (numpy). ``maps``: (N, K, H, W) (or (N, K, H, W, 3) for ``reduce="none"``);
    ``gradients``: (N, K, H, W, 3) attributions before the channel reduction; ``scores``: (N, K) the target
    values on the images."""

    maps: np.ndarray
    gradients: np.ndarray
    scores: np.ndarray


def reduce_channels(g: jax.Array, how: str) -> jax.Array:
    if how == "max":
        return jnp.max(jnp.abs(g), axis=-1)
    if how == "sum":
        return jnp.sum(jnp.abs(g), axis=-1)
    if how == "l2":
        return jnp.sqrt(jnp.sum(jnp.square(g), axis=-1))
    if how == "signed":
        return jnp.sum(g, axis=-1)
    if how == "none":
        return g
    raise SaliencyError(f"reduce must be one of {REDUCTIONS}, got {how!r}")


def _score(model, outputs, t: dict[str, jax.Array], kind: str, score: str) -> jax.Array:
    """The scalar target ``t`` of one image's outputs (batch axis of 1)."""
    if kind == "class":
        logits = outputs[0]
        c = t["class"]
    elif kind in ("detection", "box_coord", "box_label"):
        logits = outputs["cls_logits"][0]
        if kind == "box_coord":
            anchors = jnp.asarray(model.anchors, outputs["bbox_regression"].dtype)
            cfg = model.postprocess_config
            decoded = bx.decode(outputs["bbox_regression"][0, t["anchor"]], anchors[t["anchor"]], cfg.box_weights,
                                cfg.clamp_decode)
            return decoded[t["coord"]]
        if kind == "box_label":
            anchors = jnp.asarray(model.anchors, outputs["bbox_regression"].dtype)
            cfg = model.postprocess_config
            decoded = bx.decode(outputs["bbox_regression"][0], anchors, cfg.box_weights, cfg.clamp_decode)
            overlap = bx.iou(t["box"][None], decoded)[0]
            probs = jax.nn.softmax(logits, axis=-1)[:, t["class"]]
            return jnp.sum(overlap * probs)
        logits = logits[t["anchor"]]
        c = t["class"]
    else:
        raise SaliencyError(f"target kind must be one of {KINDS}, got {kind!r}")
    if score == "logit":
        return logits[c]
    if score == "prob":
        return jax.nn.softmax(logits)[c]
    if score == "log_prob":
        return jax.nn.log_softmax(logits)[c]
    raise SaliencyError(f"score must be one of {SCORES}, got {score!r}")


@functools.lru_cache(maxsize=64)
def _compiled(model, kind: str, score: str, method: str, reduce: str, space: str, samples: int, steps: int):
    """One jitted function computing all maps of a batch, cached per static configuration."""

    def forward(params, z):
        x = pre.preprocess(model.spec, z) if space == "image" else z
        return model.apply(params, x[None])[0]

    def grads_at(params, z, targets):
        """Scores and gradients of every target of one image at one point z: one forward, K backward."""
        outputs, vjp = jax.vjp(lambda z_: forward(params, z_), z)

        def one(t):
            value, g_out = jax.value_and_grad(lambda o: _score(model, o, t, kind, score))(outputs)
            return value, vjp(g_out)[0]

        return jax.vmap(one)(targets)

    def per_image(params, z, targets, baseline, key, noise):
        scores, g = grads_at(params, z, targets)
        if method == "smoothgrad":
            sigma = noise * (jnp.max(z) - jnp.min(z))
            noise = sigma * jax.random.normal(key, (samples,) + z.shape, z.dtype)
            _, gs = jax.vmap(lambda n: grads_at(params, z + n, targets))(noise)
            g = jnp.mean(gs, axis=0)
        elif method == "integrated":
            alphas = (jnp.arange(steps, dtype=z.dtype) + 0.5) / steps  # midpoint rule
            points = baseline[None] + alphas[:, None, None, None] * (z - baseline)[None]
            _, gs = jax.vmap(lambda p: grads_at(params, p, targets))(points)
            g = jnp.mean(gs, axis=0) * (z - baseline)[None]
        elif method == "grad_x_input":
            g = g * z[None]
        elif method != "gradient":
            raise SaliencyError(f"method must be one of {METHODS}, got {method!r}")
        return scores, g

    @jax.jit
    def run(params, z, targets, baseline, keys, noise):
        global TRACES
        TRACES += 1
        scores, g = jax.vmap(lambda zi, ti, bi, ki: per_image(params, zi, ti, bi, ki, noise))(z, targets, baseline, keys)
        return scores, g, reduce_channels(g, reduce)

    return run


def saliency(model, images, targets: dict[str, Any], *, kind: str = "class", params=None, method: str = "gradient",
             reduce: str = "max", space: str = "image", score: str = "logit", samples: int = 25,
             noise: float = 0.15, steps: int = 64, baseline=None, seed: int = 0) -> Maps:
    """Saliency maps of ``targets`` for a batch of images.

    Args:
      model: a jaxvis Model (classifier) or Detector.
      images: for ``space="image"``, RGB images in [0, 1], (N, H, W, 3) of one size; for ``space="input"``,
        network inputs (N, h, w, 3) (already preprocessed).
      targets: arrays with leading shape (N, K): ``class`` (int), ``anchor`` (int), ``coord`` (int 0..3),
        ``box`` ((N, K, 4) xyxy network-input pixels), as the ``kind`` needs (see the module docstring).
      method, reduce, space, score: see the module docstring.
      samples, noise: SmoothGrad's number of noisy copies and noise std as a fraction of the input's range.
      steps, baseline: Integrated Gradients' path steps and baseline (default: zeros in the chosen space:
        a black image in image space, the mean image in input space), shape (N, H, W, 3) or (H, W, 3).
    """
    if kind not in KINDS:
        raise SaliencyError(f"target kind must be one of {KINDS}, got {kind!r}")
    if kind != "class" and not model.spec.is_detector:
        raise SaliencyError(f"target kind {kind!r} is for detectors; {model.spec.arch} is a classifier")
    if kind == "class" and model.spec.is_detector:
        raise SaliencyError(f"{model.spec.arch} is a detector: use kind 'detection', 'box_coord' or 'box_label'")
    if space not in ("image", "input"):
        raise SaliencyError(f"space must be 'image' or 'input', got {space!r}")
    if method not in METHODS:
        raise SaliencyError(f"method must be one of {METHODS}, got {method!r}")
    if reduce not in REDUCTIONS:
        raise SaliencyError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if score not in SCORES:
        raise SaliencyError(f"score must be one of {SCORES}, got {score!r}")
    z = jnp.asarray(images)
    z = z if z.dtype == jnp.float64 else z.astype(jnp.float32)
    if z.ndim != 4 or z.shape[-1] != 3:
        raise SaliencyError(f"images must be shaped (N, H, W, 3), got {tuple(z.shape)}")
    needs = {"class": ("class",), "detection": ("anchor", "class"), "box_coord": ("anchor", "coord"),
             "box_label": ("box", "class")}[kind]
    missing = [k for k in needs if k not in targets]
    if missing:
        raise SaliencyError(f"{kind} targets need {list(needs)}; missing {missing}")
    t = {k: jnp.asarray(targets[k]) for k in needs}
    n = z.shape[0]
    lead = t[needs[0]].shape[:2]
    if len(lead) != 2 or lead[0] != n or any(v.shape[:2] != lead for v in t.values()):
        raise SaliencyError(f"targets need a leading (images, targets) shape with {n} images; got "
                            f"{ {k: tuple(v.shape) for k, v in t.items()} }")
    for k in ("class", "anchor", "coord"):
        if k in t:
            t[k] = t[k].astype(jnp.int32)
    if baseline is None:
        baseline = jnp.zeros_like(z)
    baseline = jnp.broadcast_to(jnp.asarray(baseline, z.dtype), z.shape)
    keys = jax.random.split(jax.random.key(seed), n)
    fn = _compiled(model, kind, score, method, reduce, space, int(samples), int(steps))
    scores, grads, maps = fn(model.params if params is None else params, z, t, baseline, keys,
                             jnp.asarray(noise, z.dtype))
    return Maps(maps=np.asarray(maps), gradients=np.asarray(grads), scores=np.asarray(scores))


def top_k_classes(model, images, k: int, params=None, space: str = "image") -> np.ndarray:
    """(N, k) indices of each image's k highest logits."""
    x = pre.preprocess(model.spec, images) if space == "image" else jnp.asarray(images)
    logits, _ = jax.jit(model.apply)(model.params if params is None else params, x)
    return np.asarray(jax.lax.top_k(logits, k)[1])


def detection_targets(detections: dict[str, Any], index) -> dict[str, np.ndarray]:
    """Targets for detections chosen by ``index`` ((N, K) ints into each image's detection list) from the
    output of ``Detector.detect``: the anchor behind each one and its label."""
    index = np.asarray(index)
    anchors = np.take_along_axis(np.asarray(detections["anchor"]), index, axis=1)
    labels = np.take_along_axis(np.asarray(detections["labels"]), index, axis=1)
    valid = np.take_along_axis(np.asarray(detections["valid"]), index, axis=1)
    if not valid.all():
        raise SaliencyError("a requested detection does not exist (fewer detections than the index asks for)")
    return {"anchor": anchors, "class": labels}
