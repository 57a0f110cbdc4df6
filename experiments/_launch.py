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
    point-steps of the run (chunks x points x steps), closed when the run ends; ``close()`` closes it
    sooner."""
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

    def close() -> None:
        """Closes the bar (before a last line of the run's own, such as an interrupted run's)."""
        if bar is not None:
            bar.close()

    update.close = close
    return update


def parse_flags(argv):
    """``app.run``'s flags parser for the launchers: a flag with a value of the wrong type (``--steps abc``),
    an unknown flag or a missing required one ends the program in one line, as every other bad input does."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {' '.join(str(e).split())}; --helpshort lists the flags.")


def exit_interrupted(message: str | None = None) -> None:
    """Ends the program after Ctrl-C with exit status 130 and, when given, one line on stderr; at once,
    without the interpreter's shutdown, which can crash while XLA compiles or OpenCV cuts in threads of their
    own. What was finished is already on disk (chunk and output files are written whole or not at all)."""
    if message:
        print(f"\n{message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def check_config_args(argv, names, default: str, flag: str = "config") -> None:
    """Exits with one line when the command line names a ``--config`` file that does not exist, or
    overrides a field that no setting has (``--config.stepz=3``): ml_collections reports both as tracebacks
    (the overrides while the flag is defined, so this runs first). ``names``: the settings' names."""
    from jaxvis.settings import unknown_message

    argv = list(argv)
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            break
        if arg in (f"--{flag}", f"-{flag}") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith((f"--{flag}=", f"-{flag}=")):
            path = arg.split("=", 1)[1]
        else:
            continue
        file, _, variant = path.partition(":")
        if not os.path.isfile(file):
            what = "is a directory, not a config file" if os.path.isdir(file) else "does not exist"
            sys.exit(f"error: --{flag} {file} {what}; give a config file such as {os.path.relpath(default)} "
                     f"(or leave --{flag} out for the defaults).")
        problem = config_problem(file, variant)
        if problem:
            sys.exit(f"error: --{flag} {path}: {problem}; see {os.path.relpath(default)} for the form.")
    unknown = []
    for arg in argv[1:]:
        if arg == "--":
            break
        for prefix in (f"--{flag}.", f"-{flag}.", f"--no{flag}.", f"-no{flag}."):
            if arg.startswith(prefix):
                field = arg[len(prefix):].split("=", 1)[0].split(".", 1)[0]
                if field not in names and field not in unknown:
                    unknown.append(field)
    if unknown:
        sys.exit(f"error: {unknown_message(unknown, given_as=f'--{flag}.')}")


def config_problem(file: str, variant: str = "") -> str | None:
    """Why the config file cannot give its settings (None: it can): a syntax error, no ``get_config``, or an
    error raised while ``get_config(variant)`` runs (a field set that a locked config does not have, an
    unknown variant). ml_collections would report each as a traceback while it parses the flags."""
    import runpy

    try:
        module = runpy.run_path(file)
    except SyntaxError as e:
        return f"line {e.lineno} is not Python ({e.msg})"
    except Exception as e:  # noqa: BLE001  (whatever the file raises is reported in one line)
        return f"running the file raised {type(e).__name__}: {_first_line(e)}"
    get_config = module.get("get_config")
    if not callable(get_config):
        return "the file defines no get_config() function, which returns the settings"
    try:
        get_config(variant) if variant else get_config()
    except Exception as e:  # noqa: BLE001
        return f"get_config({variant!r}) raised {type(e).__name__}: {_first_line(e)}" if variant else \
            f"get_config() raised {type(e).__name__}: {_first_line(e)}"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip().rstrip(".") if text else "(no message)"


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
