"""The grid of a sweep: its axes and their loss terms (Sweep), the optimiser (Optimizer)
and the errors of an invalid sweep (SweepError)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvis import objectives as obj
from jaxvis.labels import loss_label
from jaxvis.parameterizations import Frozen


class SweepError(ValueError):
    """An invalid sweep: empty or out-of-range axes, bad learning rates, steps or boxes."""


class Optimizer:
    """An optax optimiser with a per-point learning rate: any factory of a ``GradientTransformation`` that
    takes ``learning_rate`` (``optax.sgd``, ``optax.adam``, a function of your own), with static keyword
    options. The learning rate is each point's (a sweep axis): the optimiser is built with
    ``optax.inject_hyperparams``, so the rate (and every numeric option) lives in the point's state and new
    values never recompile.

    ``schedule``: an optax schedule of unit peak (a function of the step count); each point's learning rate
    is its rate times the schedule, so the shape of the schedule is static and its height a sweep axis.

        Optimizer(optax.sgd)                                   # the lab's
        Optimizer(optax.sgd, momentum=0.9)
        Optimizer(optax.adam, b1=0.9, b2=0.999, eps=1e-8)
        Optimizer(optax.adam, schedule=optax.warmup_cosine_decay_schedule(0.0, 1.0, 20, 200))
    """

    def __init__(self, factory: Callable[..., optax.GradientTransformation] = optax.sgd,
                 schedule: Callable[[Any], Any] | None = None, **options):
        if isinstance(factory, str):
            raise SweepError(f"an optimiser is an optax factory, not its name ({factory!r}): Optimizer(optax.sgd), "
                             "Optimizer(optax.sgd, momentum=0.9), Optimizer(optax.adam), or a function that takes "
                             "learning_rate.")
        if not callable(factory):
            raise SweepError(f"an optimiser is a factory of an optax GradientTransformation that takes "
                             f"learning_rate (optax.adam, ...); got {factory!r}.")
        if schedule is not None and not callable(schedule):
            raise SweepError(f"schedule is an optax schedule (a function of the step count), got {schedule!r}.")
        self.factory = factory
        self.schedule = schedule
        self.options = tuple(sorted(options.items()))

    def _scheduled(self, learning_rate) -> optax.GradientTransformation:
        return self.factory(learning_rate=lambda count: learning_rate * self.schedule(count), **dict(self.options))

    def build(self, learning_rate) -> optax.GradientTransformation:
        """The optimiser of one point, its learning rate (and, without a schedule, its numeric options) held in
        its state."""
        if self.schedule is not None:
            return optax.inject_hyperparams(self._scheduled)(learning_rate=learning_rate)
        return optax.inject_hyperparams(self.factory)(learning_rate=learning_rate, **dict(self.options))

    @property
    def name(self) -> str:
        name = getattr(self.factory, "__name__", type(self.factory).__name__)
        options = [f"{k}={v}" for k, v in self.options]
        if self.schedule is not None:
            options.append(f"schedule={getattr(self.schedule, '__name__', 'schedule')}")
        return f"{name}({', '.join(options)})" if options else name

    def _key(self):
        return self.factory, self.schedule, self.options

    def __eq__(self, other):
        return isinstance(other, Optimizer) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"Optimizer({self.name})"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The grid: every combination of the axes' values is one point.

    Attributes:
      targets: class indices (or channel indices for ``activation`` terms).
      lrs: learning rates (> 0).
      losses: loss variants, each an ``objectives.Objective`` (or one ``Term``), e.g. ``[score(),
        score() + sq(), inv_score()]`` (the lab's three losses, ``jaxvis.objectives``). Their weights are
        per-point numbers; ``terms``, the union of their terms, is what the engine is built with.
      weights: term (its name, or the term or one-term objective itself) -> factors that scale that term's
        weight in every variant (a penalty-strength sweep: ``{sq(): [0.1, 1, 10]}``); terms not named keep
        factor 1.
      init_scales: 0 starts from zeros (the paper), s > 0 from Gaussian noise of std s.
      seeds: seeds of the noise.
      boxes: target-box sets for detector terms, each a list of xyxy boxes in input pixels.
      decays: Fourier decays of the fourier parameterisation (an axis only when given; else the
        parameterisation's own).
      starts: start images (N, H, W, 3) in the network's input space, or None: an axis over them (the
        outermost), each point starting from its image (plus noise of its init scale) instead of from
        zeros or noise, and the ``l2_start`` term pulling towards it: feature accentuation (Hamblin et
        al. 2024). Held as a ``parameterizations.Frozen`` constant.

    Example:

    ```python
    from jaxvis import engine, objectives as O

    sweep = engine.Sweep(targets=[0, 1], lrs=[0.1, 1.0], losses=[O.score(), O.score() + O.sq()],
                         weights={O.sq(): [0.1, 1.0]})
    print(sweep.size, sweep.point_axes()[0])   # 2 targets x 2 rates x 2 losses x 2 factors = 16 points
    ```
    """

    targets: Sequence[int]
    lrs: Sequence[float]
    losses: Sequence[dict[str, float]]
    weights: dict[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    init_scales: Sequence[float] = (0.0,)
    seeds: Sequence[int] = (0,)
    boxes: Sequence[Sequence[Sequence[float]]] = ((),)
    decays: Sequence[float] = ()
    starts: Any = None

    def __post_init__(self):
        if self.starts is not None and not isinstance(self.starts, Frozen):
            images = np.asarray(self.starts, np.float32)
            if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
                raise SweepError(f"start images are an (N, H, W, 3) array in the network's input space; got shape "
                                 f"{images.shape}.")
            if not np.all(np.isfinite(images)):
                raise SweepError("start images hold non-finite values.")
            object.__setattr__(self, "starts", Frozen(images))
        try:
            objectives = tuple(obj.as_objective(loss) for loss in self.losses)
            terms = obj.distinct_terms(t for o in objectives for t in o.terms)
        except obj.ObjectiveError as e:
            raise SweepError(str(e)) from None
        object.__setattr__(self, "losses", objectives)
        object.__setattr__(self, "weights", {_term_name(k): tuple(v) for k, v in dict(self.weights).items()})
        object.__setattr__(self, "terms", terms)

    @property
    def term_names(self) -> list[str]:
        return [t.name for t in self.terms]

    def axes(self) -> list[tuple[str, list]]:
        """(name, values) per axis, outermost first; weight-factor axes are named ``w:<term>``."""
        out = [("start", list(range(len(self.starts.array))))] if self.starts is not None else []
        out += [("target", [int(t) for t in self.targets]), ("lr", [float(v) for v in self.lrs]),
               ("loss", [loss.loss for loss in self.losses])]
        out += [(f"w:{name}", [float(v) for v in values]) for name, values in self.weights.items()]
        out += [("init", [float(v) for v in self.init_scales])]
        out += [("decay", [float(v) for v in self.decays])] if len(self.decays) else []
        out += [("seed", [int(s) for s in self.seeds]),
                ("boxes", [[list(map(float, b)) for b in bs] for bs in self.boxes])]
        return out

    def label(self, name: str, value, spec) -> str:
        """The text of value ``value`` of axis ``name`` (grids, the report's filters), for the model of ``spec``
        (a ``ModelSpec``): its labels name the targets (a target past them, a channel, is ``#index``), its input
        size tells the whole image's box."""
        if name == "target":
            classes = spec.labels
            return classes[value] if 0 <= value < len(classes) else f"#{value}"
        if name == "lr":
            return f"lr={value:g}"
        if name == "loss":
            return loss_label(value)
        if name.startswith("w:"):
            return f"{name[2:]}x{value:g}"
        if name == "init":
            return "zeros" if value == 0 else f"noise {value:g}"
        if name == "seed":
            return f"seed {value}"
        if name == "boxes":
            h, w = spec.input_size
            if value == [[0.0, 0.0, float(w), float(h)]]:
                return "whole image"
            return " ".join("[" + ",".join(f"{c:g}" for c in b) + "]" for b in value) or "no box"
        return f"{name}={value}"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.axes())

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def point_axes(self) -> list[dict[str, Any]]:
        """Each point's axis values, in grid order (the last axis varies fastest)."""
        names = [n for n, _ in self.axes()]
        return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in self.axes()))]

    def point_weights(self, point: dict[str, Any], term_names: Sequence[str]) -> list[float]:
        return [point["loss"].get(n, 0.0) * point.get(f"w:{n}", 1.0) for n in term_names]

    def validate(self, model, terms: Sequence[obj.Term], steps: int) -> None:
        bad = [s for s in self.seeds if not _is_seed(s)]
        if bad:
            raise SweepError(f"seeds must be whole numbers from 0 to {2**32 - 1} (they key the random number "
                             f"generator as uint32), got {bad}.")
        for name, values in self.axes():
            if len(values) == 0:
                raise SweepError(f"sweep axis {name!r} is empty; give it at least one value.")
        if steps <= 0:
            raise SweepError(f"steps must be a positive number of iterations, got {steps}.")
        bad = [v for v in self.lrs if not (math.isfinite(v) and v > 0)]
        if bad:
            raise SweepError(f"learning rates must be positive and finite, got {bad}.")
        bad = [v for v in self.init_scales if not (math.isfinite(v) and v >= 0)]
        if bad:
            raise SweepError(f"initialisation scales must be >= 0 (0 = zeros), got {bad}.")
        names = [t.name for t in terms]
        if self.term_names != names:
            raise SweepError(f"the losses use terms {self.term_names} but the engine was built with {names}; "
                             "build the engine from the sweep's terms.")
        unknown = sorted(set(self.weights) - set(names))
        if unknown:
            raise SweepError(f"weight factors are given for {unknown}, which no loss uses (terms: {names}).")
        if self.starts is not None and self.starts.array.shape[1:3] != tuple(model.spec.input_size):
            h, w = model.spec.input_size
            raise SweepError(f"start images are {self.starts.array.shape[2]}x{self.starts.array.shape[1]}, but "
                             f"{model.spec.arch} takes {w}x{h} inputs; resize them first (jaxvis.preprocess).")
        needs_start = [t.name for t in terms if t.needs_start]
        if self.starts is None and needs_start:
            raise SweepError(f"the {needs_start[0]} term pulls towards each point's start image, and this sweep has "
                             "none; give start images (Sweep(starts=...), --start_images).")
        bad = [v for v in self.decays if not math.isfinite(v)]
        if bad:
            raise SweepError(f"Fourier decays must be finite, got {bad}.")
        for loss in self.losses:
            bad = {k: v for k, v in loss.loss.items() if not math.isfinite(v)}
            if bad:
                raise SweepError(f"loss weights must be finite, got {bad}.")
        for name, values in self.weights.items():
            bad = [v for v in values if not math.isfinite(v)]
            if bad:
                raise SweepError(f"weight factors of {name!r} must be finite, got {bad}.")
        channel_layers = [t.channel_of for t in terms if t.channel_of is not None]
        limits = []
        if channel_layers:
            _, acts = jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct(model.input_shape(1), jnp.float32))
            for layer in channel_layers:
                if layer not in acts:
                    raise SweepError(f"no layer named {layer!r}; the model has {', '.join(sorted(acts))}.")
                limits.append((acts[layer].shape[-1], f"channels of {layer}"))
        if any(t.reads_class for t in terms) or not limits:
            limits.append((len(model.spec.labels), f"classes of {model.spec.arch}"))
        for limit, what in limits:
            bad = [t for t in self.targets if not 0 <= int(t) < limit]
            if bad:
                raise SweepError(f"target index {bad[0]} is out of range: the {what} are numbered 0 to {limit - 1}.")
        box_terms = [t.name for t in terms if t.needs_boxes]
        h, w = model.spec.input_size
        for box_set in self.boxes:
            if box_terms and not box_set:
                raise SweepError(f"terms {box_terms} need target boxes; give at least one box per set.")
            for b in box_set:
                if len(b) != 4:
                    raise SweepError(f"a target box has 4 numbers x1,y1,x2,y2, got {list(b)}.")
                x1, y1, x2, y2 = b
                if not (x2 > x1 and y2 > y1):
                    raise SweepError(f"target box {list(b)} has zero or negative area; expected x1 < x2 and y1 < y2.")
                if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
                    raise SweepError(f"target box {list(b)} lies outside the {w}x{h} network input; boxes are in "
                                     "input pixels, within 0..width and 0..height.")

    def arrays(self, term_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-point arrays with a leading points axis, as the compiled step takes them."""
        points = self.point_axes()
        m = max([len(p["boxes"]) for p in points] + [1])
        boxes = np.zeros((len(points), m, 4), np.float32)
        boxes[..., 2:] = 1.0  # padding: a unit box keeps the box coding finite
        valid = np.zeros((len(points), m), bool)
        for i, p in enumerate(points):
            if p["boxes"]:
                boxes[i, :len(p["boxes"])] = p["boxes"]
                valid[i, :len(p["boxes"])] = True
        out = {
            "target": np.array([p["target"] for p in points], np.int32),
            "lr": np.array([p["lr"] for p in points], np.float32),
            "weights": np.array([self.point_weights(p, term_names) for p in points], np.float32).reshape(len(points), -1),
            "init": np.array([p["init"] for p in points], np.float32),
            "seed": np.array([p["seed"] for p in points], np.uint32),
            "boxes": boxes,
            "box_valid": valid,
        }
        if len(self.decays):
            out["decay"] = np.array([p["decay"] for p in points], np.float32)
        if self.starts is not None:
            out["start"] = np.array([p["start"] for p in points], np.int32)
        return out

    def start_images(self, index: np.ndarray) -> np.ndarray:
        """The start images of points whose ``start`` indices are ``index`` (a chunk's, not the grid's)."""
        return self.starts.array[np.asarray(index)]


def _is_seed(value) -> bool:
    try:
        return float(value) == int(value) and 0 <= int(value) < 2**32
    except (TypeError, ValueError, OverflowError):
        return False


def _term_name(key) -> str:
    """A weight-factor axis's term: its name, or the term (or one-term objective) itself."""
    if isinstance(key, obj.Objective) and len(key.parts) == 1:
        key = key.terms[0]
    if isinstance(key, obj.Term):
        return key.name
    if isinstance(key, str):
        return key
    raise SweepError(f"weight factors are keyed by a term (or its name), e.g. {{sq(): [0.1, 1]}}; got {key!r}.")
