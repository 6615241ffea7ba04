"""File I/O with the two guarantees QIZ needs: durable writes and bounded reads.

Writes: temp file in the same directory, fsync, rename, fsync the directory. A reader sees
either the old file or the new one, never a torn mix, even if the process dies or the machine
loses power in the middle. Used for keys, config and every blob QIZ keeps.

Reads: every file a user or a peer can point us at is read with a size limit, enforced while
reading (see ``read_bounded``), so a huge file, one that grows, or a FIFO cannot make a command
eat the machine's memory.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

TEMP_MARKER = ".tmp-"


class FileTooLarge(OSError):
    """A file over its reader's size limit. An ``OSError`` (EFBIG), so callers that already turn
    unreadable files into one sentence (``exc.strerror``) report this one the same way."""

    def __init__(self, path: str | os.PathLike[str], max_size: int, what: str = "file") -> None:
        super().__init__(errno.EFBIG, f"larger than the {max_size}-byte limit", os.fspath(path))
        self.max_size = max_size
        self.what = what

    def __str__(self) -> str:
        return f"{self.what} {self.filename} is {self.strerror}"


def read_bounded(path: str | os.PathLike[str], max_size: int, what: str = "file") -> bytes:
    """The whole content of ``path``, or :class:`FileTooLarge` if it is over ``max_size`` bytes.

    The limit is checked on what is read (at most ``max_size + 1`` bytes), not on ``stat``: a
    file that grows after the check, a FIFO or a device would slip past a size taken up front.
    Other failures are the usual ``OSError``s (missing file, directory, permission), for the
    caller to word in its own style.
    """
    with open(path, "rb") as handle:
        data = handle.read(max_size + 1)
    if len(data) > max_size:
        raise FileTooLarge(path, max_size, what)
    return data


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
