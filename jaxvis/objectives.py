"""Objectives for class-model visualisation: loss terms that are summed with weights.

A loss is ``sum_i w_i * term_i``; the sweep engine minimises it by gradient descent on the image, so a
term measures what should go *down*: ``score`` is the loss -S_c, whose descent raises the class score.
Weights are numbers, so a sweep over losses (which terms, how strongly) is one vmapped grid.

Each term is a pure function of a ``Context``: the model's outputs and named activations for the
current image, the image itself (in the network's input space, zero-centred; an image with an alpha
channel as it is reported, over its backdrop, and its opacity), and the grid point's
``target`` (a class index, or a channel index for activation terms) and target boxes.

| term | loss | for |
|---|---|---|
| ``score`` | -S_c, the unnormalised class score (the paper's objective) | classifiers |
| ``log_prob`` | -log softmax(S)_c | classifiers |
| ``inv_score`` | 1/S_c for S_c > eps; below eps the tangent at eps, 2/eps - S_c/eps^2 | classifiers |
| ``activation`` | minus a neuron (``position``) or the mean of a channel of ``layer`` | any model |
| ``sq`` | mean of x^2 over pixels and channels (the lab's penalty) | any model |
| ``l2`` | sum of x^2 (the paper's lambda ||I||^2) | any model |
| ``tv`` | total variation: mean |x[i+1,j]-x[i,j]| + |x[i,j+1]-x[i,j]| | any model |
| ``channel`` | minus the spatial mean of a channel of ``layer`` | any model |
| ``neuron`` | minus one unit (``position`` = (row, col)) of a channel of ``layer`` | any model |
| ``direction`` | minus the spatial mean of <activation, vector> at ``layer`` | any model |
| ``l2_to`` | mean of (x - image)^2: the pull towards a given image (network-input space) | any model |
| ``l2_start`` | mean of (x - start)^2: the pull towards the point's own start image (a sweep over start images: feature accentuation) | any model |
| ``opacity`` | mean opacity of an image with an alpha channel (the ``alpha`` parameterisation) | any model |
| ``biggest_box`` | -S_c at the largest default box | SSD |
| ``box_loc`` | smooth-L1 of the largest default box's regression against the first target box | SSD |
| ``all_boxes`` | -S_c averaged (or summed) over all default boxes | SSD |
| ``multibox`` | the MultiBox training criterion with the target boxes, all labelled c | SSD |
| ``head`` | -S_c averaged over the default boxes of one head (``layer`` = ``mapK``, the source map it reads) | SSD |
| ``opacity_outside`` | mean opacity weighted by the distance past the target boxes (0 in, 1 from 4 px out) | SSD |

``inv_score`` is 1/S_c where the score is positive and large enough; where S_c <= eps (eps = 1 unless
given) 1/S_c would have the wrong slope (or a pole at 0), so the term continues as its tangent line at
eps, which falls as S_c rises with slope -1/eps^2: for eps = 1 it acts like ``score`` there.

**Objectives as values.** ``score()``, ``log_prob()``, ``inv_score()``, ``channel(layer)``,
``neuron(layer, position=(row, col))``, ``direction(layer, vector)``, ``sq()``, ``l2()``, ``tv()``,
``l2_to(image)``, ``l2_start()``, ``opacity()``, ``opacity_outside()``, ``head(k)`` (and the detector terms
by name: ``term("multibox")``) are ``Objective`` values: they add, scale by numbers and negate, ``score() +
0.1 * sq()`` or ``channel("conv4_3", 7) + channel("conv5_1", 3)``, and know their name (``objective.name``:
``score+0.1*sq``). The class or channel is the grid point's target (a sweep axis) unless one is given
(``score(3)``, ``channel(layer, 7)``). An objective is a weighted sum of named terms: ``objective.loss`` is ``{term name: weight}``, a
loss variant of a ``Sweep`` (``Sweep(losses=[objective])``), so its weights stay per-point numbers.
Term names read back into terms (``channel:conv4_3[7]``, ``neuron:conv4_1@2,3``, ``score[3]``), which
is how the launcher's ``--loss`` text names them.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import boxes as bx
from jaxvis import multibox as mb
from jaxvis.parameterizations import Frozen


class ObjectiveError(ValueError):
    """An objective term that does not exist or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What a term sees for one grid point. ``outputs`` and activations carry a batch axis of 1."""

    outputs: Any
    acts: dict[str, jax.Array]
    x: jax.Array            # (H, W, 3) image in the network's input space
    target: jax.Array       # int scalar: class or channel index
    boxes: jax.Array        # (M, 4) target boxes in input pixels (detectors)
    box_valid: jax.Array    # (M,) bool
    start: jax.Array | None = None  # (H, W, 3) the point's start image (a sweep over start images), or None
    alpha: jax.Array | None = None  # (H, W) the image's opacity (the alpha parameterisation), or None
    image_boxes: jax.Array | None = None  # (M, 4) the target boxes on the image itself (``boxes``: on the view)


TermFn = Callable[[Context], jax.Array]


@dataclasses.dataclass(frozen=True)
class Term:
    """A named loss term; ``options`` are static (compiled in), the weight is a per-point number."""

    name: str
    fn: TermFn = dataclasses.field(compare=False)
    options: tuple = ()


def _logits(ctx: Context) -> jax.Array:
    return ctx.outputs[0]  # make_term gives classifier terms to classifiers only


def score_term(ctx: Context) -> jax.Array:
    return -_logits(ctx)[ctx.target]


def log_prob_term(ctx: Context) -> jax.Array:
    return -jax.nn.log_softmax(_logits(ctx))[ctx.target]


def inv_score_term(eps: float = 1.0) -> TermFn:
    def fn(ctx: Context) -> jax.Array:
        s = _logits(ctx)[ctx.target]
        safe = jnp.where(s > eps, s, 1.0)
        return jnp.where(s > eps, 1.0 / safe, 2.0 / eps - s / eps**2)
    return fn


def activation(layer: str, position: tuple[int, int] | None = None) -> TermFn:
    """Minus one neuron (``position`` = (row, col), channel = target) or minus a channel's spatial mean."""
    def fn(ctx: Context) -> jax.Array:
        try:
            a = ctx.acts[layer][0]
        except KeyError:
            raise ValueError(f"no activation named {layer!r}; the model has {', '.join(sorted(ctx.acts))}") from None
        if a.ndim == 1:
            return -a[ctx.target]
        channel = jnp.take(a, ctx.target, axis=-1)
        if position is None:
            return -jnp.mean(channel)
        return -channel[position[0], position[1]]
    return fn


def sq_term(ctx: Context) -> jax.Array:
    return jnp.mean(jnp.square(ctx.x))


def l2_term(ctx: Context) -> jax.Array:
    return jnp.sum(jnp.square(ctx.x))


def tv_term(ctx: Context) -> jax.Array:
    dy = jnp.abs(ctx.x[1:] - ctx.x[:-1])
    dx = jnp.abs(ctx.x[:, 1:] - ctx.x[:, :-1])
    return jnp.mean(dy) + jnp.mean(dx)


def opacity_term(ctx: Context) -> jax.Array:
    if ctx.alpha is None:
        raise ObjectiveError("the opacity term is the mean of the image's opacity channel, and this image has none; "
                             "add alpha to the parameterisation (e.g. fourier+decorrelated+sigmoid+alpha).")
    return jnp.mean(ctx.alpha)


OUTSIDE_MARGIN = 4.0  # px past a target box's edge over which opacity_outside's weight ramps from 0 to 1


def opacity_outside_term(ctx: Context) -> jax.Array:
    """The mean over the image of its opacity weighted by the distance outside the target boxes: 0 inside a
    box, ramping to 1 at ``OUTSIDE_MARGIN`` px past its edge (the slack of the random transforms)."""
    if ctx.alpha is None or ctx.image_boxes is None:
        raise ObjectiveError("opacity_outside weighs the opacity channel by the distance from the target boxes: it "
                             "needs an image with opacity (add alpha to the parameterisation) and target boxes (a "
                             "detector's sweep).")
    h, w = ctx.alpha.shape
    ys, xs = jnp.arange(h, dtype=jnp.float32) + 0.5, jnp.arange(w, dtype=jnp.float32) + 0.5
    b = ctx.image_boxes
    dy = jnp.maximum(jnp.maximum(b[:, None, 1] - ys, ys - b[:, None, 3]), 0.0)[:, :, None]
    dx = jnp.maximum(jnp.maximum(b[:, None, 0] - xs, xs - b[:, None, 2]), 0.0)[:, None, :]
    ramp = jnp.clip(jnp.maximum(dy, dx) / OUTSIDE_MARGIN, 0.0, 1.0)  # (M, H, W)
    outside = jnp.min(jnp.where(ctx.box_valid[:, None, None], ramp, 1.0), axis=0)
    return jnp.mean(ctx.alpha * outside)


def _detector_outputs(ctx: Context) -> dict[str, jax.Array]:
    return ctx.outputs  # make_term gives detector terms to detectors only


def biggest_box(anchors: np.ndarray) -> TermFn:
    index = int(np.argmax(np.asarray(bx.area(anchors))))

    def fn(ctx: Context) -> jax.Array:
        return -_detector_outputs(ctx)["cls_logits"][0, index, ctx.target]
    return fn


def box_loc(anchors: np.ndarray, weights=(10.0, 10.0, 5.0, 5.0)) -> TermFn:
    index = int(np.argmax(np.asarray(bx.area(anchors))))
    anchor = jnp.asarray(anchors[index])

    def fn(ctx: Context) -> jax.Array:
        pred = _detector_outputs(ctx)["bbox_regression"][0, index]
        goal = bx.encode(ctx.boxes[0], anchor, weights)
        return jnp.sum(mb.smooth_l1(pred - goal))
    return fn


def all_boxes(reduce: str = "mean") -> TermFn:
    if reduce not in ("mean", "sum"):
        raise ValueError(f"all_boxes reduce must be 'mean' or 'sum', got {reduce!r}")

    def fn(ctx: Context) -> jax.Array:
        s = _detector_outputs(ctx)["cls_logits"][0, :, ctx.target]
        return -(jnp.mean(s) if reduce == "mean" else jnp.sum(s))
    return fn


def head_boxes(model, layer: str) -> tuple[int, int]:
    """The rows (start, stop) of the default boxes that the head on source map ``layer`` (``mapK``) predicts:
    the heads' rows are concatenated in map order, each map's as (y, x, box)."""
    if not (layer.startswith("map") and layer[3:].isdigit()):
        raise ObjectiveError(f"a head is named by the source map it reads, map0 ... map"
                             f"{len(model.head_ends) - 1}; got {layer!r}.")
    k, ends = int(layer[3:]), model.head_ends
    if k >= len(ends):
        raise ObjectiveError(f"{model.spec.arch} has heads on map0 ... map{len(ends) - 1}; got {layer!r}.")
    return (ends[k - 1] if k else 0), ends[k]


def head_term(rows: tuple[int, int]) -> TermFn:
    start, stop = rows

    def fn(ctx: Context) -> jax.Array:
        return -jnp.mean(_detector_outputs(ctx)["cls_logits"][0, start:stop, ctx.target])
    return fn


def multibox(anchors: np.ndarray, cfg: mb.LossConfig = mb.LossConfig()) -> TermFn:
    anchors = np.asarray(anchors)

    def fn(ctx: Context) -> jax.Array:
        out = _detector_outputs(ctx)
        labels = jnp.full(ctx.box_valid.shape, ctx.target, jnp.int32)[None]
        terms = mb.multibox_loss(out["cls_logits"], out["bbox_regression"], jnp.asarray(anchors),
                                 ctx.boxes[None], labels, ctx.box_valid[None], cfg)
        return terms["total"]
    return fn


def _layer(ctx: Context, layer: str) -> jax.Array:
    try:
        return ctx.acts[layer][0]
    except KeyError:
        raise ValueError(f"no activation named {layer!r}; the model has {', '.join(sorted(ctx.acts))}") from None


def direction_term(layer: str, vector) -> TermFn:
    v = np.asarray(vector, np.float32)

    def fn(ctx: Context) -> jax.Array:
        a = _layer(ctx, layer)
        dots = jnp.tensordot(a, jnp.asarray(v), axes=([-1], [0]), precision=jax.lax.Precision.HIGHEST)
        return -jnp.mean(dots)
    return fn


def l2_to_term(image) -> TermFn:
    ref = np.asarray(image, np.float32)

    def fn(ctx: Context) -> jax.Array:
        return jnp.mean(jnp.square(ctx.x - jnp.asarray(ref)))
    return fn


def l2_start_term(ctx: Context) -> jax.Array:
    if ctx.start is None:
        raise ObjectiveError("the l2_start term pulls towards each point's start image, and this sweep has none; "
                             "give the sweep start images (Sweep(starts=...), --start_images).")
    return jnp.mean(jnp.square(ctx.x - ctx.start))


def _fixed_target(fn: TermFn, target: int) -> TermFn:
    def fixed(ctx: Context) -> jax.Array:
        return fn(dataclasses.replace(ctx, target=jnp.asarray(target, jnp.int32)))
    return fixed


CLASSIFIER_TERMS = ("score", "log_prob", "inv_score")
DETECTOR_TERMS = ("biggest_box", "box_loc", "all_boxes", "multibox", "head", "opacity_outside")
ANY_TERMS = ("activation", "sq", "l2", "tv", "channel", "neuron", "direction", "l2_to", "l2_start", "opacity")
TERMS = CLASSIFIER_TERMS + DETECTOR_TERMS + ANY_TERMS


def make_term(name: str, model, **options) -> Term:
    """The term ``name`` for ``model`` (a jaxvis Model), with static options:
    ``inv_score``: eps; ``activation``, ``channel``, ``neuron``: layer, position; ``direction``: layer,
    vector; ``l2_to``: image; ``all_boxes``: reduce; and ``target`` (a fixed class or channel instead of
    the point's) for score, log_prob, inv_score, activation, channel and neuron. A term named as an
    objective's term (``channel:conv4_3[7]``) is read back into its kind and options."""
    if name not in TERMS and not options:
        spec = parse_term_name(name)
        return dataclasses.replace(make_term(spec.kind, model, **dict(spec.options)), name=name)
    detector = model.spec.is_detector
    if name in CLASSIFIER_TERMS and detector:
        raise ObjectiveError(f"term {name!r} is for classifiers, and {model.spec.arch} is a detector; "
                         f"use one of {', '.join(DETECTOR_TERMS)}")
    if name in DETECTOR_TERMS and not detector:
        raise ObjectiveError(f"term {name!r} is for detectors, and {model.spec.arch} is a classifier; "
                         f"use one of {', '.join(CLASSIFIER_TERMS)}")
    builders: dict[str, Callable[[], TermFn]] = {
        "score": lambda: score_term,
        "log_prob": lambda: log_prob_term,
        "inv_score": lambda: inv_score_term(**_no_target(options)),
        "activation": lambda: activation(**_no_target(options)),
        "channel": lambda: activation(options["layer"]),
        "neuron": lambda: activation(options["layer"], tuple(options["position"])),
        "direction": lambda: direction_term(options["layer"], _array(options["vector"])),
        "l2_to": lambda: l2_to_term(_array(options["image"])),
        "sq": lambda: sq_term,
        "l2": lambda: l2_term,
        "tv": lambda: tv_term,
        "l2_start": lambda: l2_start_term,
        "opacity": lambda: opacity_term,
        "opacity_outside": lambda: opacity_outside_term,
        "biggest_box": lambda: biggest_box(model.anchors),
        "box_loc": lambda: box_loc(model.anchors, model.loss_config.box_weights),
        "all_boxes": lambda: all_boxes(**options),
        "multibox": lambda: multibox(model.anchors, model.loss_config),
        "head": lambda: head_term(head_boxes(model, options["layer"])),
    }
    if name not in builders:
        raise ObjectiveError(f"unknown objective term {name!r}; known: {', '.join(TERMS)}")
    allowed = {"inv_score": {"eps"}, "activation": {"layer", "position"}, "all_boxes": {"reduce"},
               "channel": {"layer"}, "neuron": {"layer", "position"}, "direction": {"layer", "vector"},
               "l2_to": {"image"}, "head": {"layer"}}.get(name, set())
    if name in TARGETED:
        allowed = allowed | {"target"}
    extra = sorted(set(options) - allowed)
    if extra:
        raise ObjectiveError(f"term {name!r} takes {'options ' + ', '.join(sorted(allowed)) if allowed else 'no options'}, "
                             f"got {extra}")
    needed = {"channel": {"layer"}, "neuron": {"layer", "position"}, "direction": {"layer", "vector"},
              "l2_to": {"image"}, "activation": {"layer"}, "head": {"layer"}}.get(name, set())
    if needed - set(options):
        raise ObjectiveError(f"term {name!r} needs {', '.join(sorted(needed - set(options)))}.")
    if "layer" in options and name not in ("activation", "head"):  # activation: checked with the sweep; head: by its own rule
        _check_layer(model, options["layer"])
    fn = builders[name]()
    if options.get("target") is not None:
        fn = _fixed_target(fn, int(options["target"]))
    return Term(name=name, fn=fn, options=tuple(sorted(options.items())))


TARGETED = ("score", "log_prob", "inv_score", "activation", "channel", "neuron", "head")


def _no_target(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "target"}


def _array(value) -> np.ndarray:
    return value.array if isinstance(value, Frozen) else np.asarray(value, np.float32)


def _check_layer(model, layer: str) -> None:
    _, acts = jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct(model.input_shape(1), jnp.float32))
    if layer not in acts:
        raise ObjectiveError(f"no layer named {layer!r}; the model has {', '.join(sorted(acts))}.")


def uses_point_channel(term: Term) -> str | None:
    """The layer whose channel the grid point's target names for this term, or None (the target is a class,
    or fixed, or unused)."""
    opts = dict(term.options)
    if term.name.startswith("head:"):  # a head's layer names the map it reads; its target is a class
        return None
    if "layer" in opts and "vector" not in opts and opts.get("target") is None:
        return opts["layer"]
    return None


# ---------------------------------------------------------------------------------------------------
# Objectives as values.

@dataclasses.dataclass(frozen=True)
class TermSpec:
    """A term as a value: its kind and static options; ``name`` is its identity (and reads back)."""

    kind: str
    options: tuple = ()

    @property
    def name(self) -> str:
        o = dict(self.options)
        text = self.kind
        if "layer" in o:
            text += f":{o['layer']}"
        if "position" in o:
            text += f"@{o['position'][0]},{o['position'][1]}"
        if "vector" in o:
            text += f"#{o['vector'].digest}"
        if "image" in o:
            text += f"#{o['image'].digest}"
        if o.get("target") is not None:
            text += f"[{o['target']}]"
        if "eps" in o:
            text += f"{{eps={o['eps']:g}}}"
        if "reduce" in o:
            text += f"{{reduce={o['reduce']}}}"
        return text


_NAME = re.compile(r"(?P<kind>[a-z_0-9]+)(?::(?P<layer>[A-Za-z_0-9.]+))?(?:@(?P<row>\d+),(?P<col>\d+))?"
                   r"(?:\[(?P<target>\d+)\])?(?:\{eps=(?P<eps>[0-9.eE+-]+)\})?(?:\{reduce=(?P<reduce>[a-z]+)\})?")


def parse_term_name(name: str) -> TermSpec:
    """A term's name read back: ``score``, ``score[3]``, ``channel:conv4_3``, ``channel:conv4_3[7]``,
    ``neuron:conv4_1@2,3[7]``, ``inv_score{eps=0.5}``. Directions and pulls towards an image hold arrays
    and are built as values, not read from text."""
    m = _NAME.fullmatch(name)
    if not m or m.group("kind") not in TERMS:
        raise ObjectiveError(f"unknown objective term {name!r}; known: {', '.join(TERMS)}, or an objective's "
                             "term such as channel:conv4_3, channel:conv4_3[7], neuron:conv4_1@2,3 or score[3]")
    options: dict[str, Any] = {}
    if m.group("layer"):
        options["layer"] = m.group("layer")
    if m.group("row"):
        options["position"] = (int(m.group("row")), int(m.group("col")))
    if m.group("target"):
        options["target"] = int(m.group("target"))
    if m.group("eps"):
        options["eps"] = float(m.group("eps"))
    if m.group("reduce"):
        options["reduce"] = m.group("reduce")
    return TermSpec(m.group("kind"), tuple(sorted(options.items())))


@dataclasses.dataclass(frozen=True)
class Objective:
    """A weighted sum of terms (a loss the engine minimises): ``parts`` are (term, weight) pairs."""

    parts: tuple[tuple[TermSpec, float], ...]

    def _combine(self, other: "Objective", sign: float) -> "Objective":
        weights: dict[TermSpec, float] = {}
        for spec, w in self.parts:
            weights[spec] = weights.get(spec, 0.0) + w
        for spec, w in other.parts:
            weights[spec] = weights.get(spec, 0.0) + sign * w
        return Objective(tuple(weights.items()))

    def __add__(self, other):
        if isinstance(other, Objective):
            return self._combine(other, 1.0)
        if isinstance(other, numbers.Number) and other == 0:
            return self  # sum() starts from 0
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, Objective):
            return self._combine(other, -1.0)
        return NotImplemented

    def __neg__(self):
        return -1.0 * self

    def __mul__(self, factor):
        if isinstance(factor, numbers.Real) and not isinstance(factor, bool):
            return Objective(tuple((spec, float(factor) * w) for spec, w in self.parts))
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, divisor):
        if isinstance(divisor, numbers.Real) and not isinstance(divisor, bool):
            return self * (1.0 / float(divisor))
        return NotImplemented

    @property
    def loss(self) -> dict[str, float]:
        """``{term name: weight}``: a loss variant of a Sweep."""
        return {spec.name: float(w) for spec, w in self.parts}

    @property
    def specs(self) -> dict[str, TermSpec]:
        return {spec.name: spec for spec, _ in self.parts}

    @property
    def name(self) -> str:
        parts = [name if w == 1 else f"{w:g}*{name}" for name, w in self.loss.items()]
        return "+".join(parts).replace("+-", "-") if parts else "0"

    def __repr__(self):
        return f"Objective({self.name})"

    def terms(self, model) -> list[Term]:
        """The engine's terms for ``model``, in the order of ``loss``."""
        return [build_term(spec, model) for spec, _ in self.parts]

    def value(self, model, ctx: Context) -> jax.Array:
        """The objective's value for one point's context (the weighted sum of its terms)."""
        return sum(w * t.fn(ctx) for t, (_, w) in zip(self.terms(model), self.parts))


def build_term(spec: TermSpec, model) -> Term:
    return dataclasses.replace(make_term(spec.kind, model, **dict(spec.options)), name=spec.name)


def _value(kind: str, **options) -> Objective:
    options = {k: v for k, v in options.items() if v is not None}
    return Objective(((TermSpec(kind, tuple(sorted(options.items()))), 1.0),))


def _target(c):
    return None if c is None else int(c)


def score(c: int | None = None) -> Objective:
    """-S_c: the class score (c: the point's target unless given)."""
    return _value("score", target=_target(c))


def log_prob(c: int | None = None) -> Objective:
    return _value("log_prob", target=_target(c))


def inv_score(c: int | None = None, eps: float | None = None) -> Objective:
    return _value("inv_score", target=_target(c), eps=None if eps is None else float(eps))


def channel(layer: str, c: int | None = None) -> Objective:
    """Minus the spatial mean of channel c of ``layer`` (c: the point's target unless given)."""
    return _value("channel", layer=layer, target=_target(c))


def neuron(layer: str, c: int | None = None, position: tuple[int, int] = (0, 0)) -> Objective:
    """Minus the unit at ``position`` (row, col) of channel c of ``layer``."""
    return _value("neuron", layer=layer, target=_target(c), position=(int(position[0]), int(position[1])))


def direction(layer: str, vector) -> Objective:
    """Minus the spatial mean of the activations of ``layer`` projected on ``vector`` (one per channel)."""
    return _value("direction", layer=layer, vector=Frozen(vector))


def sq() -> Objective:
    return _value("sq")


def l2() -> Objective:
    return _value("l2")


def tv() -> Objective:
    return _value("tv")


def opacity() -> Objective:
    """The mean opacity of an image with an alpha channel: a penalty that keeps the opaque part, the part that
    must hold the object, small."""
    return _value("opacity")


def opacity_outside() -> Objective:
    """The opacity outside the detector's target boxes (weighted by the distance past their edges, up to
    ``OUTSIDE_MARGIN`` px): a penalty that keeps the opaque part in the box, with no cost inside it."""
    return _value("opacity_outside")


def head(map_index: int, c: int | None = None) -> Objective:
    """-mean over the default boxes of one SSD head (the one on source map ``map_index``) of the class
    score S_c: ``all_boxes`` restricted to one scale (c: the point's target unless given)."""
    return _value("head", layer=f"map{int(map_index)}", target=_target(c))


def l2_start() -> Objective:
    """The mean squared distance to the point's own start image (a sweep over start images): feature
    accentuation's pull towards the real image it starts from (Hamblin et al. 2024)."""
    return _value("l2_start")


def l2_to(image) -> Objective:
    """The mean squared distance to ``image`` (network-input space, H x W x 3): a pull towards it."""
    return _value("l2_to", image=Frozen(image))


def term(name: str, **options) -> Objective:
    """Any term by name (e.g. ``term("multibox")``, ``term("all_boxes", reduce="sum")``) as an objective."""
    return _value(name, **options)


def target_score(outputs, target, detector: bool) -> tuple[jax.Array, jax.Array]:
    """(score, probability) reported for a grid point: the class logit and its softmax probability for a
    classifier; for a detector, the highest logit and softmax probability of the class over all boxes."""
    if detector:
        logits = outputs["cls_logits"][0]
        probs = jax.nn.softmax(logits, axis=-1)[:, target]
        return jnp.max(logits[:, target]), jnp.max(probs)
    logits = outputs[0]
    return logits[target], jax.nn.softmax(logits)[target]
