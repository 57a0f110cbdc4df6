"""Saliency for classifiers and for single detections: methods and targets as values.

    from jaxvis import saliency as sal
    e = sal.saliency(model, images, sal.class_score([[3, 17]]), sal.smoothgrad(samples=32))
    maps = e.reduce(sal.max_abs)                            # the paper's max of |g| over colour channels
    det = jax.jit(ssd.detect)(ssd.params, images)
    e = sal.odam().attribute(ssd, images, sal.detections(det, [[0, 1, 2]]))       # (N, 3, H, W)

**Targets** are scalars read off the model's outputs, with a leading (images, targets-per-image) shape:

| target | score | fields |
|---|---|---|
| ``class_score(classes, score)`` | logit S_c (``logit``), ``prob`` or ``log_prob`` of class c, or a function of yours | ``classes`` |
| ``detection(anchors, classes, score)`` / ``detections(det, index)`` | the class score of the pre-NMS default box behind a detection | ``anchors``, ``classes`` |
| ``box_coordinate(anchors, coords)`` | one decoded coordinate (x1, y1, x2, y2 = 0..3, input pixels) of that default box | ``anchors``, ``coords`` |
| ``box_label(boxes, classes)`` | sum over all default boxes of IoU(decoded box, given box) x probability of the class | ``boxes`` (input pixels), ``classes`` |

**Methods** are small frozen dataclasses; what changes the program's shape (number of samples, layers) is
static, the rest (noise level, baseline, keep probability) is data:

- ``gradient()``: dS/dI (Simonyan et al. 2013); ``grad_x_input()``: dS/dI x I.
- ``feature_ablation(cell, baseline)``: the image cut into a grid of squares, each set to ``baseline`` in
  turn; each pixel's attribution is its square's drop of the target (Captum's FeatureAblation on a grid).
- ``guided_gradcam(layer)``: Guided Backprop times Grad-CAM's map of ``layer``, up-sampled by nearest cells
  (Captum's Guided Grad-CAM).
- ``occlusion(window, stride, baseline)``: a square of the image set to ``baseline``, slid over it; each
  pixel's mean drop of the target over the squares that cover it (Captum's Occlusion).
- ``guided_backprop()`` and ``deconvnet()``: the gradient with each rectifier's backward pass replaced
  (``jaxvis.rules``): Guided Backprop passes g * [x > 0] * [g > 0], DeconvNet max(g, 0); max-pooling keeps
  its switches. Both wrap in ``smoothgrad`` like any gradient method.
- ``smoothgrad(method, samples, noise)``: the inner method averaged over noisy copies (noise std a fraction
  of the input's range); ``integrated(steps, baseline)``: Integrated Gradients, (x - baseline) times the
  gradient averaged along the straight path (midpoint rule). Samples and steps run in chunks sized to the
  free memory (``chunk`` overrides), so memory does not grow with their number.
- ``gradcam(layers)``: per layer, ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of dS/dA_k;
  ``odam(layers)`` (Zhao & Chan 2023): per layer, ReLU(sum_k dS/dA_k * A_k), element-wise. dS/dA is the
  total derivative through every layer that reads A (``jaxvis.models.taps``), so any activation the model
  returns can be named. Defaults for SSD: Grad-CAM on the six maps the heads read (``source_maps``: conv4_3
  after the L2 norm, fc7, the extra layers); ODAM on ``backbone_layers``: conv4_3 (stride 8), the last
  activation every head depends on, and for the first head's detections its own map (conv4_3 after the
  norm, which makes ODAM through conv4_3 vanish). The heads' own maps are coarse (stride 16 and more for
  most objects) and ODAM there is the head's 3 x 3 convolution split over nine cells, which rings the
  object; conv4_3's map stays on it (energy-based pointing game on 200 generated scenes of the shipped
  detector: 0.69 against 0.51 on the source maps and 0.62 for the gradient; on the detector shipped before
  it, Grad-CAM's pooled weights gained nothing there, 0.28 against 0.30). Classifiers name their layers.
  Each layer's map is up-sampled bilinearly to the output grid with each cell on the centre of the image
  region it stands for: an SSD source map's cell
  (i, j) on the centre of its default boxes, ((i + 0.5) * step, (j + 0.5) * step) input pixels (SSD300's
  steps 8, 16, 32, 64 are not 300 / 38, 300 / 19, …, so this differs from a plain resize), another
  activation of a detector on ((i + 0.5) * stride, …) with its power-of-two stride, a classifier's with
  half-pixel centres (as ``F.interpolate(align_corners=False)``). A map whose maximum is within rounding
  error of its terms (``ROUNDING`` epsilons of the largest |alpha_k A_k| or |dS/dA_k * A_k|) is zero. The
  layers are then combined by a function of the maps: ``normalised_sum`` (default) divides each map by its
  own maximum (an all-zero map stays zero) and sums them, so that every scale counts alike; ``layer_sum``
  adds them as they are; ``own_level`` keeps only the map of the source feature map whose head predicts the
  detection (the one its default box sits on), as the ODAM authors explain a multi-level detector's
  prediction at its own level (detection and box-coordinate targets on the source maps).
- ``drise(masks, cell, p)`` (Petsiuk et al. 2021), detectors only: random binary grids with cells of
  ``cell`` pixels kept with probability ``p``, up-sampled bilinearly and shifted at random by up to a cell
  (as RISE); for each masked image, the detector's pre-NMS proposals (decoded boxes and class
  probabilities of every default box) and the similarity of the best proposal to the target:
  max over proposals of IoU(boxes) x cosine(foreground class probabilities) x (1 - background
  probability). The map is sum_i s_i M_i / (N p). Masks run in chunks inside one compiled program; the
  masks depend on the seed and the mask index only, so the chunk size does not change the map.

Gradients are taken with respect to the image's own pixels, RGB in [0, 1] (``preprocess=True``, the default:
through the model's preprocessing), or the network input (``preprocess=False``: the images are network
inputs). ``saliency`` returns an ``Explanation``:
``attributions`` (N, K, H, W, 3) for the gradient family, (N, K, H, W) for the CAMs and D-RISE, and
``scores`` (N, K), the target values (D-RISE: the similarity on the unmasked image). The channel
reduction is a separate step, ``reduce_channels``.

Every method is a ``Method`` value with ``attribute(model, images, targets)``; ``explain`` (also called
``saliency``) is the same call with the method last. A gradient method of your own subclasses
``GradientMethod`` and defines ``combine``; a class activation map, ``CAM`` and ``cam``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import boxes as bx
from jaxvis import rules
from jaxvis.model import cached_on_model
from jaxvis import preprocess as pre
from jaxvis.models.taps import TAPS

KINDS = ("class", "detection", "box_coord", "box_label")

TRACES = 0  # compilations of the batched gradient program (tests check that a batch is one call)
ROUNDING = 64  # a CAM whose maximum is below this many epsilons of its largest term is rounding error
MEMORY_BUDGET = 2 * 2**30  # most bytes a chunk of samples, steps, masks or targets may take


class SaliencyError(ValueError):
    """A saliency request that does not fit the model or its inputs."""


# ----------------------------------------------------------------------------------------------- methods


def normalised_sum(maps, level=None):
    """The layers' maps, each divided by its own maximum (an all-zero map stays zero), summed: every scale
    counts alike."""
    maps = [m / jnp.where(jnp.max(m) > 0, jnp.max(m), 1.0) for m in maps]
    return functools.reduce(jnp.add, maps)


def layer_sum(maps, level=None):
    """The layers' maps summed as they are."""
    return functools.reduce(jnp.add, maps)


def own_level(maps, level):
    """The map of the source feature map at ``level``, the one whose head predicts the detection (the
    detector's source maps and detection or box-coordinate targets only)."""
    return functools.reduce(jnp.add, [jnp.where(level == k, m, 0.0) for k, m in enumerate(maps)])


class Method:
    """An attribution method, a frozen (hashable) value: ``method.attribute(model, images, targets)`` (the same
    as ``explain(model, images, targets, method)``) returns an ``Explanation``. A subclass computes it in
    ``compute(model, z, targets, params, preprocess, seed)`` from checked images ``z`` (N, H, W, 3) and a checked
    ``Target``; ``GradientMethod`` and ``CAM`` are the two families a new method can join by defining one
    function (``combine``, ``cam``)."""

    name = "method"

    def attribute(self, model, images, targets: "Target", *, params=None, preprocess: bool = True,
                  seed: int = 0) -> "Explanation":
        return explain(model, images, targets, self, params=params, preprocess=preprocess, seed=seed)

    def compute(self, model, z, targets: "Target", params, preprocess: bool, seed: int) -> "Explanation":
        raise NotImplementedError(f"{type(self).__name__} computes nothing; define compute(...)")


class GradientMethod(Method):
    """A method made of the targets' gradients (N, K, H, W, 3): one program takes every target's gradient at
    the image and hands it, with a function that takes the gradients at any other point, to ``combine``.

    ``points``: how many gradient evaluations ``combine`` makes (the memory chunking counts them): the field
    ``counted_by`` names, or one; ``data(z)``: per-call arrays with a leading images axis (a baseline, a noise
    level), not compiled in; ``program_key()``: the method with those left out (what the compiled program
    depends on)."""

    counted_by = None
    chunk = None

    @property
    def points(self) -> int:
        return getattr(self, self.counted_by) if self.counted_by else 1

    def data(self, z) -> dict:
        return {}

    def program_key(self) -> "GradientMethod":
        return self

    def combine(self, grad, z, g, key, data, chunk: int):
        """The attributions of image ``z`` from ``g``, the targets' gradients there (K, H, W, 3); ``grad(z')``
        gives them at another point, ``key`` is the image's random key, ``data`` its entries of ``data(z)``."""
        return g

    def relu_rule(self):
        """The rectifier whose backward pass replaces the gradient's (``jaxvis.rules``), or None."""
        return None

    def compute(self, model, z, targets, params, preprocess, seed):
        n, k = targets.shape
        if self.relu_rule() is not None:
            model = with_relu(model, self.relu_rule())
        chunk, tchunk = chunk_sizes(model, self.points, k, tuple(z.shape[1:3]))
        chunk = int(self.chunk or chunk)
        keys = jax.random.split(jax.random.key(seed), n)
        fn = _gradient_program(model, targets.kind, targets.score, self.program_key(), preprocess, chunk, tchunk)
        scores, g = fn(params, z, _fields(targets), self.data(z), keys)
        return Explanation(np.asarray(g), np.asarray(scores), self)


@dataclasses.dataclass(frozen=True)
class Gradient(GradientMethod):
    """dS/dI (Simonyan et al. 2013)."""

    name = "gradient"


def with_rules(model, **rules_):
    """``model`` with module fields replaced by backward rules (``jaxvis.rules``), kept on the model: ``relu``
    (its rectifier) and ``pool`` (a function of each max-pooling function), as jaxvis's VGG and SSD take them,
    and ``norm`` (a function of SSD's normalisation of conv4_3)."""
    return _with_rules(model, tuple(sorted(rules_.items())))


@cached_on_model
def _with_rules(model, rules_):
    rules_ = dict(rules_)
    fields = getattr(type(model.module), "__dataclass_fields__", {})
    missing = sorted(name for name in rules_ if name not in fields)
    if missing:
        raise SaliencyError(f"{type(model.module).__name__} takes no {' or '.join(missing)} to replace (module fields "
                            "'relu' and 'pool', as jaxvis's VGG and SSD have); backward rules need them")
    return dataclasses.replace(model, module=model.module.clone(**rules_))


def with_relu(model, relu):
    """``model`` with its rectifiers' backward pass replaced by ``relu``'s (``jaxvis.rules``), kept on the model."""
    return with_rules(model, relu=relu)


@dataclasses.dataclass(frozen=True)
class RuleGradient(GradientMethod):
    """The gradient with every rectifier's backward pass replaced by ``rule`` (a function of ``jaxvis.rules``);
    max-pooling keeps its gradient. A subclass names the rule."""

    rule = None

    def relu_rule(self):
        return type(self).rule


@dataclasses.dataclass(frozen=True)
class GuidedBackprop(RuleGradient):
    """Guided Backprop (Springenberg et al. 2015): at each rectifier, g * [x > 0] * [g > 0]."""

    name = "guided_backprop"
    rule = staticmethod(rules.guided_relu)


@dataclasses.dataclass(frozen=True)
class DeconvNet(RuleGradient):
    """DeconvNet (Zeiler & Fergus 2014) as Simonyan et al. 2013 relate it to the gradient: at each rectifier,
    max(g, 0) instead of g * [x > 0]."""

    name = "deconvnet"
    rule = staticmethod(rules.deconv_relu)


@dataclasses.dataclass(frozen=True)
class GradXInput(GradientMethod):
    """dS/dI x I."""

    name = "grad_x_input"

    def combine(self, grad, z, g, key, data, chunk):
        return g * z[None]


@dataclasses.dataclass(frozen=True)
class SmoothGrad(GradientMethod):
    """Any gradient method averaged over noisy copies of the image (Smilkov et al. 2017): noise of std
    ``noise`` times the image's range, ``samples`` copies, each drawn from the image's key."""

    method: GradientMethod = Gradient()
    samples: int = 25
    noise: float = 0.15
    chunk: int | None = None
    name, counted_by = "smoothgrad", "samples"

    def data(self, z):
        return {"noise": jnp.full((z.shape[0],), self.noise, z.dtype), "inner": self.method.data(z)}

    def program_key(self):
        return dataclasses.replace(self, method=self.method.program_key(), noise=0.0, chunk=None)

    def relu_rule(self):
        return self.method.relu_rule()

    def combine(self, grad, z, g, key, data, chunk):
        sigma = data["noise"] * (jnp.max(z) - jnp.min(z))

        def sample(i):
            zi = z + sigma * jax.random.normal(jax.random.fold_in(key, i), z.shape, z.dtype)
            return self.method.combine(grad, zi, grad(zi), jax.random.fold_in(key, i), data["inner"], chunk)

        return _accumulate(sample, self.samples, chunk, g) / self.samples


@dataclasses.dataclass(frozen=True)
class Integrated(GradientMethod):
    """Integrated Gradients: (x - baseline) times the gradient averaged along the straight path from the
    baseline (midpoint rule, ``steps`` points)."""

    steps: int = 64
    baseline: Any = dataclasses.field(default=None, compare=False, hash=False)  # None: zeros
    chunk: int | None = None
    name, counted_by = "integrated", "steps"

    def data(self, z):
        b = self.baseline
        return {"baseline": jnp.zeros_like(z) if b is None else jnp.broadcast_to(jnp.asarray(b, z.dtype), z.shape)}

    def program_key(self):
        return dataclasses.replace(self, baseline=None, chunk=None)

    def combine(self, grad, z, g, key, data, chunk):
        baseline, steps = data["baseline"], self.steps

        def step(i):
            alpha = (i.astype(z.dtype) + 0.5) / steps  # midpoint rule
            return grad(baseline + alpha * (z - baseline))

        return _accumulate(step, steps, chunk, g) / steps * (z - baseline)[None]


@dataclasses.dataclass(frozen=True)
class CAM(Method):
    """A class activation map: per layer A and target S, ReLU of ``cam(dS/dA, A)`` up-sampled to the image,
    the layers combined (see the module's docstring). ``cam(g, a)`` takes one layer's (h, w, c) gradient and
    activation and returns (map (h, w), the size of its terms (h, w), for the rounding test)."""

    layers: tuple[str, ...] | None = None
    combine: Any = None  # a function (maps, level) -> map; None: normalised_sum
    chunk: int | None = None  # targets per backward batch
    # "bilinear": cells on the centres of the regions they stand for (``upsample``); "nearest": each output
    # pixel takes cell floor(i * h / H), as torch's F.interpolate(mode="nearest") (Captum's Guided Grad-CAM)
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.interpolation not in ("bilinear", "nearest"):
            raise SaliencyError(f"interpolation is 'bilinear' or 'nearest', got {self.interpolation!r}")
        if self.combine is None:
            object.__setattr__(self, "combine", normalised_sum)
        if not callable(self.combine):
            raise SaliencyError(f"combine is a function of the layers' maps and the target's level: "
                                f"saliency.normalised_sum, layer_sum, own_level or one of your own; got {self.combine!r}")

    def cam(self, g, a):
        raise NotImplementedError

    def default_layers(self, model) -> tuple[str, ...]:
        """The layers of ``layers=None`` on a detector: its source feature maps."""
        return source_maps(model)

    def compute(self, model, z, targets, params, preprocess, seed):
        if preprocess and model.spec.resize != "squash":
            raise SaliencyError(f"{self.name} maps in image space need a model that squashes the image to its input "
                                f"({model.spec.arch} resizes and crops); pass preprocess=False and network inputs")
        layers = self.layers or self.default_layers(model)
        if layers == ("sources",):
            layers = source_maps(model)
        if self.combine is own_level and (not model.spec.is_detector or layers != source_maps(model)
                                      or targets.kind not in ("detection", "box_coord")):
            raise SaliencyError(f"own_level keeps the map of the source feature map that predicts a detection: "
                                f"it needs a detector's source maps and detection or box_coordinate targets "
                                f"(got layers {layers}, {targets.kind} targets); use normalised_sum or layer_sum")
        out_hw = tuple(z.shape[1:3])
        _, tchunk = chunk_sizes(model, 1, targets.shape[1], out_hw)
        fn = _cam_program(model, targets.kind, targets.score, dataclasses.replace(self, layers=layers), layers,
                          preprocess, out_hw, int(self.chunk or tchunk))
        scores, maps = fn(params, z, _fields(targets))
        return Explanation(np.asarray(maps), np.asarray(scores), self)


@dataclasses.dataclass(frozen=True)
class GradCAM(CAM):
    """Grad-CAM: ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of dS/dA_k."""

    name = "gradcam"

    def cam(self, g, a):
        alpha = jnp.mean(g, axis=(0, 1))
        return jnp.einsum("hwc,c->hw", a, alpha), jnp.einsum("hwc,c->hw", jnp.abs(a), jnp.abs(alpha))


@dataclasses.dataclass(frozen=True)
class ODAM(CAM):
    """ODAM (Zhao & Chan 2023): ReLU(sum_k dS/dA_k * A_k), element-wise."""

    name = "odam"

    def cam(self, g, a):
        return jnp.sum(g * a, axis=-1), jnp.sum(jnp.abs(g * a), axis=-1)

    def default_layers(self, model):
        """``backbone_layers``, or the source feature maps with ``own_level`` (which picks one of them)."""
        return backbone_layers(model) if self.combine is not own_level else source_maps(model)


@dataclasses.dataclass(frozen=True)
class GuidedGradCAM(Method):
    """Guided Grad-CAM (Selvaraju et al. 2017, as Captum computes it): Guided Backprop times the Grad-CAM map
    of ``layer`` (a detector's default: its source maps, added) up-sampled by nearest cells."""

    layer: str | None = None
    chunk: int | None = None
    name = "guided_gradcam"

    def compute(self, model, z, targets, params, preprocess, seed):
        layers = None if self.layer is None else (self.layer,)
        cam = GradCAM(layers, layer_sum, self.chunk, "nearest").compute(model, z, targets, params, preprocess, seed)
        guided = GuidedBackprop().compute(model, z, targets, params, preprocess, seed)
        return Explanation(guided.attributions * cam.attributions[..., None], guided.scores, self)


@dataclasses.dataclass(frozen=True)
class DRISE(Method):
    """D-RISE (Petsiuk et al. 2021), detections only (see the module's docstring)."""

    masks: int = 1000
    cell: int = 16
    p: float = 0.5
    chunk: int | None = None
    name = "drise"

    def compute(self, model, z, targets, params, preprocess, seed):
        if not model.spec.is_detector:
            raise SaliencyError("D-RISE explains detections; for a classifier use gradient(), gradcam(layer), ...")
        if callable(targets.kind) or targets.kind not in ("detection", "box_label"):
            raise SaliencyError(f"D-RISE explains a detection or a box with a label, not a {targets.kind} target; "
                                "use detection(...)/detections(...) or box_label(...)")
        out_hw = tuple(z.shape[1:3])
        if self.cell > max(out_hw):
            raise SaliencyError(f"D-RISE's cell of {self.cell} pixels is larger than the {out_hw[1]}x{out_hw[0]} image: "
                                f"every mask would be one flat cell; give a cell of at most {max(out_hw)} pixels (16 "
                                "by default)")
        chunk, _ = chunk_sizes(model, self.masks, 1, out_hw, backward=False)
        chunk = int(self.chunk or chunk)
        keys = jax.random.split(jax.random.key(seed), targets.shape[0])
        fn = _drise_program(model, dataclasses.replace(self, chunk=None, p=0.5), preprocess, out_hw, chunk)
        scores, maps = fn(params, z, _fields(targets), keys, jnp.asarray(self.p, z.dtype))
        return Explanation(np.asarray(maps), np.asarray(scores), self)


@dataclasses.dataclass(frozen=True)
class Occlusion(Method):
    """Occlusion (Zeiler & Fergus 2014, as Captum computes it): a ``window`` x ``window`` square of every colour
    channel set to ``baseline`` at starts 0, ``stride``, 2 ``stride``, ... up to the last one that reaches the
    image's edge (cut there); each pixel's attribution is the mean, over the windows that cover it, of the
    target's drop S(image) - S(occluded image). Windows run in chunks inside one compiled program."""

    window: int = 16
    stride: int = 8
    baseline: float = 0.0
    chunk: int | None = None
    name = "occlusion"

    def compute(self, model, z, targets, params, preprocess, seed):
        h, w = (int(v) for v in z.shape[1:3])
        if self.window > min(h, w):
            raise SaliencyError(f"occlusion's window of {self.window} pixels is larger than the {w}x{h} image; give "
                                f"a window of at most {min(h, w)} pixels")
        starts = tuple(tuple(range(0, -(-(n - self.window) // self.stride) * self.stride + 1, self.stride))
                       for n in (h, w))
        return _slide(self, model, z, targets, params, preprocess, self.window, starts)


def _slide(method, model, z, targets, params, preprocess, window: int, starts) -> "Explanation":
    """``method``'s squares of ``window`` pixels at the ``starts`` (rows, columns) set to its baseline in turn:
    each pixel's mean drop of the targets over the squares that cover it (``_occlusion_program``)."""
    h, w = (int(v) for v in z.shape[1:3])
    chunk, _ = chunk_sizes(model, len(starts[0]) * len(starts[1]), 1, (h, w), backward=False)
    fn = _occlusion_program(model, targets.kind, targets.score, preprocess, (h, w), window, starts,
                            int(method.chunk or chunk))
    scores, maps = fn(params, z, _fields(targets), jnp.asarray(method.baseline, z.dtype))
    return Explanation(np.asarray(maps), np.asarray(scores), method)


@dataclasses.dataclass(frozen=True)
class FeatureAblation(Method):
    """Feature ablation over a grid (Captum's FeatureAblation with a grid feature mask): the image cut into
    ``cell`` x ``cell`` squares from its top-left corner (the last ones cut at the edges), each square of every
    colour channel set to ``baseline`` in turn; each pixel's attribution is its square's drop of the target,
    S(image) - S(image with the square ablated). Squares run in chunks inside one compiled program."""

    cell: int = 16
    baseline: float = 0.0
    chunk: int | None = None
    name = "feature_ablation"

    def compute(self, model, z, targets, params, preprocess, seed):
        h, w = (int(v) for v in z.shape[1:3])
        if self.cell > max(h, w):
            raise SaliencyError(f"feature ablation's cell of {self.cell} pixels is larger than the {w}x{h} image; give "
                                f"a cell of at most {max(h, w)} pixels")
        starts = (tuple(range(0, h, self.cell)), tuple(range(0, w, self.cell)))
        return _slide(self, model, z, targets, params, preprocess, self.cell, starts)


def _layers(layers) -> tuple[str, ...] | None:
    if layers is None:
        return None
    return (layers,) if isinstance(layers, str) else tuple(layers)


def gradient() -> Gradient:
    return Gradient()


def guided_backprop() -> GuidedBackprop:
    return GuidedBackprop()


def deconvnet() -> DeconvNet:
    return DeconvNet()


def grad_x_input() -> GradXInput:
    return GradXInput()


def smoothgrad(method=None, samples: int = 25, noise: float = 0.15, chunk: int | None = None) -> SmoothGrad:
    """``method`` (any gradient method: gradient() by default, grad_x_input(), integrated(...), one of your
    own) averaged over ``samples`` noisy copies of the image."""
    method = Gradient() if method is None else method
    if not isinstance(method, GradientMethod):
        raise SaliencyError(f"smoothgrad averages a gradient method (gradient(), grad_x_input(), integrated(...)), "
                            f"got {method!r}")
    if int(samples) < 1:
        raise SaliencyError(f"smoothgrad needs samples >= 1, got {samples}")
    if not (np.isfinite(noise) and float(noise) >= 0):
        raise SaliencyError(f"smoothgrad's noise is a standard deviation, a fraction of the input's range (0.15 by "
                            f"default; 0 gives the plain map); got {noise}")
    return SmoothGrad(method, int(samples), float(noise), check_chunk("smoothgrad", chunk, "noisy copies"))


def integrated(steps: int = 64, baseline=None, chunk: int | None = None) -> Integrated:
    if int(steps) < 1:
        raise SaliencyError(f"integrated needs steps >= 1, got {steps}")
    return Integrated(int(steps), baseline, check_chunk("integrated", chunk, "path points"))


def gradcam(layer=None, combine=None, chunk: int | None = None) -> GradCAM:
    """Grad-CAM on ``layer`` (a name or several; None or ``"sources"``: a detector's source feature maps,
    ``source_maps``)."""
    return GradCAM(_layers(layer), combine, check_chunk("gradcam", chunk, "targets"))


def odam(layers=None, combine=None, chunk: int | None = None) -> ODAM:
    """ODAM on ``layers`` (a name or several; None: a detector's ``backbone_layers``, or its source feature maps
    with ``combine=own_level``; ``"sources"``: its source feature maps, ``source_maps``)."""
    return ODAM(_layers(layers), combine, check_chunk("odam", chunk, "targets"))


MAX_CELL = 4096  # D-RISE's mask grid is up-sampled by the cell size; compute() also bounds it by the image


def guided_gradcam(layer: str | None = None, chunk: int | None = None) -> GuidedGradCAM:
    return GuidedGradCAM(layer, check_chunk("guided_gradcam", chunk, "targets"))


def drise(masks: int = 1000, cell: int = 16, p: float = 0.5, chunk: int | None = None) -> DRISE:
    if int(masks) < 1 or not 1 <= int(cell) <= MAX_CELL or not 0.0 < float(p) < 1.0:
        raise SaliencyError(f"drise needs masks >= 1, cell from 1 to {MAX_CELL} pixels and 0 < p < 1; got {masks}, "
                            f"{cell}, {p}")
    return DRISE(int(masks), int(cell), float(p), check_chunk("drise", chunk, "masks"))



def occlusion(window: int = 16, stride: int = 8, baseline: float = 0.0, chunk: int | None = None) -> Occlusion:
    if int(window) < 1 or not 1 <= int(stride) <= int(window) or not np.isfinite(baseline):
        raise SaliencyError(f"occlusion needs a window of at least 1 pixel, a stride from 1 to the window and a finite "
                            f"baseline; got window {window}, stride {stride}, baseline {baseline}")
    return Occlusion(int(window), int(stride), float(baseline), check_chunk("occlusion", chunk, "patches"))


def feature_ablation(cell: int = 16, baseline: float = 0.0, chunk: int | None = None) -> FeatureAblation:
    if int(cell) < 1 or not np.isfinite(baseline):
        raise SaliencyError(f"feature_ablation needs a cell of at least 1 pixel and a finite baseline; got cell {cell}, "
                            f"baseline {baseline}")
    return FeatureAblation(int(cell), float(baseline), check_chunk("feature_ablation", chunk, "patches"))


# ----------------------------------------------------------------------------------------------- targets


def logit(logits, c):
    """A class's score as its logit S_c (the paper's)."""
    return logits[c]


def prob(logits, c):
    """A class's score as its softmax probability."""
    return jax.nn.softmax(logits)[c]


def log_prob(logits, c):
    """A class's score as its log-probability."""
    return jax.nn.log_softmax(logits)[c]




@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    """Targets of one kind with a leading (images, targets-per-image) shape, a pytree: ``fields`` maps
    field names (``class``, ``anchor``, ``coord``, ``box``, or a user's own) to arrays, the leaves; ``kind``
    (a built-in kind's name, or a user's function of the outputs, see ``target``) and ``score`` are static.
    A target passes through ``jit`` and ``vmap``, slices by images (``t[2:5]``) and concatenates
    (``Target.concatenate``)."""

    kind: Any
    fields: dict
    score: Any = None  # a class or detection target's score function of (logits, class): logit, prob, log_prob

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(next(iter(self.fields.values())).shape[:2])

    def tree_flatten(self):
        names = tuple(sorted(self.fields))
        return tuple(self.fields[n] for n in names), (self.kind, names, self.score)

    @classmethod
    def tree_unflatten(cls, aux, children):
        kind, names, score = aux
        return cls(kind, dict(zip(names, children)), score)

    def __getitem__(self, index) -> "Target":
        """The targets of the images ``index`` (a slice, or indices: the leading axis stays)."""
        index = index if isinstance(index, slice) else np.atleast_1d(np.asarray(index))
        return jax.tree.map(lambda a: a[index], self)

    def column(self, k: int) -> "Target":
        """The ``k``-th target of every image, a Target of shape (images, 1)."""
        return jax.tree.map(lambda a: a[:, k:k + 1], self)

    @classmethod
    def concatenate(cls, parts) -> "Target":
        """The targets of ``parts`` (of one kind and score) one image after another."""
        parts = list(parts)
        if len({(p.kind, p.score, tuple(sorted(p.fields))) for p in parts}) != 1:
            raise SaliencyError("only targets of one kind, score and fields concatenate.")
        return jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *parts)


_NEEDS = {"class": ("class",), "detection": ("anchor", "class"), "box_coord": ("anchor", "coord"),
          "box_label": ("box", "class")}


def _target(kind: str, fields: dict, score=None) -> Target:
    if score is not None and not callable(score):
        raise SaliencyError(f"a target's score is a function (logits, class) -> scalar: saliency.logit, prob, "
                            f"log_prob or one of your own; got {score!r}")
    t = {}
    for k, v in fields.items():
        a = np.asarray(v)
        t[k] = a.astype(np.int32) if k in ("class", "anchor", "coord") else a.astype(np.float32)
    lead = {k: a.shape[:2] for k, a in t.items()}
    if any(a.ndim < 2 for a in t.values()) or len(set(lead.values())) != 1:
        raise SaliencyError(f"targets need a leading (images, targets) shape; got "
                            f"{ {k: tuple(v.shape) for k, v in t.items()} }")
    return Target(kind, t, score)


def class_score(classes, score=logit) -> Target:
    """Class ``classes[n, k]`` of a classifier for image n, scored by ``score`` (``logit``, ``prob``,
    ``log_prob``, or a function of your own of (logits, class))."""
    return _target("class", {"class": classes}, score)


def detection(anchors, classes, score=logit) -> Target:
    """The class score of default box ``anchors[n, k]`` for class ``classes[n, k]``."""
    return _target("detection", {"anchor": anchors, "class": classes}, score)


def box_coordinate(anchors, coords) -> Target:
    """Decoded coordinate ``coords[n, k]`` (0..3: x1, y1, x2, y2, input pixels) of a default box."""
    return _target("box_coord", {"anchor": anchors, "coord": coords})


def box_label(boxes, classes) -> Target:
    """Why a ``classes[n, k]`` in box ``boxes[n, k]`` (xyxy, network-input pixels)."""
    return _target("box_label", {"box": boxes, "class": classes})


def target(value, **fields) -> Target:
    """A target of your own: ``value(model, outputs, fields)`` is the scalar to explain for one image and one
    target, from that image's ``outputs`` (``model.apply``'s, with a batch axis of 1) and ``fields`` (that
    target's entries of each field); each field is an array with a leading (images, targets) shape. Every
    gradient method and Grad-CAM / ODAM explain it, for classifiers and detectors alike.

    Example:

    ```python
    import numpy as np
    import jaxvis
    from jaxvis import assets, saliency as sal
    from jaxvis.data import shapes

    def margin(model, outputs, fields):                  # why class c rather than class other
        logits = model.class_logits(outputs)[0]
        return logits[fields["c"]] - logits[fields["other"]]

    model = jaxvis.load(assets.path("classifier"))
    images, _, _ = shapes.classification_set(0, 2)
    why = sal.target(margin, c=np.zeros((2, 1), int), other=np.full((2, 1), 5))
    print(sal.gradient().attribute(model, images, why).reduce().shape)
    ```
    """
    if not callable(value):
        raise SaliencyError(f"a target's value is a function (model, outputs, fields) -> scalar; got {value!r}.")
    arrays = {k: np.asarray(v) for k, v in fields.items()}
    if not arrays or any(a.ndim < 2 for a in arrays.values()) or len({a.shape[:2] for a in arrays.values()}) != 1:
        raise SaliencyError(f"a target's fields are arrays with one leading (images, targets) shape; got "
                            f"{ {k: tuple(a.shape) for k, a in arrays.items()} }")
    return Target(value, arrays)


def detections(det: dict[str, Any], index, score=logit) -> Target:
    """Detections chosen by ``index`` ((N, K) ranks) from ``Detector.detect``'s output."""
    t = detection_targets(det, index)
    return detection(t["anchor"], t["class"], score)


# ----------------------------------------------------------------------------------------------- results


@dataclasses.dataclass
class Explanation:
    """``attributions``: (N, K, H, W, 3) (gradient family) or (N, K, H, W) (CAMs, D-RISE); ``scores`` (N, K)."""

    attributions: np.ndarray
    scores: np.ndarray
    method: Any

    def reduce(self, how=None) -> np.ndarray:
        """The maps with their channels reduced by ``how`` (default ``max_abs``, the paper's; see
        ``reduce_channels``)."""
        return np.asarray(reduce_channels(self.attributions, max_abs if how is None else how))

    @property
    def has_channels(self) -> bool:
        return self.attributions.ndim == 5


def _xp(g):
    return np if isinstance(g, np.ndarray) else jnp


def max_abs(g):
    """The largest |g| over the colour channels (the paper's)."""
    return _xp(g).max(_xp(g).abs(g), axis=-1)


def sum_abs(g):
    """The sum of |g| over the colour channels."""
    return _xp(g).sum(_xp(g).abs(g), axis=-1)


def l2_norm(g):
    """The Euclidean norm of g over the colour channels."""
    return _xp(g).sqrt(_xp(g).sum(_xp(g).square(g), axis=-1))


def signed_sum(g):
    """The sum of g over the colour channels, its sign kept."""
    return _xp(g).sum(g, axis=-1)


def reduce_channels(g, how=max_abs):
    """(..., H, W, 3) attributions reduced over the channels by ``how``, a function of the (..., 3) array:
    ``max_abs`` (the paper's), ``sum_abs``, ``l2_norm``, ``signed_sum`` or one of your own; None keeps them.
    Maps without a channel axis (CAMs, D-RISE; ndim 4) pass through."""
    if how is not None and not callable(how):
        raise SaliencyError(f"how is a function of the attributions that reduces their last (channel) axis: "
                            f"saliency.max_abs, sum_abs, l2_norm, signed_sum, one of your own, or None; got {how!r}")
    if getattr(g, "ndim", 5) == 4 or how is None:
        return g
    return how(g)


# ----------------------------------------------------------------------------------------------- scores


def target_value(model, outputs, t: dict[str, jax.Array], kind, score) -> jax.Array:
    """The scalar target ``t`` (one image's entries of a Target's arrays) of one image's outputs (batch
    axis of 1); what every method differentiates, and what the metrics measure. ``kind`` may be a user's
    function (``target``)."""
    if callable(kind):
        return kind(model, outputs, t)
    if kind == "class":
        logits = model.class_logits(outputs)[0]
        c = t["class"]
    elif kind in ("detection", "box_coord", "box_label"):
        logits = model.class_logits(outputs)[0]
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
    return score(logits, c)


# ----------------------------------------------------------------------------------------------- memory


def _per_image_bytes(model, out_hw) -> int:
    """A conservative estimate of one forward and backward pass's memory (as jaxvis.engine estimates it),
    plus the image-sized buffers of the output grid."""
    from jaxvis.engine import bytes_per_point

    return bytes_per_point(model, 0) + 8 * int(np.prod(out_hw)) * 3 * 4


def _forward_bytes(model, out_hw) -> int:
    """One forward pass's memory when nothing is kept for a backward pass (D-RISE): the widest layer's input
    and output live at once, every other activation is freed as soon as the next layer has read it; plus
    the image-sized buffers of the output grid (the mask, the masked image, the map's share)."""
    widest = max(int(np.prod(shape)) * 4 for shape in activation_shapes(model).values())
    return 2 * widest + 8 * int(np.prod(out_hw)) * 3 * 4


def _budget() -> int:
    from jaxvis.engine import available_memory

    return int(min(MEMORY_BUDGET, available_memory(jax.devices()[0]) // 4))


def check_chunk(name: str, chunk, unit: str) -> int | None:
    """``chunk`` as every method takes it: None (sized to the free memory, ``chunk_sizes``) or a whole number of at
    least 1 of ``unit`` per pass; anything else is refused with ``name`` (the method's) in the message."""
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise SaliencyError(f"{name}'s chunk is a positive whole number of {unit} per pass, or None (sized to the free "
                            f"memory); got {chunk!r}")
    return int(chunk)


def chunk_sizes(model, n_points: int, n_targets: int, out_hw, backward: bool = True) -> tuple[int, int]:
    """(points per chunk, targets per backward batch) that fit the memory budget: each point (a noisy
    copy, a path step, a masked image) costs one pass, each target in flight one more backward pass.
    Without ``backward`` (D-RISE) a point costs one forward pass, which keeps no activations, and the
    chunks are evened out so that the last one is not mostly padding."""
    budget = _budget()
    if not backward:
        n = max(n_points, 1)
        most = int(np.clip(budget // _forward_bytes(model, out_hw), 1, n))
        return -(-n // -(-n // most)), n_targets
    per = _per_image_bytes(model, out_hw)
    targets = int(np.clip(budget // (2 * per), 1, max(n_targets, 1)))
    points = int(np.clip(budget // (per * (1 + targets)), 1, max(n_points, 1)))
    return points, targets


# Host memory that explaining one image costs at its full resolution, beyond the model's passes (whose
# chunks are sized to the free memory above): the image, its map, the heat-map picture, the derived box and
# the metrics' copies. Measured with experiments.saliency on a 2000x2000 image: 156 (gradient) to 223
# (Grad-CAM with deletion and insertion) bytes a pixel.
IMAGE_BYTES_PER_PIXEL = 256


def check_image_memory(paths, sizes) -> list[str]:
    """Before any work on images of ``sizes`` ((height, width) each, read from ``paths``' headers): raises
    SaliencyError for an image whose full-resolution maps and pictures would not fit in half of the free host
    memory (the other half is the model's), saying the size that fits; returns a note stating the need of
    each image that takes more than 1 GiB."""
    from jaxvis.engine import available_memory
    from jaxvis.fileio import human_bytes

    free = available_memory(jax.devices("cpu")[0])
    held = 12 * sum(h * w for h, w in sizes)  # every image is held as float32 RGB while the run lasts
    notes = []
    for path, (h, w) in zip(paths, sizes):
        name = os.path.basename(os.fspath(path))
        need = held + IMAGE_BYTES_PER_PIXEL * h * w
        if need > free // 2:
            fits = max(0, free // 2 - held + 12 * h * w) // (IMAGE_BYTES_PER_PIXEL + 12)
            raise SaliencyError(f"{name} is {w}x{h} ({h * w / 1e6:.1f} megapixels): explaining it at its resolution "
                                f"takes about {human_bytes(need)} of memory, more than half of the {human_bytes(free)} "
                                f"free (the other half is the model's); downscale it to at most {fits / 1e6:.1f} "
                                "megapixels (or explain fewer images at once).")
        if need > 2**30:
            notes.append(f"{name} is {w}x{h}: its maps and pictures at full resolution take about {human_bytes(need)} "
                         f"of memory ({human_bytes(free)} free).")
    return notes


# ----------------------------------------------------------------------------------------------- programs


def _forward(model, preprocess: bool):
    """``forward(params, z, taps=None)``: (outputs, activations) of one image ``z`` (the network's input, or
    an image through the preprocessing); ``taps``, zero tensors by activation name, are added where those
    activations are made (``jaxvis.models.taps``), so that the gradient with respect to them is dS/dA."""
    def forward(params, z, taps=None):
        x = pre.preprocess(model.spec, z) if preprocess else z
        return model.apply(params if taps is None else {**params, TAPS: taps}, x[None])

    return forward


def _map(fn, xs, batch: int):
    """lax.map over the leading axis in batches of ``batch`` (vmap when one batch holds all)."""
    n = jax.tree.leaves(xs)[0].shape[0]
    if batch >= n:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=batch)


def _accumulate(fn, n: int, chunk: int, like):
    """sum_i fn(i) for i < n, computed ``chunk`` indices at a time inside one loop."""
    count = -(-n // chunk)

    def body(c, acc):
        idx = c * chunk + jnp.arange(chunk)
        values = jax.vmap(fn)(jnp.minimum(idx, n - 1))
        w = (idx < n).astype(acc.dtype)
        return acc + jnp.tensordot(w, values, axes=1)

    return jax.lax.fori_loop(0, count, body, jnp.zeros(like.shape, like.dtype))


def _head_layout(model, kind: str):
    """Where a one-box target sits in SSD's heads, when the model has them: per source map ``map<k>``,
    (first output row, rows, columns, boxes per cell) of its ``cls_head_<k>`` and ``box_head_<k>``, 3x3
    convolutions of stride 1 and padding 1 (jaxvis.models.ssd). None for other models and for targets
    that read every box (box_label)."""
    if callable(kind) or kind not in ("detection", "box_coord") or not getattr(model.spec, "is_detector", False):
        return None
    heads = model.params.get("params", {}) if hasattr(model.params, "get") else {}
    per = model.spec.config.get("anchors_per_location")
    sizes = getattr(model, "feature_sizes", None)
    if per is None or sizes is None or len(per) != len(sizes):
        return None
    k = model.spec.config["num_classes"]
    starts = (0,) + tuple(model.head_ends[:-1])
    layout = []
    for i, ((h, w), a) in enumerate(zip(sizes, per)):
        cls, box = heads.get(f"cls_head_{i}", {}).get("kernel"), heads.get(f"box_head_{i}", {}).get("kernel")
        if cls is None or box is None or cls.shape[:2] != (3, 3) or cls.shape[3] != a * k or box.shape[:2] != (3, 3) \
                or box.shape[3] != a * 4:
            return None
        layout.append((int(starts[i]), int(h), int(w), int(a)))
    return tuple(layout)


def _head_vjp(params, layout, anchor, g_cls, g_box):
    """d target / d map<k> for every source map, for a target whose cotangent on the head outputs is
    ``g_cls`` (classes,) and ``g_box`` (4,) in the row of default box ``anchor`` and zero elsewhere.

    Output (y, x) of a 3x3 convolution with padding 1 reads inputs (y-1 … y+1, x-1 … x+1) through the kernel,
    so the gradient of that one output is the kernel contracted with its cotangent, put at those nine cells:
    nine small matrix-vector products instead of the heads' transposed convolutions over the whole maps."""
    heads = params["params"]
    grads = []
    for i, (start, h, w, a) in enumerate(layout):
        row = jnp.asarray(anchor - start, jnp.int32)
        on = (row >= 0) & (row < h * w * a)
        row = jnp.clip(row, 0, h * w * a - 1)
        cell, box = row // a, row % a
        y, x = cell // w, cell % w
        wc, wb = heads[f"cls_head_{i}"]["kernel"], heads[f"box_head_{i}"]["kernel"]
        k = g_cls.shape[0]
        vc = jax.lax.dynamic_update_slice(jnp.zeros((a * k,), g_cls.dtype), g_cls, (box * k,))
        vb = jax.lax.dynamic_update_slice(jnp.zeros((a * 4,), g_box.dtype), g_box, (box * 4,))
        patch = jnp.einsum("hwio,o->hwi", wc, vc) + jnp.einsum("hwio,o->hwi", wb, vb)
        padded = jax.lax.dynamic_update_slice(jnp.zeros((h + 2, w + 2, wc.shape[2]), patch.dtype),
                                              jnp.where(on, patch, 0.0), (y, x, jnp.zeros_like(y)))
        grads.append(padded[None, 1:h + 1, 1:w + 1])
    return tuple(grads)


@cached_on_model
def _gradient_program(model, kind, score, method, preprocess: bool, chunk: int, tchunk: int):
    """One jitted function computing every gradient-family attribution of a batch."""
    forward = _forward(model, preprocess)
    layout = _head_layout(model, kind)

    def grads_at(params, z, targets):
        """Scores and gradients of every target of one image at one point z: one forward, K backward.

        On SSD with one-box targets the backward passes start at the source maps: the heads' part of each
        target's gradient is a few small products (``_head_vjp``), not the transposed head convolutions."""
        if layout is None:
            outputs, vjp = jax.vjp(lambda z_: forward(params, z_)[0], z)

            def one(t):
                value, g_out = jax.value_and_grad(lambda o: target_value(model, o, t, kind, score))(outputs)
                return value, vjp(g_out)[0]

            return _map(one, targets, tchunk)

        def maps_of(z_):
            outputs, acts = forward(params, z_)
            return tuple(acts[f"map{i}"] for i in range(len(layout))), outputs

        _, vjp, outputs = jax.vjp(maps_of, z, has_aux=True)

        def one(t):
            value, g_out = jax.value_and_grad(lambda o: target_value(model, o, t, kind, score))(outputs)
            a = t["anchor"]
            g_maps = _head_vjp(params, layout, a, g_out["cls_logits"][0, a], g_out["bbox_regression"][0, a])
            return value, vjp(g_maps)[0]

        return _map(one, targets, tchunk)

    def per_image(params, z, targets, data, key):
        scores, g = grads_at(params, z, targets)
        return scores, method.combine(lambda zi: grads_at(params, zi, targets)[1], z, g, key, data, chunk)

    @jax.jit
    def run(params, z, targets, data, keys):
        global TRACES
        TRACES += 1
        return jax.vmap(lambda zi, ti, di, ki: per_image(params, zi, ti, di, ki))(z, targets, data, keys)

    return run


def source_maps(model) -> tuple[str, ...]:
    """A detector's source feature maps, the maps its heads read (``map0`` … ``map5`` for SSD300: conv4_3 after
    the L2 norm, fc7, conv8_2 … conv11_2)."""
    if not model.spec.is_detector:
        raise SaliencyError("Grad-CAM and ODAM on a classifier need a layer: e.g. gradcam('conv5_2')")
    return tuple(f"map{i}" for i in range(len(model.spec.config["anchors_per_location"])))


def backbone_layers(model) -> tuple[str, ...]:
    """ODAM's default layers on an SSD: the last activation that every head depends on, the last convolution of
    VGG block 4 (``conv4_3``, stride 8), and the first source map (``map0``, that activation after the L2
    norm). The first head reads conv4_3 only through the norm, which is scale-invariant, so
    sum_k A_k dS/dA_k = 0 at every cell and ODAM on conv4_3 is zero for its detections; they are explained on
    map0 (same cells), the others on conv4_3 (map0's map is zero for them: no other head reads it)."""
    source_maps(model)  # a detector
    return f"conv4_{len(model.spec.config['blocks'][3])}", "map0"


@cached_on_model
def activation_shapes(model) -> dict[str, tuple[int, ...]]:
    """The shape of every activation ``model.apply`` returns for one image of the model's input size, by name,
    in the order the network makes them."""
    _, acts = jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct(model.input_shape(1), jnp.float32))
    return {name: tuple(a.shape) for name, a in acts.items()}


def check_layers(model, layers: tuple[str, ...]) -> None:
    names = list(activation_shapes(model))
    for layer in layers:
        if layer not in names:
            raise SaliencyError(f"{model.spec.arch} has no activation {layer!r}; it has {names}")


def _interpolation(n_out: int, n_in: int, scale: float) -> np.ndarray:
    """(n_out, n_in) bilinear weights that put input cell i's centre at output coordinate (i + 0.5) * scale
    (pixel p spans [p, p + 1)), linear between cell centres and constant beyond the outermost ones."""
    u = np.clip((np.arange(n_out) + 0.5) / scale - 0.5, 0.0, n_in - 1)
    i0 = np.floor(u).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = u - i0
    r = np.zeros((n_out, n_in))
    np.add.at(r, (np.arange(n_out), i0), 1.0 - w)
    np.add.at(r, (np.arange(n_out), i1), w)
    return r


def upsample(m: jax.Array, hw, scale=None) -> jax.Array:
    """Bilinear up-sampling of an (h, w) map to ``hw`` that puts cell (i, j)'s centre at output pixel
    coordinates ((i + 0.5) * sy, (j + 0.5) * sx), with ``scale = (sy, sx)`` output pixels per cell. The
    default, ``(H / h, W / w)``, is half-pixel centres (``jax.image.resize``, torch's
    ``F.interpolate(align_corners=False)``); an SSD source map takes its default boxes' step instead (see
    ``cell_scale``), so that each cell lands on the centre of its default boxes."""
    h, w = m.shape
    hh, ww = int(hw[0]), int(hw[1])
    sy, sx = (hh / h, ww / w) if scale is None else (float(scale[0]), float(scale[1]))
    if (h, w) == (hh, ww) and (sy, sx) == (1.0, 1.0):
        return m
    ry = jnp.asarray(_interpolation(hh, h, sy), m.dtype)
    rx = jnp.asarray(_interpolation(ww, w, sx), m.dtype)
    return ry @ m @ rx.T


def cell_scale(model, layer: str, shape, out_hw) -> tuple[float, float]:
    """Output pixels per cell of activation ``layer`` (spatial ``shape``) mapped onto an ``out_hw`` grid.

    A detector's source map ``map{k}``: the default boxes' step (their centres are ``(i + 0.5) * step`` input
    pixels). Another activation of a detector: its stride, the power of two nearest to input size / map size
    when within 5 % of it (behind 2 x 2, stride-2 poolings, floor or ceil mode, cell i is centred on
    ``(i + 0.5) * 2^k`` input pixels: SSD300's 38 x 38 conv4_3 has stride 8, not 300 / 38). Both are scaled from
    the network input to ``out_hw``. Any other layer (a classifier's, or anchors without steps): the ratio of
    the sizes, i.e. half-pixel centres."""
    h, w = shape
    oh, ow = out_hw
    if not model.spec.is_detector:
        return oh / h, ow / w
    ih, iw = model.spec.input_size
    steps = (model.spec.detection or {}).get("anchors", {}).get("steps")
    if layer.startswith("map") and layer[3:].isdigit():
        if steps is None or int(layer[3:]) >= len(steps):
            return oh / h, ow / w
        sy = sx = float(steps[int(layer[3:])])
    else:
        sy, sx = (_stride(ih / h), _stride(iw / w))
    return sy * oh / ih, sx * ow / iw


def _stride(ratio: float) -> float:
    p = 2.0 ** round(np.log2(ratio))
    return p if abs(p - ratio) <= 0.05 * p else ratio


def source_level(model, anchors) -> jax.Array:
    """Index of the source feature map whose head predicts each default box in ``anchors``."""
    return jnp.searchsorted(jnp.asarray(model.head_ends), anchors, side="right")


@cached_on_model
def _cam_program(model, kind, score, method, layers: tuple[str, ...], preprocess: bool, out_hw, tchunk: int):
    check_layers(model, layers)
    forward_all = _forward(model, preprocess)

    def forward(params, z, deltas):
        # dS/dA of each layer A is the gradient with respect to a zero tap added where A is made
        outputs, acts = forward_all(params, z, deltas)
        return outputs, {k: acts[k] for k in layers}

    def per_image(params, z, targets):
        shapes = jax.eval_shape(lambda: forward(params, z, {k: 0.0 for k in layers})[1])
        zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
        outputs, vjp, acts = jax.vjp(lambda d: forward(params, z, d), zeros, has_aux=True)

        def one(t):
            value, g_out = jax.value_and_grad(lambda o: target_value(model, o, t, kind, score))(outputs)
            grads = vjp(g_out)[0]
            maps = []
            for k in layers:
                cam, size = method.cam(grads[k][0], acts[k][0])
                cam = jax.nn.relu(cam)
                # a map that is rounding error of its own terms is zero (ODAM through a scale-invariant layer)
                cam = jnp.where(jnp.max(cam) > ROUNDING * jnp.finfo(cam.dtype).eps * jnp.max(size), cam, 0.0)
                if method.interpolation == "nearest":
                    rows = np.arange(out_hw[0]) * cam.shape[0] // out_hw[0]
                    cols = np.arange(out_hw[1]) * cam.shape[1] // out_hw[1]
                    maps.append(cam[rows][:, cols])
                else:
                    maps.append(upsample(cam, out_hw, cell_scale(model, k, cam.shape, out_hw)))
            level = source_level(model, t["anchor"]) if method.combine is own_level else None
            return value, method.combine(maps, level)

        return _map(one, targets, tchunk)

    @jax.jit
    def run(params, z, targets):
        return jax.vmap(lambda zi, ti: per_image(params, zi, ti))(z, targets)

    return run


# ----------------------------------------------------------------------------------------------- D-RISE


def rise_mask(key, hw, cell: int, p) -> jax.Array:
    """One RISE mask (H, W) in [0, 1]: a grid of ceil(H/cell)+1 x ceil(W/cell)+1 cells kept with probability
    p, up-sampled bilinearly by ``cell`` and cropped at a random shift of 0 … cell-1 pixels."""
    h, w = hw
    gh, gw = -(-h // cell) + 1, -(-w // cell) + 1
    k1, k2, k3 = jax.random.split(key, 3)
    grid = (jax.random.uniform(k1, (gh, gw)) < p).astype(jnp.float32)
    up = jax.image.resize(grid, (gh * cell, gw * cell), method="bilinear", antialias=False)
    dy = jax.random.randint(k2, (), 0, cell)
    dx = jax.random.randint(k3, (), 0, cell)
    return jax.lax.dynamic_slice(up, (dy, dx), (h, w))


def proposals(model, outputs) -> tuple[jax.Array, jax.Array]:
    """Pre-NMS proposals of one image's outputs (batch axis of 1): decoded boxes (A, 4) clipped to the input
    and class probabilities (A, K)."""
    cfg = model.postprocess_config
    th, tw = model.spec.input_size
    anchors = jnp.asarray(model.anchors, outputs["bbox_regression"].dtype)
    boxes = bx.clip_to_image(bx.decode(outputs["bbox_regression"][0], anchors, cfg.box_weights, cfg.clamp_decode),
                             th, tw)
    return boxes, jax.nn.softmax(outputs["cls_logits"][0], axis=-1)


def drise_similarity(boxes, probs, target_boxes, target_vectors) -> jax.Array:
    """(K,) max over proposals of IoU x cosine(foreground probabilities) x (1 - background probability)."""
    fg = probs[:, 1:]
    overlap = bx.iou(target_boxes, boxes)                                            # (K, A)
    tv = target_vectors / jnp.maximum(jnp.linalg.norm(target_vectors, axis=-1, keepdims=True), 1e-12)
    cos = tv @ (fg / jnp.maximum(jnp.linalg.norm(fg, axis=-1, keepdims=True), 1e-12)).T
    return jnp.max(overlap * cos * (1.0 - probs[:, 0])[None], axis=-1)


def drise_reference(model, params, x, target: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Target boxes (K, 4) and foreground class vectors (K, C-1) of one image's targets in network input
    ``x`` (H, W, 3): a detection's decoded, clipped box and its class probabilities; for ``box_label``
    targets, the given box and the one-hot class."""
    outputs, _ = model.apply(params, x[None])
    boxes, probs = proposals(model, outputs)
    if "anchor" in target:
        return boxes[target["anchor"]], probs[target["anchor"], 1:]
    c = probs.shape[-1]
    return target["box"], jax.nn.one_hot(target["class"] - 1, c - 1, dtype=probs.dtype)


@cached_on_model
def _occlusion_program(model, kind, score, preprocess: bool, hw, window: int, starts, chunk: int):
    forward = _forward(model, preprocess)
    h, w = hw
    corners = np.array([(y, x) for y in starts[0] for x in starts[1]], np.int32)
    iy, ix = np.arange(h, dtype=np.int32)[:, None], np.arange(w, dtype=np.int32)[None, :]
    cover = sum(((iy >= y) & (iy < y + window) & (ix >= x) & (ix < x + window)).astype(np.float64)
                for y, x in corners)                      # how many windows cover each pixel

    def values(outputs, targets):
        return jax.vmap(lambda t: target_value(model, outputs, t, kind, score))(targets)

    def per_image(params, z, targets, baseline):
        base = values(forward(params, z)[0], targets)

        def one(i):
            y, x = jnp.asarray(corners)[i, 0], jnp.asarray(corners)[i, 1]
            m = ((iy >= y) & (iy < y + window) & (ix >= x) & (ix < x + window)).astype(z.dtype)
            occluded = z * (1 - m[..., None]) + baseline * m[..., None]
            drop = base - values(forward(params, occluded)[0], targets)
            return drop[:, None, None] * m[None]

        total = _accumulate(one, len(corners), chunk, jnp.zeros((base.shape[0], h, w), z.dtype))
        maps = total / jnp.asarray(cover, z.dtype)
        return base, jnp.broadcast_to(maps[..., None], maps.shape + (3,))

    @jax.jit
    def run(params, z, targets, baseline):
        return jax.vmap(lambda zi, ti: per_image(params, zi, ti, baseline))(z, targets)

    return run


@cached_on_model
def _drise_program(model, method: DRISE, preprocess: bool, out_hw, chunk: int):
    def per_image(params, z, target, key, p):
        x = pre.preprocess(model.spec, z) if preprocess else z
        tb, tv = drise_reference(model, params, x, target)
        clean = drise_similarity(*proposals(model, model.apply(params, x[None])[0]), tb, tv)

        def one(i):
            m = rise_mask(jax.random.fold_in(key, i), out_hw, method.cell, p)
            zi = z * m[..., None]
            xi = pre.preprocess(model.spec, zi) if preprocess else zi
            s = drise_similarity(*proposals(model, model.apply(params, xi[None])[0]), tb, tv)
            return s[:, None, None] * m[None]

        like = jnp.zeros((tb.shape[0],) + tuple(out_hw), z.dtype)
        total = _accumulate(one, method.masks, chunk, like)
        return clean, total / (method.masks * p)

    @jax.jit
    def run(params, z, targets, keys, p):
        return jax.vmap(lambda zi, ti, ki: per_image(params, zi, ti, ki, p))(z, targets, keys)

    return run


# ----------------------------------------------------------------------------------------------- entry point


def _check(model, z, target: Target):
    if callable(target.kind):
        _check_images(z, target)
        return
    if target.kind not in KINDS:
        raise SaliencyError(f"target kind must be one of {KINDS}, got {target.kind!r}")
    if target.kind != "class" and not model.spec.is_detector:
        raise SaliencyError(f"target kind {target.kind!r} is for detectors; {model.spec.arch} is a classifier")
    if target.kind == "class" and model.spec.is_detector:
        raise SaliencyError(f"{model.spec.arch} is a detector: use kind 'detection', 'box_coord' or 'box_label'")
    missing = [k for k in _NEEDS[target.kind] if k not in target.fields]
    if missing:
        raise SaliencyError(f"{target.kind} targets need {list(_NEEDS[target.kind])}; missing {missing}")
    _check_images(z, target)


def _check_images(z, target: Target):
    n = z.shape[0]
    if target.shape[0] != n:
        raise SaliencyError(f"targets need a leading (images, targets) shape with {n} images; got "
                            f"{ {k: tuple(v.shape) for k, v in target.fields.items()} }")


def _images(images, preprocess: bool) -> jax.Array:
    if not isinstance(preprocess, (bool, np.bool_)):
        raise SaliencyError(f"preprocess is True (the images are RGB in [0, 1], explained through the model's "
                            f"preprocessing) or False (they are network inputs); got {preprocess!r}")
    z = jnp.asarray(images)
    z = z if z.dtype == jnp.float64 else z.astype(jnp.float32)
    if z.ndim != 4 or z.shape[-1] != 3:
        raise SaliencyError(f"images must be shaped (N, H, W, 3), got {tuple(z.shape)}")
    if not isinstance(z, jax.core.Tracer):
        bad = int(z.size - jnp.isfinite(z).sum())
        if bad:
            raise SaliencyError(f"the images hold {bad} NaN or infinite value(s) of {z.size}; their gradients and "
                                "maps would be NaN: give finite pixels")
    return z


def _fields(targets: Target) -> dict[str, jax.Array]:
    """The arrays a program reads of ``targets``: a built-in kind's own fields, every field of a user's."""
    return {name: jnp.asarray(v) for name, v in targets.fields.items()
            if callable(targets.kind) or name in _NEEDS[targets.kind]}


def explain(model, images, targets: Target, method: Method | None = None, *, params=None, preprocess: bool = True,
            seed: int = 0) -> Explanation:
    """Attributions of ``targets`` (a ``Target``) for a batch of images (N, H, W, 3) by ``method`` (a
    ``Method`` value; default ``gradient()``): ``method.compute`` on the checked images and targets, with
    the model's parameters or ``params``, gradients in the image's pixels through the preprocessing or, with
    ``preprocess=False``, in the network input, random draws
    (SmoothGrad's noise, D-RISE's masks) from ``seed``.

    Example:

    ```python
    import jaxvis
    from jaxvis import assets, saliency as sal
    from jaxvis.data import shapes

    model = jaxvis.load(assets.path("classifier"))
    images, labels, boxes = shapes.classification_set(0, 4)
    why = sal.explain(model, images, sal.class_score(labels[:, None]), sal.smoothgrad(sal.gradient(), samples=8))
    print(why.attributions.shape, why.reduce().shape)   # (4, 1, 64, 64, 3) -> the paper's max over channels
    ```
    """
    method = Gradient() if method is None else method
    if isinstance(targets, dict):
        raise SaliencyError("targets are Target values, not dicts: class_score(classes), detections(det, index), "
                            "detection(anchors, classes), box_coordinate(...), box_label(...) or target(fn, ...); "
                            "the keyword form saliency(..., kind=..., method='...') is gone")
    if not isinstance(targets, Target):
        raise SaliencyError("targets must be a Target: class_score(...), detection(...), detections(det, index), "
                            "box_coordinate(...), box_label(...) or target(fn, ...)")
    if not isinstance(method, Method):
        raise SaliencyError(f"method is a value: gradient(), grad_x_input(), smoothgrad(...), integrated(...), "
                            f"gradcam(layer), odam(layers), drise(...) or a Method of your own; got {method!r}")
    z = _images(images, preprocess)
    _check(model, z, targets)
    return method.compute(model, z, targets, model.params if params is None else params, bool(preprocess), seed)


def saliency(model, images, targets: Target, method: Method | None = None, *, params=None, preprocess: bool = True,
             seed: int = 0, **removed) -> Explanation:
    """``explain``: saliency of ``targets`` for a batch of images by ``method`` (see the module docstring)."""
    if "space" in removed:
        raise SaliencyError("space= is now preprocess=: True (the default) for images in [0, 1] explained through the "
                            "model's preprocessing, False for network inputs")
    if removed:
        raise SaliencyError(f"saliency takes a Target and a method value; the keywords {sorted(removed)} are gone: "
                            f"saliency(model, images, class_score(c), smoothgrad(samples=..., noise=...)), then "
                            f"e.reduce(max_abs)")
    return explain(model, images, targets, method, params=params, preprocess=preprocess, seed=seed)


def top_k_classes(model, images, k: int, params=None, preprocess: bool = True) -> np.ndarray:
    """(N, k) indices of each image's k highest logits."""
    n = model.spec.num_classes
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise SaliencyError(f"top_k takes a number of classes from 1 to {n} ({model.spec.arch} has {n}); got {k!r}")
    x = pre.preprocess(model.spec, images) if preprocess else jnp.asarray(images)
    logits, _ = jax.jit(model.apply)(model.params if params is None else params, x)
    return np.asarray(jax.lax.top_k(logits, k)[1])


def detection_targets(detections: dict[str, Any], index) -> dict[str, np.ndarray]:
    """Targets for detections chosen by ``index`` ((N, K) ints into each image's detection list) from the
    output of ``Detector.detect``: the anchor behind each one and its label."""
    index = np.asarray(index)
    if index.ndim != 2:
        raise SaliencyError(f"detection index must be (images, detections) ints, got shape {index.shape}")
    anchors = np.take_along_axis(np.asarray(detections["anchor"]), index, axis=1)
    labels = np.take_along_axis(np.asarray(detections["labels"]), index, axis=1)
    valid = np.take_along_axis(np.asarray(detections["valid"]), index, axis=1)
    if not valid.all():
        raise SaliencyError("a requested detection does not exist (fewer detections than the index asks for)")
    return {"anchor": anchors, "class": labels}
