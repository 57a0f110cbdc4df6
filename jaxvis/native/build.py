"""Build the oneDNN convolution kernels: ``python -m jaxvis.native.build [--force] [--require]``.

Needs x86-64 Linux, a C++17 compiler (``$CXX``, else ``g++``) and the ``onednn-cpu-gomp`` and
``onednn-devel-cpu-gomp`` packages (the ``onednn`` extra of jaxvis) in the running environment. Writes
the library into the per-user cache, under a name keyed by this environment (see ``jaxvis.native``);
an up-to-date library is kept unless ``--force``.

Exit status: 0 when the library is built or up to date, and also when it cannot be built here (no
compiler, another platform, no oneDNN): it says so, and jaxvis runs every convolution through XLA
(``--require`` makes that an error); 1 when the compiler ran and failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from jaxvis import native


class Skip(RuntimeError):
    """The kernels cannot be built in this environment (the message says why)."""


class BuildError(RuntimeError):
    """The compiler ran and failed."""


def compiler() -> str:
    """The C++ compiler asked for: ``$CXX``, else ``g++``."""
    return os.environ.get("CXX") or "g++"


def cannot_build(prefix: Path | None) -> str | None:
    """Why the kernels cannot be built here, or None when they can."""
    if not native.supported_platform():
        return "the oneDNN kernels are built for x86-64 Linux only"
    if prefix is None:
        return ("oneDNN is not installed in this environment: install the `onednn` extra "
                "(`pip install 'jaxvis[onednn]'`)")
    if not native.onednn_headers(prefix):
        return (f"oneDNN's headers are missing under {prefix}: install the `onednn` extra "
                "(`pip install 'jaxvis[onednn]'`, package onednn-devel-cpu-gomp)")
    if shutil.which(compiler()) is None:
        return f"no C++ compiler: {compiler()!r} is not on PATH (install g++, or set CXX to a C++17 compiler)"
    return None


def command(key: str, prefix: Path, output: Path) -> list[str]:
    import jax.ffi

    lib_dir = prefix / "lib"
    return [
        compiler(), *native.FLAGS, f'-DJAXVIS_NATIVE_KEY="{key}"',
        str(native.SOURCE), "-o", str(output),
        "-isystem", jax.ffi.include_dir(), "-isystem", str(prefix / "include"),
        f"-L{lib_dir}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib_dir}",
    ]  # fmt: skip


def build(verbose: bool = True, force: bool = False) -> Path:
    """Compiles the kernels into the cache unless an up-to-date library is there; returns its path.

    Raises ``Skip`` when they cannot be built here and ``BuildError`` when the compiler fails.
    """
    prefix = native.onednn_prefix()
    reason = cannot_build(prefix)
    if reason:
        raise Skip(reason)
    key = native.key(prefix)
    path = native.library_path(key)
    with native.build_lock():
        if not force and native.read_stamp(path) == key:
            return path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        cmd = command(key, prefix, tmp)
        if verbose:
            print(shlex.join(cmd), flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as err:
            raise BuildError(f"could not run {cmd[0]!r}: {err}") from err
        if proc.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            output = (proc.stderr + proc.stdout).strip()[-4000:]
            raise BuildError(f"{cmd[0]} exited with status {proc.returncode} compiling {native.SOURCE.name}:\n"
                             f"  {shlex.join(cmd)}\n{output}")
        if verbose and proc.stderr.strip():
            print(proc.stderr, file=sys.stderr)
        os.replace(tmp, path)  # atomic: a process reading it sees the old file or the new one
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxvis.native.build", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when an up-to-date library is there")
    parser.add_argument("--require", action="store_true",
                        help="fail (exit 1) instead of skipping when the kernels cannot be built here")
    args = parser.parse_args(argv)
    try:
        path = build(force=args.force)
    except Skip as err:
        print(f"jaxvis.native.build: SKIPPED the oneDNN kernels: {err}. jaxvis will run every convolution "
              "through XLA's (the same results; slower on CPUs).", file=sys.stderr)
        return 1 if args.require else 0
    except BuildError as err:
        print(f"jaxvis.native.build: FAILED: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the cache folder cannot be made or written
        print(f"jaxvis.native.build: FAILED: {err}; set JAXVIS_NATIVE_DIR to a writable folder.", file=sys.stderr)
        return 1
    print(f"jaxvis.native.build: oneDNN kernels ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
