"""A sweep's run directory: its configuration, and results written chunk by chunk so a run resumes.

Layout::

  run/config.json            what was asked (model, loss, optimiser, steps, axes, chunk size)
  run/chunks/00003.npz       one finished chunk, written to a temporary file then renamed
  run/images.npy …           the assembled outputs (see jaxvis.render.write_sweep)

A chunk file exists only once its chunk finished, so a run killed at any point and resumed recomputes
only unfinished chunks; resuming with a different configuration is refused.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jaxvis.engine import Result
from jaxvis.fileio import atomic_write


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
        else:
            os.makedirs(self.path, exist_ok=True)
            atomic_write(config_path, lambda f: f.write(json.dumps(self.config, indent=2, sort_keys=True).encode()))

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
        arrays = {
            "start": np.array(points.start), "stop": np.array(points.stop),
            "images": result.images, "snapshot_steps": np.array(sorted(result.snapshots)),
            "snapshots": np.stack([result.snapshots[k] for k in sorted(result.snapshots)]),
            "loss": result.loss, "score": result.score, "prob": result.prob, "terms": result.terms,
            "final_loss": result.final_loss, "final_score": result.final_score, "final_prob": result.final_prob,
            "diverged_step": result.diverged_step,
        }
        atomic_write(self.chunk_path(index), lambda f: np.savez(f, **arrays))

    def load_chunk(self, index: int) -> tuple[slice, Result]:
        with np.load(self.chunk_path(index)) as z:
            steps = [int(s) for s in z["snapshot_steps"]]
            result = Result(
                images=z["images"], snapshots=dict(zip(steps, z["snapshots"])), loss=z["loss"], score=z["score"],
                prob=z["prob"], terms=z["terms"], final_loss=z["final_loss"], final_score=z["final_score"],
                final_prob=z["final_prob"], diverged_step=z["diverged_step"])
            return slice(int(z["start"]), int(z["stop"])), result

    def chunks(self, n_chunks: int):
        """Yields (points slice, Result) for every chunk in grid order, one file at a time (all must exist)."""
        missing = sorted(set(range(n_chunks)) - self.done_chunks())
        if missing:
            raise RunDirError(f"{self.path} lacks chunks {missing}; run again with --resume to finish them.")
        for i in range(n_chunks):
            yield self.load_chunk(i)

