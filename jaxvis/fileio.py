"""Writing files so that a reader never sees a partial one."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str, write, sync: bool = True) -> None:
    """Calls ``write(file)`` on a temporary file in the same folder, then renames it to ``path``: after a
    crash at any point, ``path`` holds either its old content or the complete new one. ``sync`` forces
    the data to disk before the rename (skip it for files that can be made again)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
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
