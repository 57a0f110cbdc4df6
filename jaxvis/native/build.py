"""Build the oneDNN convolution kernels: ``python -m jaxvis.native.build``.

Needs a C++17 compiler and the ``onednn-cpu-gomp`` and ``onednn-devel-cpu-gomp`` packages (the
``onednn`` extra of jaxvis) installed in the running environment; writes ``_conv_onednn.so`` beside
this file. Without it jaxvis runs every convolution through XLA, as on GPUs and TPUs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from jaxvis.native import LIBRARY, SOURCE


def onednn_prefix() -> Path | None:
    """The environment prefix holding oneDNN's headers and library, or None."""
    for prefix in (sys.prefix, sysconfig.get_config_var("prefix") or sys.prefix):
        root = Path(prefix)
        if (root / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and any(
            (root / "lib").glob("libdnnl.so*")
        ):
            return root
    return None


def build(verbose: bool = True) -> Path:
    """Compile the kernels; returns the library path. Raises RuntimeError with what is missing."""
    import jax.ffi

    prefix = onednn_prefix()
    if prefix is None:
        raise RuntimeError(
            f"oneDNN headers or library not found under {sys.prefix}; install them with "
            "`pip install 'jaxvis[onednn]'` (packages onednn-cpu-gomp and onednn-devel-cpu-gomp)."
        )
    cxx = os.environ.get("CXX", "g++")
    tmp = f"{LIBRARY}.{os.getpid()}.tmp"
    lib_dir = prefix / "lib"
    command = [
        cxx, "-O3", "-std=c++17", "-shared", "-fPIC",
        str(SOURCE), "-o", tmp,
        "-isystem", jax.ffi.include_dir(), "-isystem", str(prefix / "include"),
        f"-L{lib_dir}", "-l:libdnnl.so.3", f"-Wl,-rpath,{lib_dir}",
    ]  # fmt: skip
    if verbose:
        print(shlex.join(command), flush=True)
    try:
        subprocess.run(command, check=True)
    except FileNotFoundError as err:
        raise RuntimeError(f"no C++ compiler {cxx!r}; install g++ or set CXX") from err
    os.replace(tmp, LIBRARY)  # atomic: a process loading it sees old or new
    return LIBRARY


def main() -> int:
    try:
        path = build()
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"jaxvis.native.build: {err}", file=sys.stderr)
        return 1
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
