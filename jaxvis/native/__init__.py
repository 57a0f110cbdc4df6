"""Native kernels: oneDNN convolutions for XLA's CPU backend (``conv_onednn.cc``), as a versioned library.

The library is built outside the source tree, in a per-user cache: ``$JAXVIS_NATIVE_DIR`` if set, else
``$XDG_CACHE_HOME/jaxvis/native``, else ``~/.cache/jaxvis/native``. Its file name carries a key made of
the machine, jax's and jaxlib's versions (the XLA FFI headers it is compiled against), oneDNN's version
and a hash of the C++ source and the compiler flags; the same key is compiled into the library
(``JaxvisNativeKey()``, and as a marked string that can be read without loading the file). ``load``
reads the stamp before loading anything: a library that is missing or carries another key (stale, or
foreign) is rebuilt where a compiler and oneDNN's headers are present, and refused otherwise, with a
message that says what to do. ``python -m jaxvis.native.build`` builds it ahead of time (``make`` does).
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import logging
import os
import platform
import sys
import sysconfig
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "conv_onednn.cc"
STEM = "conv_onednn"
# Compiler flags (besides include and library paths, which follow the environment); part of the key.
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
# The stamp as it lies in the library's read-only data: MARKER, the key, a NUL.
MARKER = b"jaxvis-native-key:"
HOW_TO_BUILD = ("`python -m jaxvis.native.build` (needs g++ or $CXX, and the `onednn` extra: "
                "`pip install 'jaxvis[onednn]'`)")


class Unavailable(RuntimeError):
    """The kernels cannot be used here; the message says why and what to do."""


def supported_platform() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def cache_dir() -> Path:
    """Where the library is built: ``$JAXVIS_NATIVE_DIR``, ``$XDG_CACHE_HOME/jaxvis/native`` or
    ``~/.cache/jaxvis/native``."""
    if os.environ.get("JAXVIS_NATIVE_DIR"):
        return Path(os.environ["JAXVIS_NATIVE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxvis" / "native"


def onednn_prefix() -> Path | None:
    """The environment prefix holding oneDNN's runtime library (the ``onednn`` extra), or None."""
    for prefix in dict.fromkeys((sys.prefix, sysconfig.get_config_var("prefix") or sys.prefix)):
        root = Path(prefix)
        if (root / "lib" / "libdnnl.so.3").is_file():
            return root
    return None


def onednn_headers(prefix: Path) -> bool:
    """Whether oneDNN's C++ headers (``onednn-devel-cpu-gomp``) are installed under ``prefix``."""
    return (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file()


class _DnnlVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


@functools.lru_cache(maxsize=None)
def onednn_version(prefix: Path) -> str:
    """The version of the oneDNN runtime that the library links (``dnnl_version()``), e.g. ``3.2.0``."""
    lib = ctypes.CDLL(str(prefix / "lib" / "libdnnl.so.3"))
    lib.dnnl_version.restype = ctypes.POINTER(_DnnlVersion)
    v = lib.dnnl_version().contents
    return f"{v.major}.{v.minor}.{v.patch}"


def key(prefix: Path) -> str:
    """The key of the library this environment needs (see the module docstring)."""
    import jax
    import jaxlib

    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update("\0".join(FLAGS).encode())
    return (f"{platform.machine()}-jax{jax.__version__}-jaxlib{jaxlib.__version__}-"
            f"onednn{onednn_version(prefix)}-{digest.hexdigest()[:16]}")


def library_path(key_: str) -> Path:
    return cache_dir() / f"{STEM}-{key_}.so"


def read_stamp(path: Path) -> str | None:
    """The key stamped into the library file at ``path``, without loading it: None when the file is
    missing, "" when it carries no stamp."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    start = data.find(MARKER)
    if start < 0:
        return ""
    start += len(MARKER)
    end = data.find(b"\0", start)
    return data[start:end if end >= 0 else start + 200].decode("ascii", "replace")


def load(*, build: bool = True) -> tuple[ctypes.CDLL, Path]:
    """The kernel library for this environment, loaded: (library, path).

    A missing library, or one whose stamp differs from this environment's key, is (re)built when
    ``build`` and a compiler and oneDNN's headers are present. Raises ``Unavailable`` with what to do
    otherwise; a library whose stamp does not match is never loaded.
    """
    from jaxvis.native import build as builder

    if not supported_platform():
        raise Unavailable(f"the oneDNN kernels are built for x86-64 Linux only, this is {sys.platform} "
                          f"{platform.machine()}.")
    prefix = onednn_prefix()
    if prefix is None:
        raise Unavailable(f"oneDNN is not installed under {sys.prefix}; install the `onednn` extra "
                          "(`pip install 'jaxvis[onednn]'`) and run `python -m jaxvis.native.build`.")
    want = key(prefix)
    path = library_path(want)
    stamp = read_stamp(path)
    if stamp != want:
        if stamp is None:
            problem = "is not built"
        else:
            problem = (f"carries the stamp {stamp!r}, not this environment's {want!r}" if stamp else
                       "carries no jaxvis stamp") + " (a stale or foreign library: it was not loaded)"
        reason = builder.cannot_build(prefix) if build else "this load was asked not to build"
        if reason:
            raise Unavailable(f"the oneDNN kernel library {path} {problem}, and it cannot be built here: "
                              f"{reason}. XLA's convolutions are used; for oneDNN's, fix that and run "
                              f"{HOW_TO_BUILD}{'' if stamp is None else ' (or delete the file)'}.")
        log.warning("jaxvis: the oneDNN kernel library %s %s; building it (once for this jax, oneDNN and "
                    "source).", path, problem)
        try:
            builder.build(verbose=False)
        except (builder.BuildError, builder.Skip) as err:
            raise Unavailable(f"building the oneDNN kernels failed: {err}\nFix the build and run "
                              f"{HOW_TO_BUILD}.") from err
        except OSError as err:
            raise Unavailable(f"the oneDNN kernels cannot be built into {cache_dir()}: {err}; set JAXVIS_NATIVE_DIR "
                              "to a writable folder.") from err
        stamp = read_stamp(path)
        if stamp != want:
            raise Unavailable(f"the freshly built {path} carries the stamp {stamp!r}, not {want!r}; "
                              f"delete it and run {HOW_TO_BUILD}.")
    lib = ctypes.CDLL(str(path))
    lib.JaxvisNativeKey.restype = ctypes.c_char_p
    loaded = lib.JaxvisNativeKey().decode()
    if loaded != want:  # only a library that lies about its stamp gets here
        raise Unavailable(f"{path} reports the key {loaded!r}, not {want!r}; delete it and run {HOW_TO_BUILD}.")
    return lib, path


class build_lock:
    """An exclusive advisory lock on the cache directory while a library is built (processes that
    start together build once; the others wait and find it built)."""

    def __enter__(self):
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self._file = open(folder / ".build.lock", "w")
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
