"""The engine's numeric core: pure functions of a frozen, hashable ``EngineConfig``.

``loss`` is one grid point's loss (and its terms, score and probability) on one image; ``init_chunk``
the starting images and optimiser states of a chunk of points; ``step`` one optimiser step of every
point of a chunk; ``final`` the final evaluation; ``chunk`` the whole chunk with the steps in one
``lax.scan``. The point arrays (``pts``) hold the numbers of each point (target, learning rate, term
weights, initialisation scale, seed, target boxes, start image): new values never recompile, while everything in
the config is compiled in, so an engine with other settings is a new config and a new program.

``Result`` holds a sweep's results as a pytree: concatenating chunks, taking points and flattening
for a file are tree maps over its fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvis import objectives as obj
from jaxvis import parameterizations as par
from jaxvis import transforms as tfm
from jaxvis.engine.grid import Optimizer


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Everything a compiled chunk program depends on. Frozen and hashable: it is the static argument
    of the compiled functions.

    Attributes:
      module: the Flax module (in the compute dtype, with the convolutions it runs).
      model: the ``jaxvis.Model`` (what terms read of it: ``objectives.Context.model``).
      terms: the loss terms, in the order of the points' weights.
      optimizer: the optax optimiser, built per point with its learning rate.
      steps: gradient steps per point.
      snapshots: iterations whose images are kept (0 included).
      jitter: random cyclic shift of up to this many pixels before each forward pass (0: none); it is
        the first of ``transforms`` when set.
      clip: project the image onto [lo, hi] (the network-input values of black and white) after each step
        (the pixels parameterisation only; the others map into the valid range themselves).
      lo, hi: per-channel bounds of a valid image in the network's input space.
      compute_dtype: "float32" or "bfloat16" (the network's arithmetic; image and optimiser stay float32).
      detector: whether the module is a detector (what score and probability are reported).
      input_size: (height, width) of the network input.
      parameterization: how the image is made from the optimised variable (``jaxvis.parameterizations``).
      to_input: RGB [0, 1] -> network input (for parameterisations other than plain pixels).
      view_transforms: the transforms (``jaxvis.transforms``) of each view, one chain per view: each step
        the network sees one randomly transformed copy of the image per view (each with its own key), and
        their losses, scores and probabilities are averaged, a less noisy gradient of the expected loss
        over the transforms; a view with no transforms sees the image as it is.
    """

    module: Any
    model: Any
    terms: tuple
    optimizer: Optimizer
    steps: int
    snapshots: tuple[int, ...]
    jitter: int
    clip: bool
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    compute_dtype: str
    detector: bool
    input_size: tuple[int, int]
    parameterization: par.Parameterization = par.Parameterization()
    to_input: par.InputMap | None = None
    view_transforms: tuple = ((),)


def draw(cfg: EngineConfig, p) -> par.Draw:
    """What the parameterisation's stages know of point ``p``: the input size, its decay, the input map."""
    return cfg.parameterization.draw(cfg.input_size, cfg.to_input, p.get("decay"))


def render(cfg: EngineConfig, v, p):
    """One point's network-input image from its variable ``v`` (with the stages' extra channels, the opacity,
    after the colours)."""
    return cfg.parameterization.render(v, draw(cfg, p))


def picture(cfg: EngineConfig, x, p):
    """Point ``p``'s image as reported (H, W, 3): what the parameterisation's stages report of ``x`` (an
    image with opacity over its backdrop)."""
    return cfg.parameterization.report(x, p, draw(cfg, p))


def seen(cfg: EngineConfig, x, p, t, view: int = 0, with_boxes: bool = False):
    """What the network sees of image ``x`` at step ``t``: its ``view``-th copy under the view's transforms,
    then what the parameterisation's stages make of a view (an image with opacity over a random background of
    the view's own), with the view's key; with ``with_boxes``, (image, the point's target boxes moved with it)."""
    grey = tuple((a + b) / 2 for a, b in zip(cfg.lo, cfg.hi))
    ctx = tfm.Context(steps=cfg.steps, fill=grey + (0.0,) * (x.shape[-1] - len(grey)),  # outside: transparent
                      lo=tuple(cfg.lo), hi=tuple(cfg.hi))
    out = tfm.apply(cfg.view_transforms[view], x, p["seed"], t, ctx, view, boxes=p["boxes"] if with_boxes else None)
    y, boxes = out if with_boxes else (out, None)
    y = cfg.parameterization.seen(y, tfm.view_key(p["seed"], t, view), p, draw(cfg, p))
    return (y, boxes) if with_boxes else y


def view_loss(cfg: EngineConfig, params, x, p, t):
    """The loss of step ``t`` on image ``x``: ``loss`` on its transformed view, or the mean of ``loss``
    (and of its terms, score and probability) over the views, run as one batch. A detector's
    target boxes move with the image (``jaxvis.transforms.apply``)."""
    if len(cfg.view_transforms) == 1:
        view, boxes = seen(cfg, x, p, t, with_boxes=True)
        return loss(cfg, params, x, p, view=view, boxes=boxes)
    views, boxes = zip(*[seen(cfg, x, p, t, k, with_boxes=True) for k in range(len(cfg.view_transforms))])
    out = jax.vmap(lambda view, b: loss(cfg, params, x, p, view=view, boxes=b))(jnp.stack(views), jnp.stack(boxes))
    return jax.tree.map(lambda a: jnp.mean(a, axis=0), out)


def loss(cfg: EngineConfig, params, x, p, shift=None, view=None, boxes=None):
    """One point's (loss, (terms, score, probability)) on image ``x`` (H, W, 3; 4 with opacity), seen shifted
    by ``shift`` or as ``view`` (its transformed form) with the target ``boxes`` where the view has them
    (default: the point's); penalties read ``x`` itself (an image with opacity: as reported, over its backdrop, and
    its opacity)."""
    alpha = cfg.parameterization.opacity(x)
    x = picture(cfg, x, p)
    if view is None:
        view = x if shift is None else jnp.roll(x, shift, axis=(0, 1))
    outputs, acts = cfg.module.apply(params, view[None])
    if cfg.compute_dtype != "float32":
        outputs, acts = jax.tree.map(lambda a: a.astype(jnp.float32), (outputs, acts))
    ctx = obj.Context(outputs=outputs, acts=acts, x=x, target=p["target"],
                      boxes=p["boxes"] if boxes is None else boxes,
                      box_valid=p["box_valid"], start=p.get("start_image"), alpha=alpha,
                      image_boxes=p.get("boxes"), model=cfg.model)
    values = jnp.stack([t.fn(ctx) for t in cfg.terms])
    total = jnp.dot(p["weights"], values, precision=jax.lax.Precision.HIGHEST)
    score, prob = obj.target_score(outputs, p["target"], detector=cfg.detector)
    return total, (values, score, prob)


def _bounds(cfg: EngineConfig):
    return jnp.asarray(cfg.lo, jnp.float32), jnp.asarray(cfg.hi, jnp.float32)


# A point diverges when its image leaves the valid range (black to white in the network's input space) by
# more than this factor: a million times the brightest value a real image takes. A class model grows by
# gradient steps of roughly lr x (its gradient), and healthy runs stay within tens of times the range;
# an image 10^6 times past it (learning rates of 1e30 drive pixels to 1e37) shows nothing the network
# could have seen, and its loss, though finite, measures only the blow-up.
DIVERGENCE_FACTOR = 1e6


def divergence_bound(cfg: EngineConfig) -> float:
    """The largest magnitude of a network-input value a point's image may reach before it counts as
    diverged: ``DIVERGENCE_FACTOR`` times the largest magnitude of a valid one (black or white)."""
    return DIVERGENCE_FACTOR * max(1.0, *(abs(v) for v in cfg.lo + cfg.hi))


def init_chunk(cfg: EngineConfig, pts):
    """Starting variables, optimiser states, divergence flags and snapshot buffer (images) of a chunk."""
    h, w = cfg.input_size
    lo, hi = _bounds(cfg)

    def init(p):
        d = draw(cfg, p)
        v0 = cfg.parameterization.init(jax.random.key(p["seed"]), (h, w), p["init"], p.get("decay"), p, cfg.to_input)
        if "start_image" in p:  # from the point's image, plus the starting noise (MACO: its phase alone)
            v0 = cfg.parameterization.basis.with_noise(cfg.parameterization.variable_for(p["start_image"], d), v0)
        if cfg.clip:
            v0 = jnp.clip(v0, lo, hi)
        with jax.numpy_dtype_promotion("standard"):
            return v0, cfg.optimizer.build(p["lr"]).init(v0), picture(cfg, render(cfg, v0, p), p)

    v, state, x = jax.vmap(init)(pts)
    diverged = jnp.full((v.shape[0],), -1, jnp.int32)
    snaps = jnp.zeros((len(cfg.snapshots),) + x.shape, x.dtype).at[0].set(x)
    return v, state, diverged, snaps


def step(cfg: EngineConfig, params, pts, carry, t):
    """One step of every point of a chunk: (new carry, (loss, score, prob, terms) before the step). The
    gradient is taken with respect to each point's variable through its parameterisation and random
    transforms. A point whose loss, gradient or new variable is not finite, or whose new image exceeds
    ``divergence_bound`` in magnitude, keeps its last one and records the step."""
    opt = cfg.optimizer.build(0.0)  # the learning rate lives in each point's state
    lo, hi = _bounds(cfg)
    bound = divergence_bound(cfg)

    def objective(v, p):
        return view_loss(cfg, params, render(cfg, v, p), p, t)

    def point_step(v, state, diverged, p):
        (value, aux), g = jax.value_and_grad(objective, has_aux=True)(v, p)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
            updates, new_state = opt.update(g, state, v)
        new_v = optax.apply_updates(v, updates)
        if cfg.clip:
            new_v = jnp.clip(new_v, lo, hi)
        finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(new_v))
        finite = finite & (jnp.max(jnp.abs(render(cfg, new_v, p))) <= bound)  # NaN compares False
        ok = (diverged < 0) & finite
        v = jnp.where(ok, new_v, v)
        state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
        diverged = jnp.where((diverged < 0) & ~finite, t, diverged)
        return v, state, diverged, (value, *aux)

    v, state, diverged, snaps = carry
    v, state, diverged, (values, terms, score, prob) = jax.vmap(point_step)(v, state, diverged, pts)
    snap_steps = jnp.asarray(cfg.snapshots, jnp.int32)
    j = jnp.clip(jnp.searchsorted(snap_steps, t + 1), 0, len(cfg.snapshots) - 1)
    snaps = jax.lax.cond(snap_steps[j] == t + 1,
                         lambda s: s.at[j].set(jax.vmap(lambda vi, p: picture(cfg, render(cfg, vi, p), p))(v, pts)),
                         lambda s: s, snaps)
    return (v, state, diverged, snaps), (values, score, prob, terms)


def final(cfg: EngineConfig, params, pts, carry) -> dict[str, jax.Array]:
    """The final images with their loss, score and probability, the snapshots and divergence steps."""
    v, _, diverged, snaps = carry
    x = jax.vmap(lambda vi, p: render(cfg, vi, p))(v, pts)
    final_loss, (_, final_score, final_prob) = jax.vmap(lambda xi, p: loss(cfg, params, xi, p))(x, pts)
    return {"images": jax.vmap(lambda xi, p: picture(cfg, xi, p))(x, pts), "snapshots": snaps, "final_loss": final_loss,
            "final_score": final_score, "final_prob": final_prob, "diverged_step": diverged}


CURVES = ("loss", "score", "prob", "terms")


def chunk(cfg: EngineConfig, params, pts, on_step: Callable[[Any], None] | None = None, every: int = 1):
    """The whole chunk as one program: the steps in a ``lax.scan``; ``on_step(t)`` is called from the
    device every ``every`` steps (progress)."""

    def body(carry, t):
        carry, curves = step(cfg, params, pts, carry, t)
        if on_step is not None:
            jax.lax.cond((t + 1) % every == 0, lambda: jax.debug.callback(on_step, t + 1), lambda: None)
        return carry, curves

    carry, curves = jax.lax.scan(body, init_chunk(cfg, pts), jnp.arange(cfg.steps, dtype=jnp.int32))
    return {**final(cfg, params, pts, carry), **dict(zip(CURVES, curves))}


# ---------------------------------------------------------------------------------------------------
# Results.

_POINTS_AXIS_1 = frozenset(CURVES)  # curves are (steps, points, ...); every other field is (points, ...)


def _points_axis(path) -> int:
    return 1 if path[0].name in _POINTS_AXIS_1 else 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Result:
    """Results of a sweep (numpy, points in grid order), a pytree.

    Attributes:
      images: (P, H, W, 3) final images in the network's input space.
      snapshots: iteration -> (P, H, W, 3); iteration 0 is the starting image.
      loss, score, prob: (steps, P) curves, each measured on the image before that step's update.
      terms: (steps, P, T) the unweighted terms.
      final_loss, final_score, final_prob: (P,) on the final images.
      diverged_step: (P,) the step at which a point turned non-finite, -1 if it never did.
    """

    images: np.ndarray
    snapshots: dict[int, np.ndarray]
    loss: np.ndarray
    score: np.ndarray
    prob: np.ndarray
    terms: np.ndarray
    final_loss: np.ndarray
    final_score: np.ndarray
    final_prob: np.ndarray
    diverged_step: np.ndarray

    @classmethod
    def from_outputs(cls, out: dict[str, Any], snapshot_steps: Sequence[int]) -> "Result":
        """From a chunk program's outputs (snapshots stacked in the order of ``snapshot_steps``)."""
        return cls(**{**out, "snapshots": dict(zip(snapshot_steps, out["snapshots"]))})

    @classmethod
    def concatenate(cls, parts: Sequence["Result"]) -> "Result":
        """The points of ``parts`` one after another."""
        return jax.tree_util.tree_map_with_path(
            lambda path, *xs: np.concatenate(xs, _points_axis(path)), parts[0], *parts[1:])

    def take(self, index) -> "Result":
        """The points ``index`` (a slice or indices) of every field."""
        return jax.tree_util.tree_map_with_path(
            lambda path, x: x[(slice(None),) * _points_axis(path) + (index,)], self)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat named arrays (for a file): the fields, with the snapshots stacked as ``snapshots`` in the
        order of ``snapshot_steps``."""
        steps = sorted(self.snapshots)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "snapshots"}
        return {**arrays, "snapshot_steps": np.asarray(steps), "snapshots": np.stack([self.snapshots[k] for k in steps])}

    @classmethod
    def from_arrays(cls, arrays) -> "Result":
        """The inverse of ``to_arrays``."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "snapshots"]
        steps = [int(s) for s in arrays["snapshot_steps"]]
        return cls(snapshots=dict(zip(steps, arrays["snapshots"])), **{n: arrays[n] for n in names})
