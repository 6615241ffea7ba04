"""Large sequential file I/O around the page cache (``O_DIRECT``), where the file system allows it.

Why: a holder's column and a got file are tens or hundreds of MiB written once, read back
rarely (a holder's) or by someone else later (a get's). Buffered, every byte is copied into a
page-cache page, and a page the kernel has not used lately is expensive to hand out: on the
virtual machines measured here (free memory is reported back to the host, so a fresh page
faults there), writing 256 MiB into fresh page cache ran at 240 MB/s and cost 1.86 ms of CPU per
MB, while ``O_DIRECT`` from an aligned buffer ran at 1.7-2.4 GB/s for 0.04-0.07 ms/MB (fsync
included; ``docs/store.md``, "Writing to disk"). On bare metal the saving is the copy, and the
pool does not evict its user's page cache with columns it will rarely read.

``O_DIRECT`` wants the memory, the file offset and the length aligned (:data:`ALIGN` covers
512- and 4096-byte logical blocks). So writes go through an aligned bounce buffer (an anonymous
``mmap``: page aligned, and reused, so its pages are touched once); the unaligned tail of a
stream is written with a plain ``pwrite`` at the end. Anything else (a file system that refuses
``O_DIRECT`` with ``EINVAL``, as tmpfs does; a platform without it; a write out of sequence)
falls back to plain buffered I/O, which is always correct: the kernel keeps direct and buffered
I/O to one file coherent.

Everything here is synchronous and touches only the descriptors and buffers it is given: a
:class:`Bounce` belongs to one thread (the holder's event loop, the getter's writer thread).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

ALIGN = 4096
O_DIRECT = getattr(os, "O_DIRECT", 0)  # 0 where the platform has none: never direct
DIRECT_FROM = 1 << 20  # smaller files are written plainly: nothing to gain, one more syscall
BOUNCE_SIZE = 4 << 20  # a get's writer: bytes staged before one direct write


def align_down(value: int) -> int:
    return value - value % ALIGN


def align_up(value: int) -> int:
    return align_down(value + ALIGN - 1)


def set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for an open descriptor (Linux allows both through
    ``F_SETFL``); False when the platform or the file system does not support it."""
    if not O_DIRECT:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = flags | O_DIRECT if on else flags & ~O_DIRECT
    if wanted == flags:
        return True
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, wanted)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise
    return True


class Bounce:
    """An aligned buffer of ``size`` bytes (a multiple of :data:`ALIGN`) for direct I/O."""

    def __init__(self, size: int) -> None:
        self.size = align_up(size)
        self._map = mmap.mmap(-1, self.size)
        self.view = memoryview(self._map)

    def close(self) -> None:
        """Unmap now; if a slice of the buffer is still alive somewhere (an error path), the
        mapping goes when it does."""
        try:
            self.view.release()
            self._map.close()
        except BufferError:
            pass


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` until every byte is written (a short write is retried from where it
    stopped; a disk that takes nothing raises ``ENOSPC``)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no space left on device")
        view = view[written:]
        offset += written


class DirectAppender:
    """Appends a stream to ``fd`` from offset 0: whole aligned blocks with ``O_DIRECT`` from
    ``bounce``, the last partial block plainly at :meth:`finish`. Falls back to plain writes
    for the rest of the stream at the first refusal. ``fd`` must be open for writing at
    offset 0 of an empty file; the appender leaves it without ``O_DIRECT`` after ``finish``."""

    def __init__(self, fd: int, bounce: Bounce) -> None:
        self.fd = fd
        self.bounce = bounce
        self.offset = 0  # file offset of the bounce buffer's first byte
        self.staged = 0  # bytes in the bounce buffer
        self.direct = set_direct(fd, True)

    @property
    def end(self) -> int:
        return self.offset + self.staged

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if not self.direct:
            pwrite_all(self.fd, view, self.end)
            self.offset += len(view)
            return
        buf = self.bounce.view
        while view:
            take = min(len(view), self.bounce.size - self.staged)
            buf[self.staged : self.staged + take] = view[:take]
            self.staged += take
            view = view[take:]
            if self.staged == self.bounce.size:
                self._flush_aligned()

    def _flush_aligned(self) -> None:
        """Write the staged whole blocks directly; keep the partial one at the start."""
        whole = align_down(self.staged)
        if whole == 0:
            return
        buf = self.bounce.view
        try:
            written = os.pwrite(self.fd, buf[:whole], self.offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            written = 0
        if written != whole:  # refused or short: the rest plainly, from where it stopped
            self._fall_back(written)
            return
        rest = self.staged - whole
        buf[:rest] = buf[whole : self.staged]
        self.offset += whole
        self.staged = rest

    def _fall_back(self, written: int) -> None:
        set_direct(self.fd, False)
        self.direct = False
        pending = self.bounce.view[written : self.staged]
        pwrite_all(self.fd, pending, self.offset + written)
        self.offset += self.staged
        self.staged = 0

    def finish(self) -> None:
        """Everything staged onto the file; the descriptor back to plain I/O (for its fsync
        and anything after)."""
        if self.direct:
            self._flush_aligned()
            if self.direct:
                set_direct(self.fd, False)
                self.direct = False
                pwrite_all(self.fd, self.bounce.view[: self.staged], self.offset)
                self.offset += self.staged
                self.staged = 0


class PieceWriter:
    """A file received in pieces, in order, across calls that each open it anew (a holder's
    column: one ``store.put`` per piece, on the event loop), written around the page cache:
    the whole blocks of each piece go out directly from a ``bounce`` shared by every file
    (the caller's thread owns it), the partial last block waits here for the next piece.

    :meth:`write` takes a piece only at :attr:`next_offset` (anything else is the caller's to
    write plainly: the kernel keeps the two kinds of write coherent); :meth:`flush` writes the
    waiting partial block plainly, so the file then holds every byte written so far. The
    partial block stays staged: the next piece's direct write covers it again, with the same
    bytes. At the first refusal of ``O_DIRECT`` (tmpfs, a platform without it), this file
    goes on with plain writes. Memory: under one block per file, plus the shared bounce."""

    __slots__ = ("direct", "end", "tail")

    def __init__(self) -> None:
        self.direct = bool(O_DIRECT)
        self.end = 0  # bytes [0, end) are on the file (whole blocks, unless direct is off)
        self.tail = b""  # the bytes after end: under one block, not yet written

    @property
    def next_offset(self) -> int:
        return self.end + len(self.tail)

    def write(self, path: str | os.PathLike[str], data: bytes, bounce: Bounce) -> None:
        """Append ``data`` (at :attr:`next_offset`) to the file at ``path``, created if need
        be; ``bounce`` holds at least ``len(data) + ALIGN`` bytes. The writer's state moves
        only once every write of the piece succeeded: a piece that failed (a full disk) may
        be sent again from the same offset."""
        if not self.direct:
            pending = self.tail + data if self.tail else data
            self._plain(path, pending, self.end)
            self.end += len(pending)
            self.tail = b""
            return
        staged = len(self.tail) + len(data)
        whole = align_down(staged)
        if whole == 0:
            self.tail += data
            return
        if whole + ALIGN > bounce.size:
            raise ValueError("a piece larger than the bounce buffer")
        buf = bounce.view
        cut = whole - len(self.tail)  # data[:cut] completes the blocks, data[cut:] waits
        buf[: len(self.tail)] = self.tail
        buf[len(self.tail) : whole] = memoryview(data)[:cut]
        fd = self._open(path)
        try:
            written = self._direct_write(fd, buf[:whole])
            if written != whole:  # refused (or short): this file is plain from here on
                if self.direct:
                    self.direct = False
                    plain = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # without O_DIRECT
                    os.close(fd)
                    fd = plain
                pwrite_all(fd, buf[written:whole], self.end + written)
        finally:
            os.close(fd)
        rest = bytes(data[cut:])
        if not self.direct and rest:
            self._plain(path, rest, self.end + whole)
            self.end, self.tail = self.end + whole + len(rest), b""
            return
        self.end, self.tail = self.end + whole, rest

    def flush(self, path: str | os.PathLike[str]) -> None:
        """Make the file hold every byte written so far (the partial block, plainly)."""
        if self.tail:
            self._plain(path, self.tail, self.end)

    def _open(self, path: str | os.PathLike[str]) -> int:
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | O_DIRECT, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
        self.direct = False
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _direct_write(self, fd: int, view: memoryview) -> int:
        """Bytes of ``view`` written at ``end`` directly; fewer (0 at a refusal) when the
        file system would not (``fd`` is plain when :meth:`_open` was refused)."""
        if not self.direct:
            return 0
        try:
            return os.pwrite(fd, view, self.end)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return 0

    @staticmethod
    def _plain(path: str | os.PathLike[str], data: bytes, offset: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            pwrite_all(fd, data, offset)
        finally:
            os.close(fd)


def read_direct(path: str | os.PathLike[str], offset: int, length: int, bounce: Bounce) -> bytes:
    """``length`` bytes at ``offset`` of ``path`` (fewer at its end), read around the page
    cache through ``bounce`` (at least ``length + 2 * ALIGN`` bytes) when the file system
    allows, plainly otherwise. Raises ``FileNotFoundError`` like ``open``."""
    start, stop = align_down(offset), align_up(offset + length)
    if stop - start > bounce.size:
        raise ValueError("a read larger than the bounce buffer")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | O_DIRECT) if O_DIRECT else -1
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        fd = -1
    if fd < 0:
        return _read_plain(path, offset, length)
    try:
        try:
            got = os.preadv(fd, [bounce.view[: stop - start]], start)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return _read_plain(path, offset, length)
    finally:
        os.close(fd)
    skip = offset - start
    return bytes(bounce.view[skip : max(skip, min(got, skip + length))])


def _read_plain(path: str | os.PathLike[str], offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)
