"""Durable file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader sees either the old file or the new one, never a torn mix, even if the process dies
or the machine loses power in the middle. Used for keys, config and every blob QIZ keeps.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TEMP_MARKER = ".tmp-"


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically; the file gets ``mode`` from its creation on
    (the temp file is created with it, so a secret is never readable by others, not even
    briefly)."""
    path = Path(path)
    directory = path.parent
    temp = directory / f".{path.name}{TEMP_MARKER}{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:  # name the file the caller asked for, not our temp name
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)  # umask may have narrowed it; make it exactly `mode`
        os.replace(temp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories can't be opened)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
