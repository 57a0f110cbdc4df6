"""Class-model sweeps from plain settings: parse them, build the model, sweep and engine, run the
chunks into a run directory (resumable, optionally spread over processes with jax.distributed) and
write the outputs. The ``experiments.class_model`` launcher and the demo call ``run``.

Settings are a dict with the launcher's flag names: model, params, categories, lrs, steps, objective,
penalty, loss, term_options, optimizer, momentum, jitter, clip, compute_dtype, init, seeds, boxes,
snapshots, chunk_size, display, out; and, optional, conv_backend and loop (how the engine computes:
they do not change what a run is, so a run may resume under other values).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from jaxvis.fileio import sha256

SETTINGS = ("model", "params", "categories", "lrs", "steps", "objective", "penalty", "loss", "term_options",
            "optimizer", "momentum", "jitter", "clip", "compute_dtype", "init", "seeds", "boxes", "snapshots",
            "chunk_size", "display", "out", "conv_backend", "loop")


class UsageError(ValueError):
    """Settings that cannot be read or do not go together."""


def _floats(values, what) -> list[float]:
    try:
        return [float(v) for v in (values if isinstance(values, (list, tuple)) else str(values).split(","))]
    except ValueError:
        raise UsageError(f"{what} must be numbers, got {values!r}") from None


def parse_loss(text: str) -> dict[str, float]:
    """``score+0.1*sq`` -> {"score": 1.0, "sq": 0.1}."""
    loss = {}
    for part in text.replace(" ", "").split("+"):
        m = re.fullmatch(r"(?:([0-9.eE-]+)\*)?([a-z_0-9]+)", part)
        if not m:
            raise UsageError(f"cannot read loss {text!r}: write terms joined by '+', e.g. score+0.1*sq")
        loss[m.group(2)] = float(m.group(1)) if m.group(1) else 1.0
    return loss


def parse_term_options(entries) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for entry in entries:
        term, _, rest = entry.partition(":")
        key, _, value = rest.partition("=")
        if not (term and key and value):
            raise UsageError(f"term option {entry!r} should read term:key=value, e.g. activation:layer=conv5_3_pre")
        if key == "position":
            value = tuple(int(v) for v in re.split(r"[,x]", value))
        elif key == "eps":
            value = float(value)
        out.setdefault(term, {})[key] = value
    return out


def parse_boxes(entries, input_size) -> list[list[list[float]]]:
    h, w = input_size
    sets = []
    for entry in entries or []:
        if entry in ("whole", "whole_image"):
            sets.append([[0.0, 0.0, float(w), float(h)]])
        elif entry in ("centre_quarter", "center_quarter"):
            sets.append([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]])
        else:
            boxes = []
            for part in entry.split(";"):
                nums = _floats(part, "box coordinates")
                if len(nums) != 4:
                    raise UsageError(f"a box is x1,y1,x2,y2; got {part!r}")
                boxes.append(nums)
            sets.append(boxes)
    return sets or [[]]


def build(settings: dict, step_progress: bool = False):
    """(model, sweep, engine, run config) from the settings."""
    import jaxvis
    from jaxvis import engine as eng
    from jaxvis import labels as lab

    if not settings["params"]:
        raise UsageError("--params is required: a jaxvis params file (convert one with python -m converters.torchvision).")
    if not settings["out"]:
        raise UsageError("--out is required: the run directory.")
    model = jaxvis.load(settings["params"], arch=settings["model"] or None)
    model = model.with_conv_backend(settings.get("conv_backend") or "auto")
    detector = model.spec.is_detector
    if settings["loss"]:
        if settings["objective"] or settings["penalty"]:
            raise UsageError("give either --loss variants or --objective/--penalty, not both.")
        losses = [parse_loss(text) for text in settings["loss"]]
        factors = {}
    else:
        objective = settings["objective"] or ("multibox" if detector else "score")
        loss = {objective: 1.0}
        factors = {}
        for entry in settings["penalty"]:
            name, _, values = entry.partition("=")
            if not values:
                raise UsageError(f"--penalty reads name=weight(s), e.g. sq=1 or sq=0.1,1,10; got {entry!r}")
            weights = _floats(values, f"weights of penalty {name}")
            loss[name] = 1.0
            factors[name] = weights
        losses = [loss]
    options = parse_term_options(settings["term_options"])
    probe = eng.Sweep(targets=[0], lrs=[1.0], losses=losses)
    terms = eng.terms_for(model, probe, options)
    if not settings["categories"]:
        raise UsageError("--categories is required: class names or indices.")
    categories = settings["categories"]
    if isinstance(categories, str):
        categories = categories.split(",")
    if "activation" in probe.term_names:
        targets = [int(c) for c in categories]
    else:
        targets = lab.resolve(categories, model.spec.labels)
    sweep = eng.Sweep(
        targets=targets, lrs=_floats(settings["lrs"], "--lrs"), losses=losses, weights=factors,
        init_scales=_floats(settings["init"], "--init"), seeds=[int(s) for s in _floats(settings["seeds"], "--seeds")],
        boxes=parse_boxes(settings["boxes"], model.spec.input_size))
    optimizer = eng.Optimizer(settings["optimizer"], momentum=settings["momentum"])
    engine = eng.Engine(model, terms, optimizer=optimizer, steps=int(settings["steps"]),
                        snapshots=[int(s) for s in _floats(settings["snapshots"], "--snapshots")] if settings["snapshots"] else (),
                        devices=eng.env_devices(), step_progress=step_progress,
                        jitter=int(settings.get("jitter") or 0), clip=bool(settings.get("clip")),
                        compute_dtype=settings.get("compute_dtype") or "float32", loop=settings.get("loop") or "auto")
    sweep.validate(model, terms, engine.steps)
    size, n_chunks = engine.n_chunks(sweep, settings["chunk_size"])
    run_config = {
        "arch": model.spec.arch, "params_sha256": sha256(settings["params"]),
        "terms": [[t.name, dict(t.options)] for t in terms], "optimizer": optimizer.__dict__,
        "steps": engine.steps, "snapshots": list(engine.snapshots), "axes": sweep.axes(),
        "jitter": engine.jitter, "clip": engine.clip, "compute_dtype": engine.compute_dtype,
        "chunk_size": size, "n_chunks": n_chunks,
    }
    return model, sweep, engine, run_config


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

    def barrier(self, name: str) -> None:
        if self.size > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def run(settings: dict, resume: bool = False, progress: bool = True, cluster: Cluster | None = None) -> str | None:
    """Runs (or resumes) a sweep and writes its outputs; returns the index.html path (on process 0).

    On several processes every process runs the chunks whose index is its rank modulo the process count,
    and writes them into the shared run directory; process 0 then assembles the outputs.
    """
    from jaxvis import render
    from jaxvis.rundir import RunDir, RunDirError

    cluster = cluster or Cluster()
    model, sweep, engine, run_config = build(settings, step_progress=progress)
    if cluster.size > 1:
        # Every process must cut the grid the same way: process 0's chunk size wins.
        size = cluster.broadcast(run_config["chunk_size"])
        run_config["chunk_size"], run_config["n_chunks"] = size, (sweep.size + size - 1) // size
    out = settings["out"]
    rundir, problem = None, ""
    if cluster.rank == 0:
        try:
            rundir = RunDir(out, run_config, resume=resume)
        except RunDirError as e:
            problem = str(e)
    if cluster.broadcast(1 if problem else 0):
        if problem:
            raise RunDirError(problem)
        raise SystemExit(1)
    if rundir is None:
        rundir = RunDir(out, run_config, resume=True)  # created and checked by process 0
    done = rundir.done_chunks()
    n_chunks = run_config["n_chunks"]
    mine = [c for c in range(n_chunks) if c % cluster.size == cluster.rank]
    where = f" (process {cluster.rank} of {cluster.size}: {len(mine)} chunk(s))" if cluster.size > 1 else ""
    print(f"{model.spec.arch}: {sweep.size} grid points x {engine.steps} steps in {n_chunks} chunk(s) of "
          f"{run_config['chunk_size']} on {len(engine.devices)} device(s){where}; "
          f"{len(done)} chunk(s) already done.")
    settings_shown = {k: settings.get(k) for k in SETTINGS if k != "out"}
    if cluster.rank == 0:  # the report page from the start; each finished chunk appears on it
        render.start_report(out, model.spec, sweep, engine.term_names, settings_shown, run_config, rundir,
                            settings["display"])

    def on_chunk(index, points, result):
        rundir.save_chunk(index, points, result)
        render.write_chunk(out, model.spec, sweep, engine.term_names, index, points, result, settings["display"])
        if cluster.rank == 0:
            render.start_report(out, model.spec, sweep, engine.term_names, settings_shown, run_config)

    start = time.time()
    try:
        engine.run(sweep, chunk_size=run_config["chunk_size"], progress=progress, skip_chunks=sorted(done),
                   chunks=mine, on_chunk=on_chunk)
    except KeyboardInterrupt:
        finished = len(rundir.done_chunks())
        print(f"\ninterrupted: {finished} of {n_chunks} chunks are saved in {out}; continue with --resume.",
              file=sys.stderr)
        raise SystemExit(130) from None
    cluster.barrier("jaxvis-chunks-done")
    if cluster.rank != 0:
        print(f"process {cluster.rank}: my chunks are done in {time.time() - start:.1f} s; process 0 writes the outputs.")
        return None
    index = render.write_sweep(out, model.spec, sweep, rundir.chunks(n_chunks), engine.term_names, settings_shown,
                               display=settings["display"])
    elapsed = time.time() - start
    with open(os.path.join(out, "results.jsonl")) as f:
        n_div = sum(json.loads(line)["diverged"] for line in f)
    print(f"done in {elapsed:.1f} s; {n_div} diverged. Open {index}")
    return index


