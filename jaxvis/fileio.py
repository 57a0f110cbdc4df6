"""Writing files so that a reader never sees a partial one."""

from __future__ import annotations

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
