"""A sweep's run directory: its configuration, and results written chunk by chunk so a run resumes.

Layout::

  run/config.json            what was asked (model, loss, optimiser, steps, axes, chunk size)
  run/chunks/00003.npz       one finished chunk, written to a temporary file then renamed
  run/images.npy …           the assembled outputs (see jaxvis.render.write_sweep)

  run/.lock                  the writer's lock (jaxvis.fileio.DirLock): one process writes a run at a time

A chunk file exists only once its chunk finished, so a run killed at any point and resumed recomputes
only unfinished chunks; resuming with a different configuration is refused. Before the first step a run
states what it will write (``OutputPlan``) and refuses to start when that exceeds the disk's free space;
a disk that fills up anyway stops the run with ``DiskFullError`` (``space_guard``), its finished chunks
intact for ``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from jaxvis.engine import Result
from jaxvis.fileio import NO_SPACE, atomic_write, free_bytes, human_bytes


class RunDirError(ValueError):
    """A run directory that does not fit the run asked for."""


def _canonical(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, sort_keys=True))


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            out.append(f"{prefix}{key}")
        elif isinstance(a[key], dict) and isinstance(b[key], dict):
            out += _diff(a[key], b[key], f"{prefix}{key}.")
        elif a[key] != b[key]:
            out.append(f"{prefix}{key} ({b[key]!r} on disk, {a[key]!r} now)")
    return out


class RunDir:
    """Opens (or creates) a run directory for ``config``.

    Without ``resume`` an existing directory that holds results is refused (nothing is overwritten);
    with it, the stored configuration must equal ``config``.
    """

    def __init__(self, path: str, config: dict[str, Any], resume: bool = False):
        self.path = os.fspath(path)
        self.config = _canonical(config)
        config_path = os.path.join(self.path, "config.json")
        if self._check(resume):
            os.makedirs(self.path, exist_ok=True)
            try:
                atomic_write(config_path, lambda f: f.write(json.dumps(self.config, indent=2, sort_keys=True).encode()))
            except OSError as e:
                if e.errno not in NO_SPACE:
                    raise
                raise DiskFullError(f"no space left on the disk of {self.path} to write its config.json "
                                    f"({human_bytes(free_bytes(self.path))} free); free space or choose another "
                                    "--out.") from None

    @classmethod
    def check(cls, path: str, config: dict[str, Any], resume: bool = False) -> set[int]:
        """The finished chunks of the run in ``path`` that ``RunDir(path, config, resume)`` would continue,
        or RunDirError; writes nothing."""
        rundir = cls.__new__(cls)
        rundir.path, rundir.config = os.fspath(path), _canonical(config)
        rundir._check(resume)
        return rundir.done_chunks()

    def _check(self, resume: bool) -> bool:
        """Raises RunDirError unless this directory can hold the run; True when it holds none yet."""
        config_path = os.path.join(self.path, "config.json")
        if os.path.exists(config_path):
            with open(config_path) as f:
                try:
                    stored = json.load(f)
                except json.JSONDecodeError as e:
                    raise RunDirError(f"{config_path} is unreadable ({e}); remove the directory or choose another --out.") from None
            if not resume and (self.done_chunks() or stored != self.config):
                raise RunDirError(f"{self.path} already holds a run; pass --resume to continue it, or choose another "
                                  "--out.")
            if resume and stored != self.config:
                raise RunDirError(f"{self.path} holds a run with another configuration; differing: "
                                  f"{'; '.join(_diff(self.config, stored))}. Resume with the same settings, or "
                                  "choose another --out.")
            return False
        return True

    @property
    def chunk_dir(self) -> str:
        return os.path.join(self.path, "chunks")

    def chunk_path(self, index: int) -> str:
        return os.path.join(self.chunk_dir, f"{index:05d}.npz")

    def done_chunks(self) -> set[int]:
        if not os.path.isdir(self.chunk_dir):
            return set()
        return {int(name[:-4]) for name in os.listdir(self.chunk_dir) if name.endswith(".npz") and name[:-4].isdigit()}

    def save_chunk(self, index: int, points: slice, result: Result) -> None:
        arrays = {"start": np.array(points.start), "stop": np.array(points.stop), **result.to_arrays()}
        atomic_write(self.chunk_path(index), lambda f: np.savez(f, **arrays))

    def load_chunk(self, index: int) -> tuple[slice, Result]:
        with np.load(self.chunk_path(index)) as z:
            return slice(int(z["start"]), int(z["stop"])), Result.from_arrays({k: z[k] for k in z.files})

    def chunks(self, n_chunks: int):
        """Yields (points slice, Result) for every chunk in grid order, one file at a time (all must exist)."""
        missing = sorted(set(range(n_chunks)) - self.done_chunks())
        if missing:
            raise RunDirError(f"{self.path} lacks chunks {missing}; run again with --resume to finish them.")
        for i in range(n_chunks):
            yield self.load_chunk(i)



# ---------------------------------------------------------------------------------------------------
# What a run writes, and the disk it writes to.

class DiskFullError(RunDirError):
    """The run's outputs do not fit, or no longer fit, on its disk."""


_NPZ_OVERHEAD = 6000  # zip entries and .npy headers of one chunk file's 14 arrays (measured: about 4.6 kB)
_CURVE_PNG = 5000  # a 360x220 loss/score chart (measured: 3.5 to 5 kB)
_TEXT_PER_POINT = 800  # a line of results.jsonl and a row of index.html (measured: about 370 + 250 bytes)


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """What a sweep will write into its run directory, computed from the grid's axis lengths alone (a
    grid of millions of points is sized without enumerating them).

    Chunk files and the .npy arrays are counted exactly (up to the files' headers); PNG sizes are
    estimated as their raw pixel bytes (class models are noisy images that PNG barely compresses) and
    the charts, grids and pages from measured sizes.
    """

    path: str
    points: int
    chunk_size: int
    n_chunks: int
    programs: int
    chunk_bytes: int  # one full chunk file
    arrays: dict[str, int]  # assembled arrays: images.npy, snapshots.npy
    png_bytes: int  # the PNGs the run writes (0 with pngs=False)
    png_bytes_if_written: int  # what they would take
    text_bytes: int  # results.jsonl, index.html, config and axes

    @classmethod
    def make(cls, path: str, input_size: Sequence[int], axes: Sequence[tuple[str, int]], chunk_size: int,
             steps: int, n_snapshots: int, n_terms: int, loop: str, pngs: bool = True) -> "OutputPlan":
        """``axes``: (name, number of values) per axis in grid order; ``n_snapshots`` counts step 0;
        ``loop``: the engine's steps loop ("scan": one program per chunk size; "host": init, step, final)."""
        h, w = (int(v) for v in input_size)
        points = math.prod(n for _, n in axes)
        n_chunks = -(-points // chunk_size)
        image = h * w * 3 * 4
        per_point = (1 + n_snapshots) * image + (3 + n_terms) * steps * 4 + 4 * 4
        chunk_bytes = chunk_size * per_point + _NPZ_OVERHEAD
        arrays = {"images.npy": 128 + points * image, "snapshots.npy": 128 + n_snapshots * points * image}
        png = h * (3 * w + 1) + 100
        # Labelled grids (jaxvis.render.write_sweep): columns = targets (or the last varying axis), rows =
        # the next varying axis, one grid per combination of the others, at most 50; cells are 160 px.
        varying = [(name, n) for name, n in axes if n > 1]
        cells = 0
        if varying:
            col = next((v for v in varying if v[0] == "target"), varying[-1])
            rest = [v for v in varying if v is not col]
            others = math.prod(n for _, n in rest[1:])
            cells = min(50, others) * col[1] * (rest[0][1] if rest else 1)
        cell = min(h * w * 3, 160 * 160 * 3)
        iterations = min(points, 32) * n_snapshots * min(h * w * 3, 112 * 112 * 3) * 5 // 4
        png_all = points * ((1 + n_snapshots) * png + _CURVE_PNG) + cells * cell + iterations
        return cls(path=os.fspath(path), points=points, chunk_size=chunk_size, n_chunks=n_chunks,
                   programs=1 if loop == "scan" else 3, chunk_bytes=chunk_bytes, arrays=arrays,
                   png_bytes=png_all if pngs else 0, png_bytes_if_written=png_all,
                   text_bytes=points * _TEXT_PER_POINT + 64 * 1024)

    def outputs(self) -> int:
        """Bytes of the assembled outputs (arrays, PNGs, pages)."""
        return sum(self.arrays.values()) + self.png_bytes + self.text_bytes

    def needed(self, done_chunks: int = 0) -> int:
        """Bytes still to write when ``done_chunks`` chunk files exist."""
        return max(0, self.n_chunks - done_chunks) * self.chunk_bytes + self.outputs()

    def describe(self, done_chunks: int = 0) -> str:
        free = free_bytes(self.path)
        parts = [f"chunk files {human_bytes(self.n_chunks * self.chunk_bytes)}"]
        parts += [f"{name} {human_bytes(n)}" for name, n in self.arrays.items()]
        parts.append(f"PNGs {human_bytes(self.png_bytes)}" if self.png_bytes else "no PNGs")
        parts.append(f"results and pages {human_bytes(self.text_bytes)}")
        still = f"; {human_bytes(self.needed(done_chunks))} still to write" if done_chunks else ""
        return (f"{self.points:,} points in {self.n_chunks:,} chunk(s) of {self.chunk_size}, {self.programs} compiled "
                f"program(s); writes about {human_bytes(self.needed(0))} ({', '.join(parts)}){still}; "
                f"{human_bytes(free)} free on the disk of {self.path}.")

    def check(self, done_chunks: int = 0) -> None:
        """Raises DiskFullError when what is still to write exceeds the disk's free space."""
        needed, free = self.needed(done_chunks), free_bytes(self.path)
        if needed <= free:
            return
        fixes = ["fewer points or snapshots"]
        if self.png_bytes:
            fixes.append(f"--nopngs (saves {human_bytes(self.png_bytes)})")
        raise DiskFullError(
            f"{self.path} has {human_bytes(free)} free, but this run would write about {human_bytes(needed)} there "
            f"({self.points:,} points: {human_bytes((self.n_chunks - done_chunks) * self.chunk_bytes)} of chunk files, "
            f"{human_bytes(sum(self.arrays.values()))} of arrays, {human_bytes(self.png_bytes)} of PNGs). Write less "
            f"({', '.join(fixes)}), give --out on a disk with more room, or pass --nocheck_space to start anyway.")

    def check_assembly(self) -> None:
        """Raises DiskFullError when the assembled arrays cannot fit: they are written through memory maps,
        where a full disk would end the process with SIGBUS instead of an error."""
        needed, free = sum(self.arrays.values()), free_bytes(self.path)
        if needed > free:
            raise DiskFullError(
                f"{self.path} has {human_bytes(free)} free, too little for the run's assembled arrays "
                f"({human_bytes(needed)}; with PNGs and pages about {human_bytes(self.outputs())}). All "
                f"{self.n_chunks} chunks are saved: free space (or move {self.path} to a disk with room) and "
                "continue with --resume.")


@contextlib.contextmanager
def space_guard(rundir: RunDir, plan: OutputPlan, writing: str):
    """Turns a write that fails for lack of space (ENOSPC, EDQUOT) into DiskFullError naming the run
    directory, the chunks that are safe, and the space still needed."""
    try:
        yield
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        done = len(rundir.done_chunks())
        raise DiskFullError(
            f"no space left on the disk of {rundir.path} while writing {writing} ({human_bytes(free_bytes(rundir.path))} "
            f"free; about {human_bytes(plan.needed(done))} more are needed to finish). The {done} of {plan.n_chunks} "
            f"chunks saved so far are intact: free space (or move {rundir.path} to a disk with room) and continue "
            "with --resume.") from None
