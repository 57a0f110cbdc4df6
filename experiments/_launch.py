"""What every launcher does first, before any work: quiet logs and a usable output directory.

``start(out)`` at the top of a launcher's ``main``: JAX's and absl's INFO lines (such as JAX's probing
for TPU and GPU backends) stay out of the terminal unless ``--verbosity`` is given (``--verbosity=0``
shows INFO, ``1`` DEBUG); then ``out`` is checked: an existing file, a directory this user cannot write,
or a read-only file system ends the program with one line saying so.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging


def quiet_logs() -> None:
    """Warnings and errors only, unless the command line set --verbosity."""
    if flags.FLAGS["verbosity"].present:
        return
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)
    # XLA's own (C++) log lines, read when its backends start; set before the first jax.devices().
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def progress_bar():
    """A progress callback for ``Engine.run`` and ``sweeps.run``: a tqdm bar on stderr counting the
    point-steps of the run (chunks x points x steps), closed when the run ends."""
    from tqdm import tqdm

    bar = None

    def update(event) -> None:
        nonlocal bar
        total = event.chunks * event.steps * event.points_per_chunk
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, unit="point-step", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
        bar.set_postfix_str(f"chunk {min(event.chunks_done + 1, event.chunks)}/{event.chunks}", refresh=False)
        bar.update((event.chunks_done * event.steps + event.step) * event.points_per_chunk - bar.n)
        if event.chunks_done >= event.chunks:
            bar.close()

    return update


def start(out: str | None, what: str = "--out") -> None:
    """quiet_logs(), then exits with one line when ``out`` cannot be written (an absent ``out`` is left to
    the launcher's own message)."""
    quiet_logs()
    if out:
        from jaxvis.fileio import OutputError, check_output_dir

        try:
            check_output_dir(out, what)
        except OutputError as e:
            sys.exit(f"error: {e}")
