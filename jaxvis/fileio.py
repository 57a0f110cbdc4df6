"""Writing files so that a reader never sees a partial one; output directories checked before work,
locked to one writer, and their free space."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile


def sha256(path: str, chunk: int = 2**22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_arrays(tree) -> str:
    """Hex sha256 of a nested dict of arrays (a parameter tree): every leaf's path, dtype, shape and bytes,
    in sorted key order, so that equal parameters give equal digests however they were loaded."""
    import numpy as np

    h = hashlib.sha256()

    def walk(node, path):
        if isinstance(node, dict):
            for key in sorted(node):
                walk(node[key], f"{path}/{key}")
        else:
            a = np.ascontiguousarray(np.asarray(node))
            h.update(f"{path}:{a.dtype}:{a.shape};".encode())
            h.update(a.tobytes())

    walk(tree, "")
    return h.hexdigest()


def atomic_write(path: str, write, sync: bool = True) -> None:
    """Calls ``write(file)`` on a temporary file in the same folder, then renames it to ``path``: after a
    crash at any point, ``path`` holds either its old content or the complete new one. ``sync`` forces
    the data to disk before the rename (skip it for files that can be made again)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------------
# Output places: checked before any work, one writer at a time, free space.

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def unused_name(folder: str, base: str, extensions, taken=()) -> str:
    """``base``, or ``base-2``, ``base-3`` … : the first name that no file ``<name><extension>`` in ``folder``
    (for every extension) and no name in ``taken`` already has, so that outputs added to a folder never
    overwrite earlier ones."""
    name, k = base, 1
    while name in taken or any(os.path.lexists(os.path.join(folder, name + ext)) for ext in extensions):
        k += 1
        name = f"{base}-{k}"
    return name


class OutputError(ValueError):
    """An output directory that cannot be used: a file, unwritable, read-only, or in use."""


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_output_dir(path: str, what: str = "--out") -> None:
    """Raises OutputError (one line, saying what to do) unless ``path`` is a directory this process can
    write, or can be created as one: not an existing file, not under a file, not on a read-only file
    system, not in a directory without write permission. Creates nothing."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{what} {path} is an existing file, not a directory; give a directory (it is created "
                          "if missing).")
    base = _nearest_existing(path)
    if not os.path.isdir(base):
        raise OutputError(f"{what} {path} lies under {base}, which is a file, not a directory; give another path.")
    if os.statvfs(base).f_flag & os.ST_RDONLY:
        raise OutputError(f"{what} {path} is on a read-only file system ({base} cannot be written); give a "
                          "path on a writable disk.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: {base} is not writable by this user; give a directory you can write, "
                          "or change its permissions.")


def free_bytes(path: str) -> int:
    """Bytes that an unprivileged writer may still use on the file system holding ``path`` (or the
    nearest existing folder above it)."""
    st = os.statvfs(_nearest_existing(os.fspath(path)))
    return st.f_bavail * st.f_frsize


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as disks are sold and ``df -H`` shows)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


class DirLock:
    """One writer per directory: an exclusive advisory lock (``flock``) on ``<path>/.lock``.

    The kernel releases the lock when the holder's file is closed, which happens when the process ends
    in any way (SIGKILL included), so a dead writer leaves no stale lock. The file stays in place and
    holds the latest holder's PID, host and start time; only a live lock counts. ``flock`` works across
    the processes of one machine and, on Linux, across NFS clients (the kernel maps it to NFS locks).

    ``DirLock(path)`` creates ``path`` if needed and takes the lock, or raises OutputError naming the
    holder. ``release()`` (or leaving a ``with`` block) lets it go; ``release(remove=True)`` also removes
    the directory when this lock created it and nothing else was written there.
    """

    NAME = ".lock"

    def __init__(self, path: str, what: str = "--out"):
        import fcntl
        import socket
        import time

        self.path = os.fspath(path)
        check_output_dir(self.path, what)
        self.created = not os.path.exists(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(os.path.join(self.path, self.NAME), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"{what} {self.path} cannot be written: {e.strerror}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise OutputError(f"{what} {self.path} is in use by another run ({holder or 'holder still starting'}); "
                              "wait for it to finish, or give another directory.") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = f"process {os.getpid()} on host {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode() + b"\n", 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, only the holder's name is missing

    def release(self, remove: bool = False) -> None:
        if self._fd is None:
            return
        try:
            if remove and self.created and os.listdir(self.path) == [self.NAME]:
                os.unlink(os.path.join(self.path, self.NAME))
                os.rmdir(self.path)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
