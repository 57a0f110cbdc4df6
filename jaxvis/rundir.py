"""A sweep's run directory: its configuration, and results written chunk by chunk so a run resumes.

Layout::

  run/config.json            what was asked (model, loss, optimiser, steps, axes, chunk size)
  run/chunks/00003.npz       one finished chunk, written to a temporary file then renamed
  run/images.npy …           the assembled outputs (see jaxvis.render.write_sweep)

  run/.lock                  the writer's lock (jaxvis.fileio.DirLock): one process writes a run at a time

A chunk file exists only once its chunk finished, so a run killed at any point and resumed recomputes
only unfinished chunks; resuming with a different configuration is refused. Each chunk file carries the
identity of its run (``run_digest``: the sha256 of the canonical config) and its points' range; before a
run continues, every chunk file is read back and checked (readable, this run's digest, the range of its
index, the arrays' shapes). One that fails is moved aside to ``chunks/NNNNN.npz.rejected`` (kept, never
read) and recomputed, with a warning on the terminal and in ``run/warnings.jsonl``. Chunk files without a
``config.json`` are continued only when their digests say they are this run's. Before the first step a run
states what it will write (``OutputPlan``) and refuses to start when that exceeds the disk's free space;
a disk that fills up anyway stops the run with ``DiskFullError`` (``space_guard``), its finished chunks
intact for ``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import zipfile
import zlib
from typing import Any, Sequence

import numpy as np

from jaxvis.engine import Result
from jaxvis.fileio import NO_SPACE, atomic_write, free_bytes, human_bytes


class RunDirError(ValueError):
    """A run directory that does not fit the run asked for."""


def _canonical(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, sort_keys=True))


def run_digest(config: dict[str, Any]) -> str:
    """The identity of a run: sha256 of its configuration as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


WARNINGS_FILE = "warnings.jsonl"


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
        self.digest = run_digest(self.config)
        self.warnings: list[str] = []
        config_path = os.path.join(self.path, "config.json")
        write_config, bad = self._check(resume)
        for index, problem in sorted(bad.items()):  # set aside (kept, never read) and computed again
            moved = self._set_aside(index)
            self.warnings.append(f"chunk file {self.chunk_path(index)} {problem}; it is moved to {moved} and its "
                                 "points are computed again.")
        if write_config:
            os.makedirs(self.path, exist_ok=True)
            try:
                atomic_write(config_path, lambda f: f.write(json.dumps(self.config, indent=2, sort_keys=True).encode()))
            except OSError as e:
                if e.errno not in NO_SPACE:
                    raise
                raise DiskFullError(f"no space left on the disk of {self.path} to write its config.json "
                                    f"({human_bytes(free_bytes(self.path))} free); free space or choose another "
                                    "--out.") from None
        for message in self.warnings:
            self._record(message)

    @classmethod
    def check(cls, path: str, config: dict[str, Any], resume: bool = False) -> set[int]:
        """The finished chunks of the run in ``path`` that ``RunDir(path, config, resume)`` would continue
        (chunk files that fail their check are not among them: the run computes them again), or
        RunDirError; writes nothing."""
        rundir = cls.__new__(cls)
        rundir.path, rundir.config = os.fspath(path), _canonical(config)
        rundir.digest, rundir.warnings = run_digest(rundir.config), []
        _, bad = rundir._check(resume)
        return rundir.done_chunks() - set(bad)

    def _check(self, resume: bool) -> tuple[bool, dict[int, str]]:
        """Raises RunDirError unless this directory can hold the run; returns (whether config.json is to be
        written, {index: problem} of the chunk files that fail their check and are computed again)."""
        config_path = os.path.join(self.path, "config.json")
        done = self.done_chunks()
        if os.path.exists(config_path):
            with open(config_path) as f:
                try:
                    stored = json.load(f)
                except json.JSONDecodeError as e:
                    raise RunDirError(f"{config_path} is unreadable ({e}); remove the directory or choose another --out.") from None
            if not done:  # a run that finished no chunk (refused or stopped early): nothing to lose, taken over
                if stored != self.config:
                    self.warnings.append(f"{self.path} held a run that finished no chunk; its config.json is "
                                         "replaced by this run's.")
                return stored != self.config, {}
            if not resume:
                raise RunDirError(f"{self.path} already holds a run; pass --resume to continue it, or choose another "
                                  "--out.")
            if stored != self.config:
                raise RunDirError(f"{self.path} holds a run with another configuration; differing: "
                                  f"{'; '.join(_diff(self.config, stored))}. Resume with the same settings, or "
                                  "choose another --out.")
            return False, self._verify_all(done, legacy=True)
        if not done:
            return True, {}
        # Chunk files without the config.json that says whose they are: their digests must say so.
        bad = self._verify_all(done, legacy=False)
        foreign = sorted(i for i, problem in bad.items() if problem.startswith(_FOREIGN))
        if foreign:
            names = ", ".join(os.path.basename(self.chunk_path(i)) for i in foreign[:5])
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise RunDirError(f"{self.chunk_dir} holds chunk files that do not carry this run's digest "
                              f"({names}{more}), and {self.path} has no config.json to say whose they are; choose another --out, or "
                              "remove those chunk files to start afresh there.")
        if not resume:
            raise RunDirError(f"{self.path} already holds {len(done)} chunk file(s) of this run (its config.json is "
                              "missing); pass --resume to continue it, or choose another --out.")
        self.warnings.append(f"{self.path} had no config.json; its {len(done) - len(bad)} chunk file(s) carry this "
                             "run's digest and are continued, and config.json is written again.")
        return True, bad

    # ------------------------------------------------------------------------------------------------
    # Chunk files checked before they are used.

    def _expected_range(self, index: int) -> tuple[int, int] | None:
        size = self.config.get("chunk_size")
        axes = self.config.get("axes")
        if not isinstance(size, int) or not isinstance(axes, list):
            return None
        points = math.prod(len(values) for _, values in axes)
        return index * size, min((index + 1) * size, points)

    def verify_chunk(self, index: int, legacy: bool = True) -> str | None:
        """What is wrong with the chunk file of ``index`` (None: nothing): unreadable (truncated, bit
        flips: the zip's CRC), another run's digest, a range other than its index's, arrays of other
        shapes. ``legacy``: a file without a digest (written before chunks carried one) passes."""
        try:
            with open(self.chunk_path(index), "rb") as f, np.load(f) as z:  # the file closed whatever fails
                arrays = {k: z[k] for k in z.files}  # reads every array: the zip checks each one's CRC
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            return f"cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'truncated'})"
        digest = arrays.get("run_digest")
        if digest is None:
            if not legacy:
                return f"{_FOREIGN} (it carries no run digest)"
        elif str(digest) != self.digest:
            return f"{_FOREIGN} (its run digest {str(digest)[:12]}… is not this run's {self.digest[:12]}…)"
        try:
            start, stop = int(arrays["start"]), int(arrays["stop"])
        except (KeyError, TypeError, ValueError):
            return "has no points range (start, stop)"
        want = self._expected_range(index)
        if want is not None and (start, stop) != want:
            return f"holds points {start}..{stop - 1}, but chunk {index} is points {want[0]}..{want[1] - 1}"
        return _shape_problem(arrays, stop - start, self.config)

    def _verify_all(self, done: set[int], legacy: bool) -> dict[int, str]:
        problems = {}
        for i in sorted(done):
            path = self.chunk_path(i)
            st = os.stat(path)
            key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, st.st_ino, self.digest, legacy)
            if key not in _VERIFIED:  # check() then RunDir() read each file once
                if len(_VERIFIED) > 100_000:
                    _VERIFIED.clear()
                _VERIFIED[key] = self.verify_chunk(i, legacy)
            problems[i] = _VERIFIED[key]
        return {i: p for i, p in problems.items() if p is not None}

    def _set_aside(self, index: int) -> str:
        """Moves the chunk file of ``index`` to ``NNNNN.npz.rejected`` (never over an earlier one)."""
        path = self.chunk_path(index)
        target, k = path + ".rejected", 1
        while os.path.exists(target):
            k += 1
            target = f"{path}.rejected-{k}"
        os.replace(path, target)
        return target

    def warn(self, message: str) -> None:
        """States ``message`` on the terminal (stderr, as ``warning: ...``) and in the run's warnings.jsonl."""
        self.warnings.append(message)
        self._record(message)

    def _record(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)
        try:
            with open(os.path.join(self.path, WARNINGS_FILE), "a", encoding="utf-8") as f:
                f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "warning": message}) + "\n")
        except OSError:
            pass  # the terminal has it; a full disk stops the run elsewhere, saying so

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
        """Writes chunk ``index`` (points ``points``) with this run's digest, through a temporary file."""
        arrays = {"run_digest": np.array(self.digest), "start": np.array(points.start), "stop": np.array(points.stop),
                  **result.to_arrays()}
        atomic_write(self.chunk_path(index), lambda f: np.savez(f, **arrays))

    def load_chunk(self, index: int) -> tuple[slice, Result]:
        """(points slice, Result) of chunk ``index``; RunDirError naming the file when it cannot be read."""
        path = self.chunk_path(index)
        try:
            with open(path, "rb") as f, np.load(f) as z:
                return slice(int(z["start"]), int(z["stop"])), Result.from_arrays({k: z[k] for k in z.files})
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise RunDirError(f"chunk file {path} cannot be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'truncated'}); delete it and run again with "
                              "--resume to compute it again.") from None

    def chunks(self, n_chunks: int):
        """Yields (points slice, Result) for every chunk in grid order, one file at a time (all must exist)."""
        missing = sorted(set(range(n_chunks)) - self.done_chunks())
        if missing:
            raise RunDirError(f"{self.path} lacks chunks {missing}; run again with --resume to finish them.")
        for i in range(n_chunks):
            yield self.load_chunk(i)



_FOREIGN = "belongs to another run"
_VERIFIED: dict[tuple, str | None] = {}  # (file, mtime, size, inode, digest, legacy) -> its problem


def _shape_problem(arrays: dict[str, np.ndarray], n: int, config: dict[str, Any]) -> str | None:
    """What is wrong with a chunk's arrays for ``n`` points of the run ``config`` (None: nothing)."""
    names = ("images", "snapshots", "snapshot_steps", "loss", "score", "prob", "terms", "final_loss", "final_score",
             "final_prob", "diverged_step")
    missing = [k for k in names if k not in arrays]
    if missing:
        return f"lacks the arrays {missing}"
    steps, snapshots, terms = config.get("steps"), config.get("snapshots"), config.get("terms")
    images = arrays["images"]
    want = {"final_loss": (n,), "final_score": (n,), "final_prob": (n,), "diverged_step": (n,)}
    if isinstance(steps, int):
        want.update(loss=(steps, n), score=(steps, n), prob=(steps, n))
        if isinstance(terms, list):
            want["terms"] = (steps, n, len(terms))
    if images.ndim == 4:
        want["images"] = (n,) + images.shape[1:]
        if isinstance(snapshots, list):
            want["snapshots"] = (len(snapshots), n) + images.shape[1:]
    else:
        return f"holds images of shape {images.shape}, not (points, height, width, channels)"
    for k, shape in want.items():
        if arrays[k].shape != shape:
            return f"holds {k} of shape {arrays[k].shape}, expected {shape}"
    if isinstance(snapshots, list) and [int(v) for v in arrays["snapshot_steps"]] != snapshots:
        return f"holds snapshots of steps {arrays['snapshot_steps'].tolist()}, expected {snapshots}"
    return None


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
