"""The sweep engine: class-model visualisation for a whole grid as one compiled program per chunk.

A sweep is the product of axes: targets (categories, or channels for activation terms), learning rates,
loss variants (weighted sums of terms), factors on the weight of any term, initialisations (0 = zeros as
in the paper, s > 0 = Gaussian noise of std s), seeds and target-box sets. One pure step, objective
value and gradient with respect to the image followed by the optax update, is written for one grid point
and vmapped over the points of a chunk; the model parameters are broadcast. On accelerators ``lax.scan``
runs the steps inside the same compiled call; on CPUs, where XLA runs loop bodies slowly, the host loops
over the compiled step without moving data (``Engine(loop=...)``). Snapshots (image after k steps) and
per-step curves are collected on the device. Each chunk is sharded over the devices along the points axis.

The optimised variable is the zero-centred image in the network's input space (the normalised input),
started from zeros unless an initialisation scale is given; ``model.to_image`` adds the mean back.

Two robustness options, static per engine: ``jitter`` shifts the image by a random offset of up to that
many pixels (cyclically) before each forward pass, so the visualisation cannot rely on exact pixel
positions; ``clip`` projects the image after every step onto the values a real image can take (black to
white in every channel), so what is shown is what the network saw. ``compute_dtype="bfloat16"`` runs the
network in bfloat16 on GPUs and TPUs while the image and optimiser stay float32.

A grid point whose loss, gradient or image turns non-finite is frozen at its last finite image and
reported with the step at which it diverged; points never interact, so the others are unaffected.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxvis import objectives as obj
from jaxvis import preprocess as pre


class SweepError(ValueError):
    """An invalid sweep: empty or out-of-range axes, bad learning rates, steps or boxes."""


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """optax optimiser with a per-point learning rate: ``sgd`` (the lab's), ``momentum`` or ``adam``."""

    name: str = "sgd"
    momentum: float = 0.9
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in ("sgd", "momentum", "adam"):
            raise SweepError(f"optimizer must be sgd, momentum or adam, got {self.name!r}")

    def build(self, learning_rate) -> optax.GradientTransformation:
        if self.name == "sgd":
            return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
        if self.name == "momentum":
            return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate, momentum=self.momentum)
        return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate, b1=self.b1, b2=self.b2, eps=self.eps)


def loss_label(loss: dict[str, float]) -> str:
    """A loss variant as text: ``score+sq`` for unit weights, ``score+0.1*sq`` otherwise."""
    parts = []
    for name, w in loss.items():
        parts.append(name if w == 1 else f"{w:g}*{name}")
    return "+".join(parts) if parts else "0"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The grid: every combination of the axes' values is one point.

    Attributes:
      targets: class indices (or channel indices for ``activation`` terms).
      lrs: learning rates (> 0).
      losses: loss variants, each ``{term: weight}``, e.g. ``[{"score": 1}, {"score": 1, "sq": 1},
        {"inv_score": 1}]`` (the lab's three losses). The engine's terms are the union of their terms.
      weights: term -> factors that scale that term's weight in every variant (a penalty-strength
        sweep: ``{"sq": [0.1, 1, 10]}``); terms not named keep factor 1.
      init_scales: 0 starts from zeros (the paper), s > 0 from Gaussian noise of std s.
      seeds: seeds of the noise.
      boxes: target-box sets for detector terms, each a list of xyxy boxes in input pixels.
    """

    targets: Sequence[int]
    lrs: Sequence[float]
    losses: Sequence[dict[str, float]]
    weights: dict[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    init_scales: Sequence[float] = (0.0,)
    seeds: Sequence[int] = (0,)
    boxes: Sequence[Sequence[Sequence[float]]] = ((),)

    @property
    def term_names(self) -> list[str]:
        names: list[str] = []
        for loss in self.losses:
            names += [n for n in loss if n not in names]
        return names

    def axes(self) -> list[tuple[str, list]]:
        """(name, values) per axis, outermost first; weight-factor axes are named ``w:<term>``."""
        out = [("target", [int(t) for t in self.targets]), ("lr", [float(v) for v in self.lrs]),
               ("loss", [{k: float(v) for k, v in loss.items()} for loss in self.losses])]
        out += [(f"w:{name}", [float(v) for v in values]) for name, values in self.weights.items()]
        out += [("init", [float(v) for v in self.init_scales]), ("seed", [int(s) for s in self.seeds]),
                ("boxes", [[list(map(float, b)) for b in bs] for bs in self.boxes])]
        return out

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
        for loss in self.losses:
            bad = {k: v for k, v in loss.items() if not math.isfinite(v)}
            if bad:
                raise SweepError(f"loss weights must be finite, got {bad}.")
        for name, values in self.weights.items():
            bad = [v for v in values if not math.isfinite(v)]
            if bad:
                raise SweepError(f"weight factors of {name!r} must be finite, got {bad}.")
        activation = [t for t in terms if t.name == "activation"]
        if activation:
            layer = dict(activation[0].options)["layer"]
            _, acts = jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct(model.input_shape(1), jnp.float32))
            if layer not in acts:
                raise SweepError(f"no layer named {layer!r}; the model has {', '.join(sorted(acts))}.")
            limit, what = acts[layer].shape[-1], f"channels of {layer}"
        else:
            limit, what = len(model.spec.labels), f"classes of {model.spec.arch}"
        bad = [t for t in self.targets if not 0 <= int(t) < limit]
        if bad:
            raise SweepError(f"target index {bad[0]} is out of range: the {what} are numbered 0 to {limit - 1}.")
        box_terms = [t.name for t in terms if t.name in ("box_loc", "multibox")]
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
        return {
            "target": np.array([p["target"] for p in points], np.int32),
            "lr": np.array([p["lr"] for p in points], np.float32),
            "weights": np.array([self.point_weights(p, term_names) for p in points], np.float32).reshape(len(points), -1),
            "init": np.array([p["init"] for p in points], np.float32),
            "seed": np.array([p["seed"] for p in points], np.uint32),
            "boxes": boxes,
            "box_valid": valid,
        }


@dataclasses.dataclass
class Result:
    """Results of a sweep (numpy, points in grid order).

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
    def concatenate(cls, parts: Sequence["Result"]) -> "Result":
        def cat(name, axis):
            return np.concatenate([getattr(p, name) for p in parts], axis)
        return cls(
            images=cat("images", 0),
            snapshots={k: np.concatenate([p.snapshots[k] for p in parts], 0) for k in parts[0].snapshots},
            loss=cat("loss", 1), score=cat("score", 1), prob=cat("prob", 1), terms=cat("terms", 1),
            final_loss=cat("final_loss", 0), final_score=cat("final_score", 0), final_prob=cat("final_prob", 0),
            diverged_step=cat("diverged_step", 0),
        )

    def take(self, index) -> "Result":
        return Result(
            images=self.images[index], snapshots={k: v[index] for k, v in self.snapshots.items()},
            loss=self.loss[:, index], score=self.score[:, index], prob=self.prob[:, index],
            terms=self.terms[:, index], final_loss=self.final_loss[index], final_score=self.final_score[index],
            final_prob=self.final_prob[index], diverged_step=self.diverged_step[index])


class Progress:
    """A one-line progress bar on stderr: chunks, point-steps, rate and time left."""

    def __init__(self, total_chunks: int, steps: int, points_per_chunk: int, stream=None, enabled=True):
        self.total, self.steps, self.ppc = total_chunks, steps, points_per_chunk
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.start = time.time()
        self.done_chunks = 0
        self.step = 0

    def update(self, chunk: int | None = None, step: int | None = None) -> None:
        if chunk is not None:
            self.done_chunks, self.step = chunk, 0
        if step is not None:
            self.step = step
        if self.done_chunks >= self.total:
            self.done_chunks, self.step = self.total - 1, self.steps
        if not self.enabled:
            return
        total = self.total * self.steps
        done = self.done_chunks * self.steps + self.step
        frac = done / max(total, 1)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        elapsed = time.time() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        self.stream.write(f"\r[{bar}] chunk {min(self.done_chunks + 1, self.total)}/{self.total} "
                          f"step {self.step}/{self.steps}  {done * self.ppc:,} point-steps  "
                          f"{elapsed:6.1f}s elapsed  {eta:6.1f}s left ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def available_memory(device) -> int:
    """Bytes free on ``device`` (host memory for CPU devices)."""
    if device.platform == "cpu":
        try:
            with open("/proc/meminfo") as f:
                info = dict(line.split(":", 1) for line in f)
            return int(info["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return 4 * 2**30
    stats = device.memory_stats() or {}
    return int(stats.get("bytes_limit", 8 * 2**30)) - int(stats.get("bytes_in_use", 0))


def bytes_per_point(model, n_snapshots: int) -> int:
    """A conservative estimate of one grid point's device memory during a step: every activation kept for
    the backward pass plus its gradient, the image, its gradient, optimiser state and snapshots."""
    _, acts = jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct(model.input_shape(1), jnp.float32))
    act_bytes = sum(int(np.prod(a.shape)) * 4 for a in acts.values())
    image = int(np.prod(model.input_shape(1))) * 4
    return 3 * act_bytes + (6 + n_snapshots) * image


class Engine:
    """Compiles and runs sweeps for one model, one loss (its terms) and one optimiser.

    ``run`` cuts the grid into chunks of equal size (the last one padded), so every chunk reuses the
    same compiled program: new values for the axes never recompile. ``trace_count`` counts compilations
    of the chunk program (a test asserts it stays put).

    ``loop``: ``"scan"`` runs a chunk's steps as one ``lax.scan`` on the device; ``"host"`` loops over a
    compiled step on the host, with the carry donated and no transfer until the chunk ends; ``"auto"``
    (default) takes ``"host"`` on CPUs, where XLA runs loop bodies slowly, and ``"scan"`` elsewhere.
    """

    def __init__(self, model, terms: Sequence[obj.Term], optimizer: Optimizer = Optimizer(), steps: int = 200,
                 snapshots: Sequence[int] = (), devices: Sequence[Any] | None = None, step_progress: bool = False,
                 jitter: int = 0, clip: bool = False, compute_dtype: str = "float32", loop: str = "auto"):
        if not terms:
            raise SweepError("the loss has no terms; give at least one objective term.")
        if steps <= 0:
            raise SweepError(f"steps must be a positive number of iterations, got {steps}.")
        bad = [s for s in snapshots if not 0 <= int(s) <= steps]
        if bad:
            raise SweepError(f"snapshot iterations must lie in 0..steps ({steps}), got {bad}.")
        if jitter < 0 or jitter >= min(model.spec.input_size):
            raise SweepError(f"jitter is a shift in pixels, 0 <= jitter < {min(model.spec.input_size)}; got {jitter}.")
        self.jitter = int(jitter)
        self.clip = bool(clip)
        if compute_dtype not in ("float32", "bfloat16"):
            raise SweepError(f"compute_dtype must be float32 or bfloat16, got {compute_dtype!r}.")
        self.compute_dtype = compute_dtype
        # bfloat16: the network runs in bfloat16 (activations and matmuls, for GPUs and TPUs), while the
        # image, the loss terms and the optimiser stay in float32.
        self._module = model.module if compute_dtype == "float32" else model.module.clone(dtype=jnp.bfloat16)
        self.devices = list(devices) if devices is not None else jax.local_devices()
        conv_backend = getattr(model, "conv_backend", None)  # None: a convolution not of jaxvis.conv, kept
        if len(self.devices) > 1 and conv_backend not in ("xla", None):
            # XLA's partitioner cannot split oneDNN's kernels over the points: it would gather every
            # point onto every device. Sharded chunks keep XLA's convolutions, which it partitions.
            if conv_backend == "onednn":
                raise SweepError(f"conv_backend 'onednn' cannot shard a chunk over {len(self.devices)} devices; "
                                 "use 'auto' (XLA's convolutions when sharded) or 'xla', or one device.")
            self._module = self._module.clone(conv_general_dilated=self._module.conv_general_dilated.with_backend("xla"))
        self.model = model
        self.terms = tuple(terms)
        self.optimizer = optimizer
        self.steps = int(steps)
        self.snapshots = tuple(sorted({0, *map(int, snapshots)}))
        if loop not in ("auto", "scan", "host"):
            raise SweepError(f"loop must be auto, scan or host, got {loop!r}.")
        # XLA's CPU backend runs a while loop's body about 3x slower than the same ops outside a loop
        # (BENCHMARKS.md), so on CPUs the steps loop on the host; accelerators scan on the device.
        self._on_cpu = all(d.platform == "cpu" for d in self.devices)
        self.loop = ("host" if self._on_cpu else "scan") if loop == "auto" else loop
        self.mesh = Mesh(np.array(self.devices), ("points",))
        self.step_progress = step_progress
        self._report_every = max(1, self.steps // 50)  # steps between progress updates
        self.trace_count = 0
        self._progress: Progress | None = None
        self._placed: tuple[Any, Any] | None = None  # (params given, params replicated over the devices)
        self._fn = jax.jit(self._chunk)
        self._host_fns = None

    @property
    def term_names(self) -> list[str]:
        return [t.name for t in self.terms]

    # ----------------------------------------------------------------------------------------------
    # The compiled program: one chunk of points, all steps.

    def _loss(self, params, x, p, shift=None):
        seen = x if shift is None else jnp.roll(x, shift, axis=(0, 1))
        outputs, acts = self._module.apply(params, seen[None])
        if self.compute_dtype != "float32":
            outputs, acts = jax.tree.map(lambda a: a.astype(jnp.float32), (outputs, acts))
        ctx = obj.Context(outputs=outputs, acts=acts, x=x, target=p["target"], boxes=p["boxes"],
                          box_valid=p["box_valid"])
        values = jnp.stack([t.fn(ctx) for t in self.terms])
        loss = jnp.dot(p["weights"], values, precision=jax.lax.Precision.HIGHEST)
        score, prob = obj.target_score(self.model, outputs, p["target"])
        return loss, (values, score, prob)

    def _bounds(self):
        """The network-input values of black and white pixels: the box a valid image lives in."""
        lo = pre.normalize(self.model.spec, jnp.zeros(3, jnp.float32))
        hi = pre.normalize(self.model.spec, jnp.ones(3, jnp.float32))
        return jnp.minimum(lo, hi), jnp.maximum(lo, hi)

    def _init_chunk(self, pts):
        """Starting images, optimiser states, divergence flags and snapshot buffer of a chunk."""
        self.trace_count += 1
        h, w = self.model.spec.input_size
        lo, hi = self._bounds()

        def init(p):
            noise = jax.random.normal(jax.random.key(p["seed"]), (h, w, 3), jnp.float32)
            x0 = jnp.where(p["init"] > 0, p["init"] * noise, jnp.zeros_like(noise))
            if self.clip:
                x0 = jnp.clip(x0, lo, hi)
            with jax.numpy_dtype_promotion("standard"):
                return x0, self.optimizer.build(p["lr"]).init(x0)

        x, state = jax.vmap(init)(pts)
        diverged = jnp.full((x.shape[0],), -1, jnp.int32)
        snaps = jnp.zeros((len(self.snapshots),) + x.shape, x.dtype).at[0].set(x)
        return x, state, diverged, snaps

    def _step(self, params, pts, carry, t):
        """One step of every point of a chunk: (new carry, (loss, score, prob, terms) before the step)."""
        opt = self.optimizer.build(0.0)  # the learning rate lives in each point's state
        lo, hi = self._bounds()

        def point_step(x, state, diverged, p):
            shift = None
            if self.jitter:
                key = jax.random.fold_in(jax.random.key(p["seed"] + jnp.uint32(1)), t)
                shift = tuple(jax.random.randint(key, (2,), -self.jitter, self.jitter + 1))
            (loss, aux), g = jax.value_and_grad(self._loss, argnums=1, has_aux=True)(params, x, p, shift)
            with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
                updates, new_state = opt.update(g, state, x)
            new_x = optax.apply_updates(x, updates)
            if self.clip:
                new_x = jnp.clip(new_x, lo, hi)
            finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(new_x))
            ok = (diverged < 0) & finite
            x = jnp.where(ok, new_x, x)
            state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
            diverged = jnp.where((diverged < 0) & ~finite, t, diverged)
            return x, state, diverged, (loss, *aux)

        x, state, diverged, snaps = carry
        x, state, diverged, (loss, values, score, prob) = jax.vmap(point_step)(x, state, diverged, pts)
        snap_steps = jnp.asarray(self.snapshots, jnp.int32)
        j = jnp.clip(jnp.searchsorted(snap_steps, t + 1), 0, len(self.snapshots) - 1)
        snaps = jax.lax.cond(snap_steps[j] == t + 1, lambda s: s.at[j].set(x), lambda s: s, snaps)
        return (x, state, diverged, snaps), (loss, score, prob, values)

    def _final(self, params, pts, carry):
        x, _, diverged, snaps = carry
        final_loss, (_, final_score, final_prob) = jax.vmap(lambda xi, p: self._loss(params, xi, p))(x, pts)
        return {"images": x, "snapshots": snaps, "final_loss": final_loss, "final_score": final_score,
                "final_prob": final_prob, "diverged_step": diverged}

    def _chunk(self, params, pts):
        """The whole chunk as one program: the steps in a ``lax.scan`` (``loop="scan"``)."""

        def body(carry, t):
            carry, curves = self._step(params, pts, carry, t)
            if self.step_progress:
                jax.lax.cond((t + 1) % self._report_every == 0,
                             lambda: jax.debug.callback(self._report_step, t + 1), lambda: None)
            return carry, curves

        carry, curves = jax.lax.scan(body, self._init_chunk(pts), jnp.arange(self.steps, dtype=jnp.int32))
        return {**self._final(params, pts, carry), **dict(zip(("loss", "score", "prob", "terms"), curves))}

    def _host_loop(self, params, pts):
        """The chunk with the step loop on the host (``loop="host"``): one compiled step per iteration,
        dispatched asynchronously, the carry donated so that it is updated in place; nothing comes back
        to the host until the chunk ends (progress waits on a step's loss now and then)."""
        if self._host_fns is None:
            self._host_fns = (jax.jit(self._init_chunk), jax.jit(self._step, donate_argnums=(2,)),
                              jax.jit(self._final))
        init_fn, step_fn, final_fn = self._host_fns
        carry = init_fn(pts)
        curves = []
        for t in range(self.steps):
            carry, out = step_fn(params, pts, carry, np.int32(t))
            curves.append(out)
            if self.step_progress and (t + 1) % self._report_every == 0:
                jax.block_until_ready(out[0])
                self._report_step(t + 1)
        stacked = [jnp.stack([c[k] for c in curves]) for k in range(4)]
        return {**final_fn(params, pts, carry), **dict(zip(("loss", "score", "prob", "terms"), stacked))}

    def _report_step(self, step) -> None:
        if self._progress is not None:
            self._progress.update(step=int(step))

    # ----------------------------------------------------------------------------------------------
    # Host side: chunking, sharding, progress.

    def chunk_size(self, n_points: int, requested: int | None = None) -> int:
        """Points per chunk, a multiple of the device count: ``requested`` as given (a short grid is padded,
        so that sweeps of different sizes share one compiled program), else what fits in the free memory
        (60% of it on accelerators; on CPUs 30% and at most 16 points per device, past which a bigger
        batch no longer runs faster), at most the grid."""
        nd = len(self.devices)
        if requested is None:
            free = min(available_memory(d) for d in self.devices)
            per_point = bytes_per_point(self.model, len(self.snapshots))
            cap = max(1, int((0.3 if self._on_cpu else 0.6) * free // per_point))
            cap = min(cap, 16) if self._on_cpu else cap
            per_device = -(-n_points // nd)
            chunks = -(-per_device // cap)
            size = -(-per_device // chunks) * nd  # equal chunks: 18 points at 16 per chunk run as 2 x 9
        else:
            if int(requested) <= 0:
                raise SweepError(f"chunk size must be positive, got {requested}.")
            size = int(requested)
        return max(nd, (size + nd - 1) // nd * nd)

    def run_points(self, arrays: dict[str, np.ndarray], params=None) -> Result:
        """Runs one chunk of point arrays (length a multiple of the device count)."""
        params = self.model.params if params is None else params
        n = arrays["target"].shape[0]
        if n % len(self.devices):
            raise SweepError(f"a chunk of {n} points does not split over {len(self.devices)} devices.")
        shard = NamedSharding(self.mesh, PartitionSpec("points"))
        pts = {k: jax.device_put(v, shard) for k, v in arrays.items()}
        if self._placed is None or self._placed[0] is not params:  # replicate once, not once per chunk
            self._placed = (params, jax.device_put(params, NamedSharding(self.mesh, PartitionSpec())))
        if self.loop == "scan":
            out = jax.device_get(self._fn(self._placed[1], pts))
        else:
            out = jax.device_get(self._host_loop(self._placed[1], pts))
        return Result(
            images=out["images"], snapshots=dict(zip(self.snapshots, out["snapshots"])),
            loss=out["loss"], score=out["score"], prob=out["prob"], terms=out["terms"],
            final_loss=out["final_loss"], final_score=out["final_score"], final_prob=out["final_prob"],
            diverged_step=out["diverged_step"])

    def run(self, sweep: Sweep, chunk_size: int | None = None, progress: bool = True,
            on_chunk: Callable[[int, slice, Result], None] | None = None, skip_chunks: Sequence[int] = (),
            chunks: Sequence[int] | None = None) -> Result | None:
        """Runs ``sweep``. ``on_chunk(index, points_slice, result)`` receives each finished chunk (to write it
        out; then nothing is kept in memory, which stays bounded by a chunk); chunks in ``skip_chunks`` are
        not run; ``chunks`` restricts the run to those chunk indices. Without ``on_chunk`` returns the whole
        grid's Result; with it, returns None."""
        sweep.validate(self.model, self.terms, self.steps)
        arrays = sweep.arrays(self.term_names)
        n = sweep.size
        size = self.chunk_size(n, chunk_size)
        n_chunks = (n + size - 1) // size
        skip = set(skip_chunks)
        todo = [c for c in (range(n_chunks) if chunks is None else chunks) if c not in skip]
        self._progress = Progress(len(todo), self.steps, size, enabled=progress)
        parts = []
        try:
            for done, c in enumerate(todo):
                self._progress.update(chunk=done)
                lo, hi = c * size, min((c + 1) * size, n)
                idx = np.arange(lo, lo + size).clip(max=hi - 1)  # pad the last chunk with its last point
                result = self.run_points({k: v[idx] for k, v in arrays.items()}).take(slice(0, hi - lo))
                if on_chunk is not None:
                    on_chunk(c, slice(lo, hi), result)
                else:
                    parts.append(result)
            self._progress.update(chunk=len(todo), step=self.steps)
        finally:
            self._progress.close()
            self._progress = None
        if on_chunk is None and len(todo) == n_chunks:
            return Result.concatenate(parts)
        return None

    def n_chunks(self, sweep: Sweep, chunk_size: int | None = None) -> tuple[int, int]:
        """(chunk size, number of chunks) that ``run`` would use."""
        size = self.chunk_size(sweep.size, chunk_size)
        return size, (sweep.size + size - 1) // size


def terms_for(model, sweep: Sweep, options: dict[str, dict[str, Any]] | None = None) -> list[obj.Term]:
    """The terms of a sweep's losses, with static options per term (e.g. ``{"activation": {"layer": ...}}``)."""
    options = options or {}
    return [obj.make_term(name, model, **options.get(name, {})) for name in sweep.term_names]


def env_devices() -> list:
    """Devices to shard over: all local devices, or the first N when JAXVIS_DEVICES=N is set."""
    devices = jax.local_devices()
    n = os.environ.get("JAXVIS_DEVICES")
    return devices[: int(n)] if n else devices
