"""The sweep engine's runner: chunks, devices, the steps loop and progress around the numeric core
(``jaxvis.engine.core``). The package's docstring (``jaxvis.engine``) describes the engine as a whole.

``lax.scan`` runs a chunk's steps inside one compiled call, on accelerators and on CPUs where every
convolution is one of oneDNN's kernels; with XLA's own convolutions on CPUs, which XLA runs slowly in a
loop body, the host loops over the compiled step without moving data (``Engine(loop=...)``).
Each chunk is sharded over the devices along the points axis: the numeric core is mapped over the
devices' shares of the points (``shard_map``), so that each device runs the model's own convolutions
(oneDNN's kernels on CPUs) on its share, with nothing gathered across devices.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxvis import objectives as obj
from jaxvis import parameterizations as par
from jaxvis import preprocess as pre
from jaxvis import transforms as tfm
from jaxvis.engine import core
from jaxvis.engine.core import Result
from jaxvis.engine.grid import Optimizer, Sweep, SweepError


# How the core's arrays lie over the devices: the points axis split, everything else whole on each.
_POINTS = PartitionSpec("points")  # (points, ...)
_CURVE = PartitionSpec(None, "points")  # (steps or snapshots, points, ...)
_REPLICATED = PartitionSpec()
_CARRY = (_POINTS, _POINTS, _POINTS, _CURVE)  # variables, optimiser states, divergence steps, snapshots
_FINAL = {"images": _POINTS, "snapshots": _CURVE, "final_loss": _POINTS, "final_score": _POINTS,
          "final_prob": _POINTS, "diverged_step": _POINTS}


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """Where a run stands: ``chunks_done`` of ``chunks`` finished, ``step`` of ``steps`` of the chunk
    under way, ``points_per_chunk`` points in each chunk."""

    chunks_done: int
    chunks: int
    step: int
    steps: int
    points_per_chunk: int

    @property
    def fraction(self) -> float:
        return (self.chunks_done * self.steps + self.step) / max(self.chunks * self.steps, 1)


class _QuietInterrupts(logging.Filter):
    """Drops jax's log of a progress callback that ended in KeyboardInterrupt (Ctrl-C while the device
    called back): the run says it was interrupted in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


logging.getLogger("jax._src.debugging").addFilter(_QuietInterrupts())


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
    (default) takes ``"scan"`` on accelerators and on CPUs where every convolution of the step runs in
    oneDNN's kernels, ``"host"`` on CPUs with XLA's convolutions (slow in a loop body).

    Everything the compiled programs depend on (model, terms, optimiser, steps, snapshots, jitter, clip,
    compute dtype, loop, devices, parameterisation, transforms, views, plain views) is fixed when the engine
    is built: it is the frozen ``config`` (``jaxvis.engine.core.EngineConfig``) that the compiled functions
    take as a static argument.
    Assigning a setting is an error, and ``replace(steps=...)`` builds another engine, with programs of
    its own.

    ``run(progress=callback)`` reports progress as ``ProgressEvent`` values (chunks done, steps of the
    current chunk); the launchers draw them as a progress bar.

    Example:

    ```python
    import optax
    import jaxvis
    from jaxvis import assets, engine, objectives as O

    model = jaxvis.load(assets.path("classifier"))
    sweep = engine.Sweep(targets=range(6), lrs=[1.0], losses=[O.score() + O.sq()])
    eng = engine.Engine(model, sweep, optimizer=optax.sgd, steps=20, snapshots=[10])
    result = eng.run(sweep)    # one compiled program for the six points
    print(result.images.shape, result.snapshots[10].shape, result.prob.shape)
    ```
    """

    _CONSTRUCTOR = ("model", "terms", "optimizer", "steps", "snapshots", "devices", "step_progress", "jitter",
                    "clip", "compute_dtype", "loop", "parameterization", "transforms", "views",
                    "plain_views")

    def __setattr__(self, name, value):
        if not name.startswith("_") and getattr(self, "_built", False):
            raise AttributeError(
                f"Engine.{name} is fixed once the engine is built: its compiled programs depend on it. Use "
                f"engine.replace({name}=...) for an engine with another value.")
        object.__setattr__(self, name, value)

    def replace(self, **changes) -> "Engine":
        """A new engine with some constructor arguments changed (and programs compiled afresh)."""
        unknown = sorted(set(changes) - set(self._CONSTRUCTOR))
        if unknown:
            raise TypeError(f"Engine.replace takes {', '.join(self._CONSTRUCTOR)}; got {unknown}.")
        return Engine(**{**self._arguments, **changes})

    @property
    def trace_count(self) -> int:
        """How many times the chunk program was traced (compiled)."""
        return self._trace_count

    def __init__(self, model, terms: Sequence[obj.Term] | obj.Objective | Sweep, optimizer: Optimizer = Optimizer(),
                 steps: int = 200,
                 snapshots: Sequence[int] = (), devices: Sequence[Any] | None = None, step_progress: bool = False,
                 jitter: int = 0, clip: bool = False, compute_dtype: str = "float32", loop: str = "auto",
                 parameterization: par.Parameterization = par.Parameterization(),
                 transforms: Sequence[Callable] = (), views: int = 1, plain_views: int = 0):
        terms = _terms_of(terms)
        object.__setattr__(self, "_arguments", dict(
            model=model, terms=terms, optimizer=optimizer, steps=steps, snapshots=tuple(snapshots),
            devices=devices, step_progress=step_progress, jitter=jitter, clip=clip, compute_dtype=compute_dtype,
            loop=loop, parameterization=parameterization, transforms=tuple(transforms), views=views,
            plain_views=plain_views))
        if not terms:
            raise SweepError("the loss has no terms; give at least one objective term.")
        for t in terms:
            t.fits(model)
        if callable(optimizer) and not isinstance(optimizer, Optimizer):
            optimizer = Optimizer(optimizer)  # an optax factory (optax.adam) as it is
        if not isinstance(optimizer, Optimizer):
            raise SweepError(f"optimizer is an engine.Optimizer (Optimizer(optax.adam), ...); got {optimizer!r}.")
        if steps <= 0:
            raise SweepError(f"steps must be a positive number of iterations, got {steps}.")
        bad = [s for s in snapshots if not 0 <= int(s) <= steps]
        if bad:
            raise SweepError(f"snapshot iterations must lie in 0..steps ({steps}), got {bad}.")
        if jitter < 0 or jitter >= min(model.spec.input_size):
            raise SweepError(f"jitter is a shift in pixels, 0 <= jitter < {min(model.spec.input_size)}; got {jitter}.")
        self.jitter = int(jitter)
        self.clip = bool(clip)
        if not isinstance(parameterization, par.Parameterization):
            raise SweepError(f"parameterization must be a jaxvis.parameterizations value (pixels(), fourier(), ...), "
                             f"got {parameterization!r}.")
        parameterization.check(tuple(model.spec.input_size))
        if self.clip and not parameterization.identity:
            raise SweepError(f"clip projects the pixels parameterisation; {parameterization.name} maps into the "
                             "valid range itself (add sigmoid or clip to it).")
        self.parameterization = parameterization
        bad = [t for t in transforms if not callable(t)]
        if bad:
            raise SweepError(f"transforms are functions (key, image, boxes, step, ctx) -> (image, boxes), such as "
                             f"jaxvis.transforms' jitter(4), scale(0.9, 1.1), ...; got {bad}.")
        # The historical jitter setting is the first transform.
        self.transforms = ((tfm.jitter(self.jitter),) if self.jitter else ()) + tuple(transforms)
        tfm.check(self.transforms, tuple(model.spec.input_size))
        if int(views) != views or views < 1:
            raise SweepError(f"views is a number of transformed copies per step, >= 1; got {views}.")
        if views > 1 and not self.transforms:
            raise SweepError(f"views={views} averages over random transforms, but the engine has none; give "
                             "transforms (or views=1).")
        self.views = int(views)
        if int(plain_views) != plain_views or not 0 <= plain_views < views:
            raise SweepError(f"plain_views is how many of the {views} views see the image untransformed, 0 <= "
                             f"plain_views < views (at least one view keeps the transforms); got {plain_views}.")
        self.plain_views = int(plain_views)
        if compute_dtype not in ("float32", "bfloat16"):
            raise SweepError(f"compute_dtype must be float32 or bfloat16, got {compute_dtype!r}.")
        self.compute_dtype = compute_dtype
        # bfloat16: the network runs in bfloat16 (activations and matmuls, for GPUs and TPUs), while the
        # image, the loss terms and the optimiser stay in float32.
        self._module = model.module if compute_dtype == "float32" else model.module.clone(dtype=jnp.bfloat16)
        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.model = model
        self.terms = tuple(terms)
        self.optimizer = optimizer
        self.steps = int(steps)
        self.snapshots = tuple(sorted({0, *map(int, snapshots)}))
        if loop not in ("auto", "scan", "host"):
            raise SweepError(f"loop must be auto, scan or host, got {loop!r}.")
        self._on_cpu = all(d.platform == "cpu" for d in self.devices)
        self.loop = self._auto_loop() if loop == "auto" else loop
        self.mesh = Mesh(np.array(self.devices), ("points",))
        self.step_progress = step_progress
        self._report_every = max(1, self.steps // 50)  # steps between progress updates
        lo, hi = self._bounds()
        self.config = core.EngineConfig(
            module=self._module, model=model, terms=self.terms, optimizer=optimizer, steps=self.steps, snapshots=self.snapshots,
            jitter=self.jitter, clip=self.clip, lo=lo, hi=hi, compute_dtype=compute_dtype,
            detector=model.spec.is_detector, input_size=tuple(model.spec.input_size),
            parameterization=parameterization, to_input=par.InputMap.of(model.spec),
            view_transforms=((),) * self.plain_views + (self.transforms,) * (self.views - self.plain_views))
        self._trace_count = 0
        self._interrupted = False  # a KeyboardInterrupt was raised in a progress callback from the device
        self._progress: Callable[[ProgressEvent], None] | None = None
        self._chunk_state = (0, 0, 0)  # (chunks done, chunks to run, last step told) of the run in progress
        self._report_lock = threading.Lock()  # devices call back from threads of their own
        self._placed: tuple[Any, Any] | None = None  # (params given, params replicated over the devices)
        self._fn = jax.jit(self._chunk)
        self._host_fns = None
        self._built = True

    def _auto_loop(self) -> str:
        """The steps loop that "auto" takes: the scan on accelerators, and on CPUs when every convolution of
        the step is one of oneDNN's kernels; the host loop on CPUs where XLA's own convolutions run, which
        XLA's CPU backend runs about 3x slower inside a loop body than outside one. With oneDNN's kernels the
        scan is the faster of the two (one call per chunk: no per-step dispatch), see BENCHMARKS.md."""
        if not self._on_cpu:
            return "scan"
        params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), self.model.params)
        leaves, tree = jax.tree.flatten(params)
        return "scan" if onednn_only(self._module, tuple(self.model.input_shape(1)), (tuple(leaves), tree)) else "host"

    @property
    def term_names(self) -> list[str]:
        return [t.name for t in self.terms]

    # ----------------------------------------------------------------------------------------------
    # The compiled programs: the core's pure functions of ``self.config``.

    def loss(self, params, x, p, shift=None, view=None):
        """One point's (loss, (terms, score, probability)) on image ``x``: ``core.loss`` of this engine."""
        return core.loss(self.config, params, x, p, shift, view)

    def _bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The network-input values of black and white pixels: the box a valid image lives in."""
        lo = np.asarray(pre.normalize(self.model.spec, np.zeros(3, np.float32)))
        hi = np.asarray(pre.normalize(self.model.spec, np.ones(3, np.float32)))
        return tuple(map(float, np.minimum(lo, hi))), tuple(map(float, np.maximum(lo, hi)))

    def _per_device(self, fn, in_specs, out_specs):
        """``fn`` of a chunk, run by each device on its share of the points when there are several."""
        if len(self.devices) == 1:
            return fn
        # Points never interact, so each device's share is a chunk of its own; the replication check is
        # off because the model's convolution may be a custom call (oneDNN) that declares no rule for it.
        return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    def _init_chunk(self, pts):
        self._trace_count += 1
        return self._per_device(lambda pts: core.init_chunk(self.config, pts), (_POINTS,), _CARRY)(pts)

    def _chunk(self, params, pts):
        """The whole chunk as one program: the steps in a ``lax.scan`` (``loop="scan"``)."""
        self._trace_count += 1
        on_step = self._report_step if self.step_progress else None
        fn = lambda params, pts: core.chunk(self.config, params, pts, on_step, self._report_every)
        return self._per_device(fn, (_REPLICATED, _POINTS), {**_FINAL, **{k: _CURVE for k in core.CURVES}})(
            params, pts)

    def _host_loop(self, params, pts):
        """The chunk with the step loop on the host (``loop="host"``): one compiled step per iteration,
        dispatched asynchronously, the carry donated so that it is updated in place; nothing comes back
        to the host until the chunk ends (progress waits on a step's loss now and then)."""
        if self._host_fns is None:
            cfg = self.config
            step = self._per_device(lambda params, pts, carry, t: (*core.step(cfg, params, pts, carry, t), t + 1),
                                    (_REPLICATED, _POINTS, _CARRY, _REPLICATED), (_CARRY, _POINTS, _REPLICATED))
            final = self._per_device(lambda params, pts, carry: core.final(cfg, params, pts, carry),
                                     (_REPLICATED, _POINTS, _CARRY), _FINAL)
            self._host_fns = (jax.jit(self._init_chunk), jax.jit(step, donate_argnums=(2,)), jax.jit(final))
        init_fn, step_fn, final_fn = self._host_fns
        carry = init_fn(pts)
        # The step index lives on the device and counts there: no transfer from the host per step.
        t_device = jax.device_put(np.int32(0), NamedSharding(self.mesh, PartitionSpec()))
        curves = []
        for t in range(self.steps):
            carry, out, t_device = step_fn(params, pts, carry, t_device)
            curves.append(out)
            if self.step_progress and (t + 1) % self._report_every == 0:
                jax.block_until_ready(out[0])
                self._report_step(t + 1)
        stacked = [jnp.stack([c[k] for c in curves]) for k in range(4)]
        return {**final_fn(params, pts, carry), **dict(zip(core.CURVES, stacked))}

    def _report_step(self, step) -> None:
        # With several devices each one calls back for the same step, from its own thread: the check and
        # the update are one locked section, so that a step is told once and the steps in order.
        try:
            with self._report_lock:
                done, total, told = self._chunk_state
                if self._progress is not None and int(step) > told:
                    self._chunk_state = (done, total, int(step))
                    self._progress(ProgressEvent(done, total, int(step), self.steps, self._points_per_chunk))
        except KeyboardInterrupt:
            # Ctrl-C while the device called back: XLA turns the exception into a JaxRuntimeError;
            # run_points turns it back into the KeyboardInterrupt it was.
            self._interrupted = True
            raise

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
        self._interrupted = False
        try:
            if self.loop == "scan":
                out = jax.device_get(self._fn(self._placed[1], pts))
            else:
                out = jax.device_get(self._host_loop(self._placed[1], pts))
        except jax.errors.JaxRuntimeError as e:
            if self._interrupted or "KeyboardInterrupt" in str(e):  # Ctrl-C during a progress callback
                raise KeyboardInterrupt from None
            raise
        return Result.from_outputs(out, self.snapshots)

    def run(self, sweep: Sweep, chunk_size: int | None = None,
            progress: Callable[[ProgressEvent], None] | bool | None = None,
            on_chunk: Callable[[int, slice, Result], None] | None = None, skip_chunks: Sequence[int] = (),
            chunks: Sequence[int] | None = None) -> Result | None:
        """Runs ``sweep``. ``progress(event)`` is told of each chunk started and finished (and of the steps
        within a chunk with ``step_progress``); ``on_chunk(index, points_slice, result)`` receives each
        finished chunk (to write it out; then nothing is kept in memory, which stays bounded by a chunk);
        chunks in ``skip_chunks`` are not run; ``chunks`` restricts the run to those chunk indices. Without
        ``on_chunk`` returns the whole grid's Result; with it, returns None."""
        if progress is True:
            raise TypeError("progress takes a callback (ProgressEvent -> None) or None; the launchers' "
                            "progress bar is experiments._launch.progress_bar().")
        sweep.validate(self.model, self.terms, self.steps)
        arrays = sweep.arrays(self.term_names)
        n = sweep.size
        size = self.chunk_size(n, chunk_size)
        n_chunks = (n + size - 1) // size
        skip = set(skip_chunks)
        todo = [c for c in (range(n_chunks) if chunks is None else chunks) if c not in skip]
        self._progress = progress or None
        self._points_per_chunk = size
        parts = []
        try:
            for done, c in enumerate(todo):
                with self._report_lock:
                    self._chunk_state = (done, len(todo), 0)
                    if self._progress is not None:
                        self._progress(ProgressEvent(done, len(todo), 0, self.steps, size))
                lo, hi = c * size, min((c + 1) * size, n)
                idx = np.arange(lo, lo + size).clip(max=hi - 1)  # pad the last chunk with its last point
                chunk = {k: v[idx] for k, v in arrays.items()}
                if sweep.starts is not None:
                    chunk["start_image"] = sweep.start_images(chunk["start"])
                result = self.run_points(chunk).take(slice(0, hi - lo))
                if on_chunk is not None:
                    on_chunk(c, slice(lo, hi), result)
                else:
                    parts.append(result)
            if self._progress is not None:
                self._progress(ProgressEvent(len(todo), len(todo), 0, self.steps, size))
        finally:
            self._progress = None
        if on_chunk is None and len(todo) == n_chunks:
            return Result.concatenate(parts)
        return None

    def n_chunks(self, sweep: Sweep, chunk_size: int | None = None) -> tuple[int, int]:
        """(chunk size, number of chunks) that ``run`` would use."""
        size = self.chunk_size(sweep.size, chunk_size)
        return size, (sweep.size + size - 1) // size


@functools.lru_cache(maxsize=32)
def onednn_only(module, input_shape: tuple[int, ...], params) -> bool:
    """Whether every convolution of ``module``'s forward and input-gradient passes on a CPU runs in
    oneDNN's kernels (``jaxvis.conv``), from a trace (no compilation) of one image's input gradient.
    ``params``: (leaf shapes and dtypes, tree structure) of the parameters, hashable for the cache."""
    from jaxvis import conv

    if conv.backend_of(getattr(module, "conv_general_dilated", None)) not in ("auto", "onednn"):
        return False
    if not conv.onednn_available():
        return False

    def total(params, x):
        return sum(jnp.sum(a.astype(jnp.float32)) for a in jax.tree.leaves(module.apply(params, x)))

    with conv.record_xla_convolutions() as xla_convs:
        jax.eval_shape(jax.grad(total, argnums=1), jax.tree.unflatten(params[1], params[0]),
                       jax.ShapeDtypeStruct(input_shape, jnp.float32))
    return not xla_convs


def _terms_of(terms) -> tuple[obj.Term, ...]:
    """An engine's terms: given as terms, or as the terms of an objective or of a sweep's losses."""
    if isinstance(terms, (Sweep, obj.Objective)):
        return tuple(terms.terms)
    if isinstance(terms, obj.Term):
        return (terms,)
    terms = tuple(terms)
    bad = [t for t in terms if not isinstance(t, obj.Term)]
    if bad:
        raise SweepError(f"an engine's terms are jaxvis.objectives.Term values (or give an objective or the sweep: "
                         f"Engine(model, sweep)); got {bad[0]!r}.")
    return terms


def env_devices() -> list:
    """Devices to shard over: all local devices, or the first N when JAXVIS_DEVICES=N is set."""
    devices = jax.local_devices()
    n = os.environ.get("JAXVIS_DEVICES")
    return devices[: int(n)] if n else devices
