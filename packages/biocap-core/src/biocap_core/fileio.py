"""Output files and folders: atomic writes, so a crash never leaves half a file where a finished one
is expected, and an early check that an output folder takes files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from biocap_core.errors import UnwritableFolder


def writable_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) and prove a file can be written in it.

    Every app calls this on its output folder before loading a model or reading data, so a path
    under a regular file, on a read-only mount or without permission fails at once with one line
    instead of a traceback after the work. Raises :class:`UnwritableFolder`, whose ``reason`` names
    the file in the way ("X is a file, not a folder") or gives the OS's reason.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
        raise UnwritableFolder(path, exc, reason) from exc
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temp path in the same folder, fsync it, then rename it to
    ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
