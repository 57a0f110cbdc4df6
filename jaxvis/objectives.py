"""Objectives for class-model visualisation: loss terms that are summed with weights.

A loss is ``sum_i w_i * term_i``; the sweep engine minimises it by gradient descent on the image, so a
term measures what should go *down*: ``score`` is the loss -S_c, whose descent raises the class score.
Weights are numbers, so a sweep over losses (which terms, how strongly) is one vmapped grid.

Each term is a pure function of a ``Context``: the model's outputs and named activations for the
current image, the image itself (in the network's input space, zero-centred), and the grid point's
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
| ``biggest_box`` | -S_c at the largest default box | SSD |
| ``box_loc`` | smooth-L1 of the largest default box's regression against the first target box | SSD |
| ``all_boxes`` | -S_c averaged (or summed) over all default boxes | SSD |
| ``multibox`` | the MultiBox training criterion with the target boxes, all labelled c | SSD |

``inv_score`` is 1/S_c where the score is positive and large enough; where S_c <= eps (eps = 1 unless
given) 1/S_c would have the wrong slope (or a pole at 0), so the term continues as its tangent line at
eps, which falls as S_c rises with slope -1/eps^2: for eps = 1 it acts like ``score`` there.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import boxes as bx
from jaxvis import multibox as mb


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


TermFn = Callable[[Context], jax.Array]


@dataclasses.dataclass(frozen=True)
class Term:
    """A named loss term; ``options`` are static (compiled in), the weight is a per-point number."""

    name: str
    fn: TermFn = dataclasses.field(compare=False)
    options: tuple = ()


def _logits(ctx: Context) -> jax.Array:
    return ctx.outputs[0]  # make_term gives classifier terms to classifiers only


def score(ctx: Context) -> jax.Array:
    return -_logits(ctx)[ctx.target]


def log_prob(ctx: Context) -> jax.Array:
    return -jax.nn.log_softmax(_logits(ctx))[ctx.target]


def inv_score(eps: float = 1.0) -> TermFn:
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


def sq(ctx: Context) -> jax.Array:
    return jnp.mean(jnp.square(ctx.x))


def l2(ctx: Context) -> jax.Array:
    return jnp.sum(jnp.square(ctx.x))


def tv(ctx: Context) -> jax.Array:
    dy = jnp.abs(ctx.x[1:] - ctx.x[:-1])
    dx = jnp.abs(ctx.x[:, 1:] - ctx.x[:, :-1])
    return jnp.mean(dy) + jnp.mean(dx)


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


def multibox(anchors: np.ndarray, cfg: mb.LossConfig = mb.LossConfig()) -> TermFn:
    anchors = np.asarray(anchors)

    def fn(ctx: Context) -> jax.Array:
        out = _detector_outputs(ctx)
        labels = jnp.full(ctx.box_valid.shape, ctx.target, jnp.int32)[None]
        terms = mb.multibox_loss(out["cls_logits"], out["bbox_regression"], jnp.asarray(anchors),
                                 ctx.boxes[None], labels, ctx.box_valid[None], cfg)
        return terms["total"]
    return fn


CLASSIFIER_TERMS = ("score", "log_prob", "inv_score")
DETECTOR_TERMS = ("biggest_box", "box_loc", "all_boxes", "multibox")
ANY_TERMS = ("activation", "sq", "l2", "tv")
TERMS = CLASSIFIER_TERMS + DETECTOR_TERMS + ANY_TERMS


def make_term(name: str, model, **options) -> Term:
    """The term ``name`` for ``model`` (a jaxvis Model), with static options:
    ``inv_score``: eps; ``activation``: layer, position; ``all_boxes``: reduce."""
    detector = model.spec.is_detector
    if name in CLASSIFIER_TERMS and detector:
        raise ObjectiveError(f"term {name!r} is for classifiers, and {model.spec.arch} is a detector; "
                         f"use one of {', '.join(DETECTOR_TERMS)}")
    if name in DETECTOR_TERMS and not detector:
        raise ObjectiveError(f"term {name!r} is for detectors, and {model.spec.arch} is a classifier; "
                         f"use one of {', '.join(CLASSIFIER_TERMS)}")
    builders: dict[str, Callable[[], TermFn]] = {
        "score": lambda: score,
        "log_prob": lambda: log_prob,
        "inv_score": lambda: inv_score(**options),
        "activation": lambda: activation(**options),
        "sq": lambda: sq,
        "l2": lambda: l2,
        "tv": lambda: tv,
        "biggest_box": lambda: biggest_box(model.anchors),
        "box_loc": lambda: box_loc(model.anchors, model.loss_config.box_weights),
        "all_boxes": lambda: all_boxes(**options),
        "multibox": lambda: multibox(model.anchors, model.loss_config),
    }
    if name not in builders:
        raise ObjectiveError(f"unknown objective term {name!r}; known: {', '.join(TERMS)}")
    if options and name not in ("inv_score", "activation", "all_boxes"):
        raise ObjectiveError(f"term {name!r} takes no options, got {sorted(options)}")
    fn = builders[name]()
    return Term(name=name, fn=fn, options=tuple(sorted(options.items())))


def target_score(outputs, target, detector: bool) -> tuple[jax.Array, jax.Array]:
    """(score, probability) reported for a grid point: the class logit and its softmax probability for a
    classifier; for a detector, the highest logit and softmax probability of the class over all boxes."""
    if detector:
        logits = outputs["cls_logits"][0]
        probs = jax.nn.softmax(logits, axis=-1)[:, target]
        return jnp.max(logits[:, target]), jnp.max(probs)
    logits = outputs[0]
    return logits[target], jax.nn.softmax(logits)[target]
