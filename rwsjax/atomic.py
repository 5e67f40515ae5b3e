"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path next to ``path``; when the block succeeds, fsync it and move it onto ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666 & ~umask``), not
    ``mkstemp``'s private 0600, so results stay readable by collaborators. On an exception the temporary
    file is removed and ``path`` is untouched. The parent directory is created when missing.

    Args:
      path: the destination file.
      suffix: the temporary file's suffix (some writers pick the format from it, e.g. ``".png"``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path), suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
