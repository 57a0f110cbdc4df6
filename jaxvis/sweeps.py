"""Class-model sweeps from settings: build the model, sweep and engine, run the chunks into a run
directory (resumable, optionally spread over processes with jax.distributed) and write the outputs.
The ``experiments.class_model`` launcher and the demo call ``run``.

The settings are a ``jaxvis.settings.SweepSettings`` (every field, its default and its meaning are
there); a plain mapping of some of its fields is read into one. conv_backend and loop say how the
engine computes, not what a run is, so a run may resume under other values.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from typing import Any, Mapping, Sequence

import numpy as np

from jaxvis.fileio import sha256
from jaxvis.settings import SettingsError, SweepSettings


class UsageError(ValueError):
    """Settings that cannot be read or do not go together."""


def as_settings(settings: SweepSettings | Mapping[str, Any]) -> SweepSettings:
    """``settings`` as a SweepSettings (a mapping is read field by field; unknown fields are an error)."""
    if isinstance(settings, SweepSettings):
        return settings
    try:
        return SweepSettings.from_mapping(settings)
    except SettingsError as e:
        raise UsageError(str(e)) from None


def build(settings: SweepSettings | Mapping[str, Any], step_progress: bool = False):
    """(model, sweep, engine, run config) from the settings."""
    import jaxvis
    from jaxvis import engine as eng
    from jaxvis import labels as lab
    from jaxvis import objectives as obj
    from jaxvis import parameterizations as par
    from jaxvis import transforms as tfm

    from jaxvis import cli

    settings = as_settings(settings)
    if not settings.params:
        raise UsageError("--params is required: a jaxvis params file (convert one with python -m converters.torchvision).")
    model = jaxvis.load(settings.params, arch=settings.model or None)
    model = model.with_conv_backend(settings.conv_backend)
    detector = model.spec.is_detector
    try:
        options = cli.term_option_entries(settings.term_options)
        if settings.loss:
            if settings.objective or settings.penalty:
                raise UsageError("give either --loss variants or --objective/--penalty, not both.")
            losses = [cli.loss(text, options) for text in settings.loss]
            factors = {}
        else:
            name = settings.objective or ("multibox" if detector else "score")
            loss = cli.term_named(name, options.get(name))
            factors = {}
            for entry in settings.penalty:
                name, weights = cli.penalty(entry)
                penalty = cli.term_named(name, options.get(name))
                loss = loss + penalty
                factors[penalty.terms[0].name] = weights
            losses = [loss]
        optimizer = cli.optimizer(settings.optimizer, settings.momentum)
        probe = eng.Sweep(targets=[0], lrs=[1.0], losses=losses)
        for t in probe.terms:  # before the categories are read: a missing layer says so, not "not a channel"
            t.fits(model)
    except (cli.TextError, obj.ObjectiveError, eng.SweepError) as e:
        raise UsageError(str(e)) from None
    terms = probe.terms
    if not settings.categories:
        raise UsageError("--categories is required: class names or indices.")
    if any(t.channel_of is not None for t in terms):
        try:
            targets = [int(c) for c in settings.categories]
        except ValueError:
            raise UsageError(f"the objective's target is a channel: give channel indices as categories, got "
                             f"{list(settings.categories)}.") from None
    else:
        targets = lab.resolve(list(settings.categories), model.spec.labels)
    files = start_image_files(settings.start_images)
    try:
        box_sets = cli.boxes(settings.boxes, model.spec.input_size)
    except cli.TextError as e:
        raise UsageError(str(e)) from None
    sweep = eng.Sweep(
        targets=targets, lrs=list(settings.lrs), losses=losses, weights=factors,
        init_scales=list(settings.init), seeds=list(settings.seeds),
        boxes=box_sets, decays=list(settings.decays),
        starts=load_start_images(model, files) if files else None)
    try:
        parameterization = cli.parameterization(settings.parameterization, model, settings.image_stats)
        transforms = cli.transforms(settings.transforms)
    except (par.ParameterizationError, tfm.TransformError) as e:
        raise UsageError(str(e)) from None
    if settings.decays and not isinstance(parameterization.basis, par.Fourier):
        raise UsageError(f"decays sweep the fourier parameterisation's decay; {parameterization.name} has none.")
    reads_stats = any(isinstance(s, (par.Decorrelated, par.Maco)) for s in parameterization.stages)
    if settings.image_stats and not reads_stats:
        raise UsageError(f"--image_stats is read by the decorrelated and maco parameterisations; "
                         f"{parameterization.name} has neither, so the statistics would do nothing: drop --image_stats "
                         "or add decorrelated to --parameterization.")
    if settings.boxes and not detector and parameterization.find(par.BoxStart) is None:
        raise UsageError(f"--boxes sets the target boxes of detector objectives (box_loc, multibox, opacity_outside) "
                         f"and of boxstart; {model.spec.arch} is a classifier and this run has no boxstart, so the "
                         "boxes would do nothing: drop --boxes.")
    engine = eng.Engine(model, terms, optimizer=optimizer, steps=settings.steps, snapshots=settings.snapshots,
                        devices=eng.env_devices(), step_progress=step_progress, jitter=settings.jitter,
                        clip=settings.clip, compute_dtype=settings.compute_dtype, loop=settings.loop,
                        parameterization=parameterization, transforms=transforms, views=settings.views,
                        plain_views=settings.plain_views)
    sweep.validate(model, terms, engine.steps)
    size, n_chunks = engine.n_chunks(sweep, settings.chunk_size or None)
    run_config = {
        "arch": model.spec.arch, "params_sha256": sha256(settings.params),
        "terms": [[t.name, dict(t.options)] for t in terms],
        "optimizer": cli.optimizer_record(settings.optimizer, settings.momentum),
        "steps": engine.steps, "snapshots": list(engine.snapshots), "axes": sweep.axes(),
        "jitter": engine.jitter, "clip": engine.clip, "compute_dtype": engine.compute_dtype,
        "chunk_size": size, "n_chunks": n_chunks,
    }
    if not parameterization.identity or transforms:  # runs of the historical engine keep their identity
        run_config["parameterization"] = settings.parameterization
        run_config["image_stats"] = settings.image_stats
        run_config["transforms"] = [tfm.name_of(t) for t in engine.transforms]
    if files:  # a run from other images (or the same files changed) is another run
        run_config["start_images"] = [[os.path.basename(f), sha256(f)] for f in files]
    if engine.views > 1:
        run_config["views"] = engine.views
    if engine.plain_views:
        run_config["plain_views"] = engine.plain_views
    return model, sweep, engine, run_config


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def start_image_files(entries) -> list[str]:
    """The image files of ``--start_images``: files as given, folders as their image files in name order."""
    files: list[str] = []
    for entry in entries:
        if os.path.isdir(entry):
            found = sorted(os.path.join(entry, n) for n in os.listdir(entry) if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise UsageError(f"start image folder {entry!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            files += found
        elif os.path.exists(entry):
            files.append(entry)
        else:
            raise UsageError(f"start image {entry!r} does not exist; give image files or folders of them.")
    return files


def load_start_images(model, files: Sequence[str]) -> np.ndarray:
    """(N, H, W, 3) network-input images from image files, resized as the model's preprocessing does."""
    from jaxvis import images as image_io
    from jaxvis import preprocess as pre

    try:
        loaded = [image_io.load_image(f) for f in files]
    except image_io.ImageError as e:
        raise UsageError(str(e)) from None
    return np.asarray(pre.preprocess(model.spec, loaded), np.float32)


class Cluster:
    """This process's place in a jax.distributed run (one process: a trivial cluster)."""

    def __init__(self, coordinator_address: str | None = None, num_processes: int = 1, process_id: int = 0):
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise UsageError(f"--process_id must lie in 0..{num_processes - 1} and --num_processes be >= 1; got "
                             f"process {process_id} of {num_processes}.")
        if num_processes > 1 and not coordinator_address:
            raise UsageError("--num_processes > 1 needs --coordinator_address host:port (process 0's address).")
        self.size, self.rank = num_processes, process_id
        if num_processes > 1:
            import jax

            if jax.config.jax_platforms in (None, "", "cpu"):
                jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                       process_id=process_id)

    def broadcast(self, value: int) -> int:
        """Process 0's value, on every process."""
        if self.size == 1:
            return int(value)
        import numpy as np
        from jax.experimental import multihost_utils

        return int(multihost_utils.broadcast_one_to_all(np.array(value, np.int64)))

    def stop_if(self, problem: str, error: type[Exception]) -> None:
        """Process 0's ``problem`` (empty: none) stops every process: ``error(problem)`` is raised on
        process 0, the others exit with status 1."""
        if self.broadcast(1 if problem else 0):
            if problem:
                raise error(problem)
            raise SystemExit(1)

    def barrier(self, name: str) -> None:
        if self.size > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def run(settings: SweepSettings | Mapping[str, Any], out: str, resume: bool = False, progress=None,
        cluster: Cluster | None = None, check_space: bool = True) -> str | None:
    """Runs (or resumes) a sweep into the run directory ``out`` and writes its outputs; returns the
    index.html path (on process 0). ``progress``: None, or a callback of ``jaxvis.engine.ProgressEvent``
    (told of chunks and of the steps within them; the launchers pass a progress bar).

    Process 0 first takes the run directory's lock (one writer per directory; a second run on it is
    refused at once), then states what the run will write and refuses it when that exceeds the disk's
    free space (unless ``check_space`` is False). A disk that fills up mid-run stops it with a
    DiskFullError; the finished chunks stay for ``resume``.

    On several processes every process runs the chunks whose index is its rank modulo the process count,
    and writes them into the shared run directory; process 0 then assembles the outputs.
    """
    cluster = cluster or Cluster()
    settings = as_settings(settings)

    def go():
        model, sweep, engine, run_config = build(settings, step_progress=progress is not None)
        return _execute(model, sweep, engine, run_config, settings.to_dict(), out, resume, progress, cluster,
                        check_space, settings.display, settings.pngs)
    return _locked(out, cluster, go)


def run_engine(engine, sweep, out: str, resume: bool = False, progress=None, display: str = "stretch",
               pngs: bool = True, chunk_size: int | None = None, cluster: Cluster | None = None,
               check_space: bool = True) -> str | None:
    """Runs ``sweep`` on ``engine`` (values built in Python: a user's own terms, parameterisation,
    transforms and optimiser included) into the run directory ``out``, as ``run`` does for the launcher's
    settings: the same chunk files, ``results.jsonl``, ``axes.json``, arrays, PNGs and report, resumable
    with ``resume``. The run's identity (what ``resume`` checks) is ``run_config(engine, sweep)``.

    Example:

    ```python
    import tempfile
    import optax
    import jaxvis
    from jaxvis import assets, engine, sweeps, objectives as O

    model = jaxvis.load(assets.path("classifier"))
    sweep = engine.Sweep(targets=[0, 5], lrs=[1.0], losses=[O.score()])
    eng = engine.Engine(model, sweep, optimizer=optax.sgd, steps=10)
    print(sweeps.run_engine(eng, sweep, tempfile.mkdtemp(), check_space=False))   # the report, index.html
    ```
    """
    cluster = cluster or Cluster()
    if progress is not None and not engine.step_progress:
        engine = engine.replace(step_progress=True)

    def go():
        config = run_config(engine, sweep, chunk_size)
        shown = {"model": config["arch"], "losses": [loss.name for loss in sweep.losses], "display": display,
                 **{k: config[k] for k in ("optimizer", "steps", "snapshots", "parameterization", "transforms",
                                           "views")}}
        return _execute(engine.model, sweep, engine, config, shown, out, resume, progress, cluster, check_space,
                        display, pngs)
    return _locked(out, cluster, go)


def run_config(engine, sweep, chunk_size: int | None = None) -> dict:
    """The identity of a run of ``sweep`` on ``engine`` (what a run directory keeps in ``config.json``):
    model and parameters (by content), terms, optimiser, steps, axes, parameterisation, transforms and
    the chunking. A user's term is known by its name."""
    from jaxvis.fileio import sha256_arrays
    from jaxvis.transforms import name_of

    size, n_chunks = engine.n_chunks(sweep, chunk_size)
    config = {
        "arch": engine.model.spec.arch, "params_sha256": sha256_arrays(engine.model.params),
        "terms": [[t.name, {k: getattr(v, "digest", v) for k, v in t.options}] for t in engine.terms],
        "optimizer": engine.optimizer.name, "steps": engine.steps, "snapshots": list(engine.snapshots),
        "axes": sweep.axes(), "jitter": engine.jitter, "clip": engine.clip, "compute_dtype": engine.compute_dtype,
        "chunk_size": size, "n_chunks": n_chunks, "parameterization": engine.parameterization.name,
        "transforms": [name_of(t) for t in engine.transforms], "views": engine.views,
        "plain_views": engine.plain_views,
    }
    if sweep.starts is not None:
        config["start_images"] = sweep.starts.digest
    return config


def _locked(out: str, cluster: Cluster, go):
    """``go()`` with the run directory ``out`` locked by process 0 for the whole cluster."""
    from jaxvis.fileio import DirLock, OutputError

    if not out:
        raise UsageError("--out is required: the run directory.")
    lock, problem = None, ""
    if cluster.rank == 0:  # process 0 holds the lock for the whole cluster
        try:
            lock = DirLock(out)
        except OutputError as e:
            problem = str(e)
    cluster.stop_if(problem, OutputError)
    finished = False
    try:
        index = go()
        finished = True
        return index
    finally:
        if lock is not None:
            lock.release(remove=not finished)  # a directory made for a refused run goes again


def _close(progress) -> None:
    """Closes a progress callback that draws a bar (``experiments._launch.progress_bar``), so that the run's
    own last line comes after it."""
    close = getattr(progress, "close", None)
    if callable(close):
        close()


def _execute(model, sweep, engine, run_config, settings_shown, out, resume, progress, cluster, check_space,
             display, pngs):
    from jaxvis import render
    from jaxvis.rundir import OutputPlan, RunDir, RunDirError, space_guard

    out = str(out)
    progress = progress or None
    if cluster.size > 1:
        # Every process must cut the grid the same way: process 0's chunk size wins.
        size = cluster.broadcast(run_config["chunk_size"])
        run_config["chunk_size"], run_config["n_chunks"] = size, (sweep.size + size - 1) // size
    plan = OutputPlan.make(out, model.spec.input_size, [(name, len(v)) for name, v in sweep.axes()],
                           run_config["chunk_size"], engine.steps, len(engine.snapshots), len(engine.terms),
                           engine.loop, pngs=pngs)
    n_chunks = run_config["n_chunks"]
    mine = [c for c in range(n_chunks) if c % cluster.size == cluster.rank]
    where = f" (process {cluster.rank} of {cluster.size}: {len(mine)} chunk(s))" if cluster.size > 1 else ""

    def state(done):
        print(f"{model.spec.arch}: {sweep.size} grid points x {engine.steps} steps in {n_chunks} chunk(s) of "
              f"{run_config['chunk_size']} on {len(engine.devices)} device(s){where}; "
              f"{len(done)} chunk(s) already done.")

    rundir, problem = None, ""
    if cluster.rank == 0:
        try:
            done = RunDir.check(out, run_config, resume=resume)
            state(done)
            print(plan.describe(len(done)), flush=True)
            if check_space:
                plan.check(len(done))
            rundir = RunDir(out, run_config, resume=resume)
        except RunDirError as e:
            problem = str(e)
    cluster.stop_if(problem, RunDirError)
    if rundir is None:
        rundir = RunDir(out, run_config, resume=True)  # created and checked by process 0
        state(rundir.done_chunks())
    done = rundir.done_chunks()
    if cluster.rank == 0:  # the report page from the start; each finished chunk appears on it
        with space_guard(rundir, plan, "the report page"):
            render.start_report(out, model.spec, sweep, engine.term_names, settings_shown, run_config, rundir,
                                display, pngs=pngs)

    def on_chunk(index, points, result):
        rundir.save_chunk(index, points, result)
        render.write_chunk(out, model.spec, sweep, engine.term_names, index, points, result, display, pngs=pngs)
        if cluster.rank == 0:
            render.start_report(out, model.spec, sweep, engine.term_names, settings_shown, run_config, pngs=pngs)

    start = time.time()
    try:
        with space_guard(rundir, plan, "a chunk file"):
            engine.run(sweep, chunk_size=run_config["chunk_size"], progress=progress, skip_chunks=sorted(done),
                       chunks=mine, on_chunk=on_chunk)
    except KeyboardInterrupt:
        _close(progress)
        finished = len(rundir.done_chunks())
        print(f"\ninterrupted: {finished} of {n_chunks} chunks are saved in {out}; continue with --resume.",
              file=sys.stderr)
        raise SystemExit(130) from None
    cluster.barrier("jaxvis-chunks-done")
    if cluster.rank != 0:
        print(f"process {cluster.rank}: my chunks are done in {time.time() - start:.1f} s; process 0 writes the outputs.")
        return None
    plan.check_assembly()
    try:
        with space_guard(rundir, plan, "the assembled outputs"):
            index = render.write_sweep(out, model.spec, sweep, rundir.chunks(n_chunks), engine.term_names,
                                       settings_shown, display=display, pngs=pngs)
    except KeyboardInterrupt:
        _close(progress)
        print(f"\ninterrupted while writing the outputs: all {n_chunks} chunks are saved in {out}; continue with "
              "--resume to write them.", file=sys.stderr)
        raise SystemExit(130) from None
    finally:  # the assembled arrays' temporary files, left by a failure part-way (renamed when complete)
        for name in (".images.npy.part", ".snapshots.npy.part"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out, name))
    elapsed = time.time() - start
    with open(os.path.join(out, "results.jsonl")) as f:
        n_div = sum(json.loads(line)["diverged"] for line in f)
    if n_div:
        from jaxvis.engine.core import DIVERGENCE_FACTOR

        rundir.warn(f"{n_div} of {sweep.size} points diverged: their loss, gradient or image turned non-finite, or "
                    f"their image grew past {DIVERGENCE_FACTOR:,.0f} times the valid range (see "
                    "jaxvis.engine); each keeps its last image before that step (results.jsonl: diverged, "
                    "diverged_step). Lower their learning rates.")
        from jaxvis import report

        report.write_sweep_page(out)  # the page lists the run's warnings too
    print(f"done in {elapsed:.1f} s; {n_div} diverged. Open {index}")
    return index
