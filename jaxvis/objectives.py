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

**Objectives as values.** Every term is a ``Term``: a name and a pure function of the ``Context``
(``fn(ctx) -> scalar``), with what it needs declared beside it (which point target it reads, whether it
is for classifiers or detectors, whether it needs target boxes or start images). The built-in terms are
made the same way, by the functions below; a term a user writes is one more ``Term`` and needs no
table to be registered in. Terms and ``Objective`` values add, scale by numbers and negate:
``score() + 0.1 * sq()``, ``channel("conv4_3", 7) + channel("conv5_1", 3)``, or
``score() + 0.5 * Term("centre", my_fn)``; an objective knows its name (``score+0.1*sq``). The class or
channel is the grid point's target (a sweep axis) unless one is given (``score(3)``, ``channel(layer, 7)``).
An objective is a loss variant of a ``Sweep`` (``Sweep(losses=[objective])``): its weights are per-point
numbers, so an ablation over losses is one compiled program. Terms read the model they run on through
``ctx.model`` (a detector's default boxes, its heads), so a term is not bound to a model. Text (the
launcher's ``--loss score+0.1*sq``, names such as ``channel:conv4_3[7]``) is read into these values by
``jaxvis.cli``, the command line's layer, and by nothing here.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any, Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import multibox as mb
from jaxvis.labels import loss_label
from jaxvis.parameterizations import Frozen


class ObjectiveError(ValueError):
    """An objective term that does not exist or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What a term sees for one grid point. ``outputs`` and activations carry a batch axis of 1.

    Attributes:
      outputs: the model's outputs: (1, classes) logits of a classifier; a detector's
        ``{"cls_logits": (1, A, K), "bbox_regression": (1, A, 4)}``.
      acts: the named activations, each (1, H, W, C) (or (1, C)); ``<layer>_pre`` before a ReLU.
      x: (H, W, 3) the image in the network's input space (an image with opacity: as reported, over
        its backdrop).
      target: int scalar, the point's class or channel index.
      boxes: (M, 4) target boxes in input pixels, as the view sees them (moved with its transforms).
      box_valid: (M,) bool, which boxes are real (the rest pad).
      start: (H, W, 3) the point's start image (a sweep over start images), or None.
      alpha: (H, W) the image's opacity (the alpha parameterisation), or None.
      image_boxes: (M, 4) the target boxes on the image itself (``boxes``: on the view), or None.
      model: the ``jaxvis.Model`` the term runs on (its spec, a detector's ``anchors``, ``head_ends``,
        ``loss_config``): static, read while the program is traced.
    """

    outputs: Any
    acts: dict[str, jax.Array]
    x: jax.Array
    target: jax.Array
    boxes: jax.Array
    box_valid: jax.Array
    start: jax.Array | None = None
    alpha: jax.Array | None = None
    image_boxes: jax.Array | None = None
    model: Any = None


TermFn = Callable[[Context], jax.Array]
"""A term's function: one grid point's ``Context`` -> a scalar the engine minimises."""


@dataclasses.dataclass(frozen=True, eq=False)
class Term:
    """A named loss term: ``fn(ctx)`` is its value for one grid point (see ``Context``).

    Its weight is not part of it: terms are summed with per-point weights (``Objective``, a ``Sweep``'s
    losses), so ``Term`` values add and scale into objectives (``score() + 0.5 * Term("mine", fn)``).

    Attributes:
      name: the term's name (in loss labels, run records and weight-factor axes: ``w:<name>``).
      fn: the function of the context.
      options: the static options a built-in term was made with.
      reads_class: the term reads ``ctx.target`` as a class index of the model.
      channel_of: the layer whose channel ``ctx.target`` names, or None.
      detector: True for detectors only, False for classifiers only, None for any model.
      needs_boxes: the term reads the target boxes (a sweep must give a box in every set).
      needs_start: the term reads the point's start image (a sweep must have start images).
      check: ``check(model)`` raises ``ObjectiveError`` where the term does not fit ``model`` (a layer it
        does not have), or None.
      builtin: made by this module: the term is known by its name and options (two calls of ``score()`` are
        one term); a user's term is known by its name and its function.

    Example:

    ```python
    import jax.numpy as jnp
    from jaxvis import objectives as O

    quiet_edges = O.Term("quiet_edges", lambda ctx: jnp.mean(jnp.square(ctx.x[:4])))   # the top rows' energy
    loss = O.score() + 0.1 * quiet_edges
    print(loss, [t.name for t in loss.terms])
    ```
    """

    name: str
    fn: TermFn
    options: tuple = ()
    reads_class: bool = False
    channel_of: str | None = None
    detector: bool | None = None
    needs_boxes: bool = False
    needs_start: bool = False
    check: Callable[[Any], None] | None = None
    builtin: bool = False

    def _identity(self) -> tuple[str, Hashable]:
        return self.name, (self.options if self.builtin else self.fn)

    def __eq__(self, other):
        return isinstance(other, Term) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())

    def fits(self, model) -> None:
        """Raise ``ObjectiveError`` where this term does not fit ``model``."""
        detector = model.spec.is_detector
        if self.detector is True and not detector:
            raise ObjectiveError(f"term {self.name!r} is for detectors, and {model.spec.arch} is a classifier.")
        if self.detector is False and detector:
            raise ObjectiveError(f"term {self.name!r} is for classifiers, and {model.spec.arch} is a detector.")
        if self.check is not None:
            self.check(model)

    def objective(self) -> "Objective":
        """This term alone, weight 1."""
        return Objective(((self, 1.0),))

    def __add__(self, other):
        return self.objective() + other

    __radd__ = __add__

    def __sub__(self, other):
        return self.objective() - other

    def __rsub__(self, other):
        return -self.objective() + other

    def __neg__(self):
        return -self.objective()

    def __mul__(self, factor):
        return self.objective() * factor

    __rmul__ = __mul__

    def __truediv__(self, divisor):
        return self.objective() / divisor

    def __repr__(self):
        return f"Term({self.name})"


def _logits(ctx: Context) -> jax.Array:
    return ctx.outputs[0]  # classifier terms run on classifiers only (Term.detector)


def _layer(ctx: Context, layer: str) -> jax.Array:
    try:
        return ctx.acts[layer][0]
    except KeyError:
        raise ObjectiveError(f"no activation named {layer!r}; the model has {', '.join(sorted(ctx.acts))}") from None


def score_fn(ctx: Context) -> jax.Array:
    return -_logits(ctx)[ctx.target]


def log_prob_fn(ctx: Context) -> jax.Array:
    return -jax.nn.log_softmax(_logits(ctx))[ctx.target]


def inv_score_fn(eps: float = 1.0) -> TermFn:
    def fn(ctx: Context) -> jax.Array:
        s = _logits(ctx)[ctx.target]
        safe = jnp.where(s > eps, s, 1.0)
        return jnp.where(s > eps, 1.0 / safe, 2.0 / eps - s / eps**2)
    return fn


def activation_fn(layer: str, position: tuple[int, int] | None = None) -> TermFn:
    """Minus one neuron (``position`` = (row, col), channel = target) or minus a channel's spatial mean."""
    def fn(ctx: Context) -> jax.Array:
        a = _layer(ctx, layer)
        if a.ndim == 1:
            return -a[ctx.target]
        channel = jnp.take(a, ctx.target, axis=-1)
        if position is None:
            return -jnp.mean(channel)
        return -channel[position[0], position[1]]
    return fn


def sq_fn(ctx: Context) -> jax.Array:
    return jnp.mean(jnp.square(ctx.x))


def l2_fn(ctx: Context) -> jax.Array:
    return jnp.sum(jnp.square(ctx.x))


def tv_fn(ctx: Context) -> jax.Array:
    dy = jnp.abs(ctx.x[1:] - ctx.x[:-1])
    dx = jnp.abs(ctx.x[:, 1:] - ctx.x[:, :-1])
    return jnp.mean(dy) + jnp.mean(dx)


def opacity_fn(ctx: Context) -> jax.Array:
    if ctx.alpha is None:
        raise ObjectiveError("the opacity term is the mean of the image's opacity channel, and this image has none; "
                             "add alpha to the parameterisation (e.g. fourier+decorrelated+sigmoid+alpha).")
    return jnp.mean(ctx.alpha)


OUTSIDE_MARGIN = 4.0  # px past a target box's edge over which opacity_outside's weight ramps from 0 to 1


def opacity_outside_fn(ctx: Context) -> jax.Array:
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


def _biggest_anchor(model) -> int:
    a = np.asarray(model.anchors)
    return int(np.argmax((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])))


def biggest_box_fn(ctx: Context) -> jax.Array:
    return -ctx.outputs["cls_logits"][0, _biggest_anchor(ctx.model), ctx.target]


def box_loc_fn(ctx: Context) -> jax.Array:
    from jaxvis import boxes as bx

    index = _biggest_anchor(ctx.model)
    pred = ctx.outputs["bbox_regression"][0, index]
    goal = bx.encode(ctx.boxes[0], jnp.asarray(ctx.model.anchors[index]), ctx.model.loss_config.box_weights)
    return jnp.sum(mb.smooth_l1(pred - goal))


def all_boxes_mean_fn(ctx: Context) -> jax.Array:
    return -jnp.mean(ctx.outputs["cls_logits"][0, :, ctx.target])


def all_boxes_sum_fn(ctx: Context) -> jax.Array:
    return -jnp.sum(ctx.outputs["cls_logits"][0, :, ctx.target])


def head_rows(model, map_index: int) -> tuple[int, int]:
    """The rows (start, stop) of the default boxes that the head on source map ``map_index`` predicts: the
    heads' rows are concatenated in map order, each map's as (y, x, box)."""
    ends = model.head_ends
    if not 0 <= map_index < len(ends):
        raise ObjectiveError(f"{model.spec.arch} has heads on map0 ... map{len(ends) - 1}; got map{map_index}.")
    return (ends[map_index - 1] if map_index else 0), ends[map_index]


def head_fn(map_index: int) -> TermFn:
    def fn(ctx: Context) -> jax.Array:
        start, stop = head_rows(ctx.model, map_index)
        return -jnp.mean(ctx.outputs["cls_logits"][0, start:stop, ctx.target])
    return fn


def multibox_fn(ctx: Context) -> jax.Array:
    out = ctx.outputs
    labels = jnp.full(ctx.box_valid.shape, ctx.target, jnp.int32)[None]
    terms = mb.multibox_loss(out["cls_logits"], out["bbox_regression"], jnp.asarray(ctx.model.anchors),
                             ctx.boxes[None], labels, ctx.box_valid[None], ctx.model.loss_config)
    return terms["total"]


def direction_fn(layer: str, vector: Frozen) -> TermFn:
    def fn(ctx: Context) -> jax.Array:
        a = _layer(ctx, layer)
        dots = jnp.tensordot(a, jnp.asarray(vector.array), axes=([-1], [0]), precision=jax.lax.Precision.HIGHEST)
        return -jnp.mean(dots)
    return fn


def l2_to_fn(image: Frozen) -> TermFn:
    def fn(ctx: Context) -> jax.Array:
        return jnp.mean(jnp.square(ctx.x - jnp.asarray(image.array)))
    return fn


def l2_start_fn(ctx: Context) -> jax.Array:
    if ctx.start is None:
        raise ObjectiveError("the l2_start term pulls towards each point's start image, and this sweep has none; "
                             "give the sweep start images (Sweep(starts=...), --start_images).")
    return jnp.mean(jnp.square(ctx.x - ctx.start))


def fixed_target(fn: TermFn, target: int) -> TermFn:
    """``fn`` with the point's target replaced by ``target``."""
    def fixed(ctx: Context) -> jax.Array:
        return fn(dataclasses.replace(ctx, target=jnp.asarray(target, jnp.int32)))
    return fixed


def term_name(kind: str, options: dict) -> str:
    """A built-in term's name: its kind and options (``channel:conv4_3[7]``, ``neuron:conv4_1@2,3``,
    ``inv_score{eps=0.5}``, ``direction:fc7#<digest>``); ``jaxvis.cli`` reads these back."""
    text = kind
    if "layer" in options:
        text += f":{options['layer']}"
    if "position" in options:
        text += f"@{options['position'][0]},{options['position'][1]}"
    for key in ("vector", "image"):
        if key in options:
            text += f"#{options[key].digest}"
    if options.get("target") is not None:
        text += f"[{options['target']}]"
    if "eps" in options:
        text += f"{{eps={options['eps']:g}}}"
    if "reduce" in options:
        text += f"{{reduce={options['reduce']}}}"
    return text


def _builtin(kind: str, fn: TermFn, target: int | None = None, targeted: str | None = None, **declared) -> Term:
    """A built-in term: ``kind`` and its options name it; ``targeted`` says what the point's target is to it
    ("class", "channel"), unless ``target`` fixes it."""
    options = {k: v for k, v in declared.pop("options", {}).items() if v is not None}
    if target is not None:
        target = int(target)
        options["target"] = target
        fn = fixed_target(fn, target)
    reads_class = targeted == "class" and target is None
    channel_of = options.get("layer") if targeted == "channel" and target is None else None
    return Term(term_name(kind, options), fn, tuple(sorted(options.items())), reads_class=reads_class,
                channel_of=channel_of, builtin=True, **declared)


def _has_layer(layer: str) -> Callable[[Any], None]:
    return functools.partial(check_layer, layer=layer)


def check_layer(model, layer: str) -> None:
    """Raise ``ObjectiveError`` unless ``model`` records an activation named ``layer``."""
    _, acts = jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct(model.input_shape(1), jnp.float32))
    if layer not in acts:
        raise ObjectiveError(f"no layer named {layer!r}; the model has {', '.join(sorted(acts))}.")


def _check_head(map_index: int) -> Callable[[Any], None]:
    def check(model) -> None:
        head_rows(model, map_index)
    return check


@dataclasses.dataclass(frozen=True)
class Objective:
    """A weighted sum of terms (a loss the engine minimises): ``parts`` are (term, weight) pairs."""

    parts: tuple[tuple[Term, float], ...]

    def __post_init__(self):
        distinct_terms(t for t, _ in self.parts)

    def _combine(self, other, sign: float) -> "Objective":
        if isinstance(other, Term):
            other = other.objective()
        weights: dict[Term, float] = {}
        for t, w in self.parts:
            weights[t] = weights.get(t, 0.0) + w
        for t, w in other.parts:
            weights[t] = weights.get(t, 0.0) + sign * w
        return Objective(tuple(weights.items()))

    def __add__(self, other):
        if isinstance(other, (Objective, Term)):
            return self._combine(other, 1.0)
        if isinstance(other, numbers.Number) and other == 0:
            return self  # sum() starts from 0
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, (Objective, Term)):
            return self._combine(other, -1.0)
        return NotImplemented

    def __neg__(self):
        return -1.0 * self

    def __mul__(self, factor):
        if isinstance(factor, numbers.Real) and not isinstance(factor, bool):
            return Objective(tuple((t, float(factor) * w) for t, w in self.parts))
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, divisor):
        if isinstance(divisor, numbers.Real) and not isinstance(divisor, bool):
            return self * (1.0 / float(divisor))
        return NotImplemented

    @property
    def terms(self) -> tuple[Term, ...]:
        """The terms, in order."""
        return tuple(t for t, _ in self.parts)

    @property
    def loss(self) -> dict[str, float]:
        """``{term name: weight}``: how a run's records and report write the objective."""
        return {t.name: float(w) for t, w in self.parts}

    @property
    def name(self) -> str:
        return loss_label(self.loss)

    def __repr__(self):
        return f"Objective({self.name})"

    def fits(self, model) -> None:
        """Raise ``ObjectiveError`` where a term does not fit ``model``."""
        for t in self.terms:
            t.fits(model)

    def value(self, model, ctx: Context) -> jax.Array:
        """The objective's value for one point's context on ``model`` (the weighted sum of its terms)."""
        self.fits(model)
        ctx = dataclasses.replace(ctx, model=model)
        return sum(w * t.fn(ctx) for t, w in self.parts)


def distinct_terms(terms) -> tuple[Term, ...]:
    """``terms`` without repeats, in order; two different terms of one name are refused (a name is how a
    term's weight, its weight-factor axis and its records find it)."""
    seen: dict[str, Term] = {}
    for t in terms:
        if seen.setdefault(t.name, t) != t:
            raise ObjectiveError(f"two different terms are named {t.name!r}; give them different names.")
    return tuple(seen.values())


def as_objective(value) -> Objective:
    """An ``Objective`` or a ``Term`` as an objective; anything else is refused with the form to write."""
    if isinstance(value, Objective):
        return value
    if isinstance(value, Term):
        return value.objective()
    if isinstance(value, dict):
        raise ObjectiveError(f"a loss is an objective value, not a dict of term names (got {value!r}): write it as "
                             "jaxvis.objectives.score() + jaxvis.objectives.sq(), or read the launcher's text with "
                             "jaxvis.cli.loss('score+sq').")
    raise ObjectiveError(f"a loss is a jaxvis.objectives.Objective or Term (score(), score() + 0.1 * sq(), "
                         f"Term(name, fn)); got {value!r}.")


# ---------------------------------------------------------------------------------------------------
# The built-in terms, as objectives.

def score(c: int | None = None) -> Objective:
    """-S_c: the class score, the paper's objective (c: the point's target unless given)."""
    return _builtin("score", score_fn, c, "class", detector=False).objective()


def log_prob(c: int | None = None) -> Objective:
    """-log softmax(S)_c."""
    return _builtin("log_prob", log_prob_fn, c, "class", detector=False).objective()


def inv_score(c: int | None = None, eps: float | None = None) -> Objective:
    """1/S_c above eps (default 1), its tangent at eps below."""
    fn = inv_score_fn() if eps is None else inv_score_fn(float(eps))
    return _builtin("inv_score", fn, c, "class", detector=False,
                    options={"eps": None if eps is None else float(eps)}).objective()


def activation(layer: str, position: tuple[int, int] | None = None) -> Objective:
    """Minus the spatial mean (or the unit at ``position``) of the channel of ``layer`` that the point's
    target names."""
    position = None if position is None else (int(position[0]), int(position[1]))
    return _builtin("activation", activation_fn(layer, position), None, "channel", check=_has_layer(layer),
                    options={"layer": layer, "position": position}).objective()


def channel(layer: str, c: int | None = None) -> Objective:
    """Minus the spatial mean of channel c of ``layer`` (c: the point's target unless given)."""
    return _builtin("channel", activation_fn(layer), c, "channel", check=_has_layer(layer),
                    options={"layer": layer}).objective()


def neuron(layer: str, c: int | None = None, position: tuple[int, int] = (0, 0)) -> Objective:
    """Minus the unit at ``position`` (row, col) of channel c of ``layer``."""
    position = (int(position[0]), int(position[1]))
    return _builtin("neuron", activation_fn(layer, position), c, "channel", check=_has_layer(layer),
                    options={"layer": layer, "position": position}).objective()


def direction(layer: str, vector) -> Objective:
    """Minus the spatial mean of the activations of ``layer`` projected on ``vector`` (one per channel)."""
    vector = vector if isinstance(vector, Frozen) else Frozen(vector)
    return _builtin("direction", direction_fn(layer, vector), check=_has_layer(layer),
                    options={"layer": layer, "vector": vector}).objective()


def sq() -> Objective:
    """mean(x^2) over pixels and channels: the lab's penalty."""
    return _builtin("sq", sq_fn).objective()


def l2() -> Objective:
    """sum(x^2): the paper's lambda ||I||^2."""
    return _builtin("l2", l2_fn).objective()


def tv() -> Objective:
    """Total variation: mean |x[i+1,j]-x[i,j]| + mean |x[i,j+1]-x[i,j]|."""
    return _builtin("tv", tv_fn).objective()


def opacity() -> Objective:
    """The mean opacity of an image with an alpha channel: a penalty that keeps the opaque part, the part that
    must hold the object, small."""
    return _builtin("opacity", opacity_fn).objective()


def opacity_outside() -> Objective:
    """The opacity outside the detector's target boxes (weighted by the distance past their edges, up to
    ``OUTSIDE_MARGIN`` px): a penalty that keeps the opaque part in the box, with no cost inside it."""
    return _builtin("opacity_outside", opacity_outside_fn, detector=True).objective()


def biggest_box(c: int | None = None) -> Objective:
    """-S_c at the largest default box of a detector (the lab's first SSD objective, with ``box_loc``)."""
    return _builtin("biggest_box", biggest_box_fn, c, "class", detector=True).objective()


def box_loc() -> Objective:
    """Smooth-L1 of the largest default box's regression against the first target box."""
    return _builtin("box_loc", box_loc_fn, detector=True, needs_boxes=True).objective()


def all_boxes(c: int | None = None, total: bool = False) -> Objective:
    """-S_c averaged over all default boxes (summed with ``total``): the lab's second SSD objective."""
    return _builtin("all_boxes", all_boxes_sum_fn if total else all_boxes_mean_fn, c, "class", detector=True,
                    options={"reduce": "sum" if total else None}).objective()


def multibox(c: int | None = None) -> Objective:
    """The MultiBox training criterion with the point's target boxes, all labelled c: the lab's third."""
    return _builtin("multibox", multibox_fn, c, "class", detector=True, needs_boxes=True).objective()


def head(map_index: int, c: int | None = None) -> Objective:
    """-mean over the default boxes of one SSD head (the one on source map ``map_index``) of the class
    score S_c: ``all_boxes`` restricted to one scale (c: the point's target unless given)."""
    map_index = int(map_index)
    return _builtin("head", head_fn(map_index), c, "class", detector=True, check=_check_head(map_index),
                    options={"layer": f"map{map_index}"}).objective()


def l2_start() -> Objective:
    """The mean squared distance to the point's own start image (a sweep over start images): feature
    accentuation's pull towards the real image it starts from (Hamblin et al. 2024)."""
    return _builtin("l2_start", l2_start_fn, needs_start=True).objective()


def l2_to(image) -> Objective:
    """The mean squared distance to ``image`` (network-input space, H x W x 3): a pull towards it."""
    image = image if isinstance(image, Frozen) else Frozen(image)
    return _builtin("l2_to", l2_to_fn(image), options={"image": image}).objective()


def target_score(outputs, target, detector: bool) -> tuple[jax.Array, jax.Array]:
    """(score, probability) reported for a grid point: the class logit and its softmax probability for a
    classifier; for a detector, the highest logit and softmax probability of the class over all boxes."""
    if detector:
        logits = outputs["cls_logits"][0]
        probs = jax.nn.softmax(logits, axis=-1)[:, target]
        return jnp.max(logits[:, target]), jnp.max(probs)
    logits = outputs[0]
    return logits[target], jax.nn.softmax(logits)[target]
