"""The put side's two passes over a content's stream (docs/store.md, "Owners").

First pass (:func:`hash_stream`): read the files in stream order, cut the stream into chunks of
C bytes, seal each one when a content key is given, hash the stored chunk; the hashes make the
chunk table, whose Merkle root goes into the manifest. Second pass
(:func:`iter_stored_chunks`): the same stored chunks again, for erasure coding and sending,
checked against the first pass, so a file edited between the passes is caught instead of
published under a root that does not match its shares.

The check need not hash every byte a second time: a :class:`ChangeCheck` keeps a keyed
fingerprint of each chunk read in the first pass (GMAC, AES-GCM's tag over the chunk as
associated data, under a key drawn for this put and never shown to anyone), about ten times
cheaper than SHA-256 (0.05 against 0.48 ms of CPU per MB, docs/store.md, "Throughput"). GHASH
is a universal hash: whoever edits the file cannot see the key or a tag, so any change they
make is caught but with probability about 2**-113 per chunk.

Memory is bounded by one chunk whatever the content's size: files are read into a reused
buffer, never whole, and opened without following symlinks (a file swapped for a link after
the scan is refused).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qiz import QizError
from qiz.store.limits import HASH_SIZE, MAX_CHUNK, MIN_CHUNK
from qiz.store.merkle import MerkleBuilder
from qiz.store.sealing import seal_chunk
from qiz.store.tree import Scan, StreamFile

HASH_WORKERS = 2  # threads of a large stream's first pass (the machines measured have 2 cores)
PARALLEL_FROM = 32  # chunks each of those threads gets at least (4 MiB at 128 KiB chunks)


class ChunkError(QizError):
    """A file changed or vanished while it was being stored; the put should start again."""


class ChangeCheck:
    """Keyed fingerprints of one put's chunks (see the module's docstring): the first pass
    adds each chunk in order, the second asks whether it reads the same bytes again."""

    TAG = 16

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._tag = self.fingerprinter()
        self._tags = bytearray()

    def fingerprinter(self) -> Callable[[int, bytes | memoryview], bytes]:
        """A function (index, chunk) -> fingerprint under this put's key, with a cipher
        object of its own: one per thread of the first pass."""
        aead = AESGCM(self._key)

        def tag(index: int, data: bytes | memoryview) -> bytes:
            return aead.encrypt(index.to_bytes(12, "big"), b"", data)

        return tag

    def add(self, index: int, data: bytes | memoryview) -> None:
        self.append(index, self._tag(index, data))

    def append(self, index: int, tag: bytes | bytearray) -> None:
        """Record a fingerprint taken by a :meth:`fingerprinter` (in order of index)."""
        if index * self.TAG != len(self._tags) or len(tag) != self.TAG:
            raise ValueError("chunks are fingerprinted in order")
        self._tags += tag

    def matches(self, index: int, data: bytes | memoryview) -> bool:
        expected = self._tags[index * self.TAG : (index + 1) * self.TAG]
        return len(expected) == self.TAG and self._tag(index, data) == expected

    def __len__(self) -> int:
        return len(self._tags) // self.TAG


def _check_chunk(chunk: int) -> None:
    if chunk & (chunk - 1) or not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise ValueError(f"a chunk size is a power of two from {MIN_CHUNK} to {MAX_CHUNK}")


def _open(file: StreamFile) -> int:
    try:
        fd = os.open(file.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ChunkError(f"cannot read {file.source}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ChunkError(f"{file.source} is no longer a regular file")
    return fd


def _views(
    scan: Scan, chunk: int, first: int = 0, stop: int | None = None
) -> Iterator[tuple[int, memoryview]]:
    """(index, chunk) for the stream of ``scan``, chunks ``first`` to ``stop`` (excluded; the
    end of the stream when None), each read once into one reused buffer (a view valid until
    the next one: hashing it needs no copy); a file shorter or longer than it was at scan
    time raises :class:`ChunkError` (longer: checked by whoever reads the file's end)."""
    _check_chunk(chunk)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    filled, index = 0, first
    begin = first * chunk  # stream offsets of this range
    end = scan.size if stop is None else min(scan.size, stop * chunk)
    at = 0  # stream offset of the current file's first byte
    for file in scan.files:
        file_start, at = at, at + file.size
        if at <= begin or file_start >= end or file.size == 0:
            continue
        fd = _open(file)
        try:
            skip = max(0, begin - file_start)
            left = min(at, end) - file_start - skip
            if skip:
                os.lseek(fd, skip, os.SEEK_SET)
            while left:
                got = os.readv(fd, [view[filled : filled + min(chunk - filled, left)]])
                if got == 0:
                    raise ChunkError(f"{file.source} shrank while it was being stored")
                filled += got
                left -= got
                if filled == chunk:
                    yield index, view
                    index += 1
                    filled = 0
            if at <= end and os.read(fd, 1):
                raise ChunkError(f"{file.source} grew while it was being stored")
        finally:
            os.close(fd)
    if filled:
        yield index, view[:filled]


def plain_chunks(scan: Scan, chunk: int) -> Iterator[tuple[int, bytes]]:
    """(index, chunk) for the stream of ``scan``, each its own bytes."""
    for index, view in _views(scan, chunk):
        yield index, bytes(view)


def hash_stream(
    scan: Scan, chunk: int, key: bytes | None = None, check: ChangeCheck | None = None
) -> tuple[bytes, bytes]:
    """(chunk table, Merkle root) of the stored chunks: SHA-256 of each chunk as stored (its
    ciphertext when ``key`` seals it). ``check``, when given, fingerprints each chunk as read
    (before sealing) for the second pass.

    A put waits for this pass before anything is offered or sent (the manifest needs the
    root), so a large stream is cut in ``HASH_WORKERS`` ranges of chunks hashed in as many
    threads: SHA-256 and the reads release the interpreter lock. Measured on two idle cores,
    256 MiB in page cache with 128 KiB chunks: 0.155 s in one thread, 0.080 s in two, the same
    CPU (0.155 s). Each range reads with one chunk's buffer of its own."""
    _check_chunk(chunk)
    count = -(-scan.size // chunk)
    workers = min(HASH_WORKERS, count // PARALLEL_FROM) if count >= 2 * PARALLEL_FROM else 1
    bounds = [count * w // workers for w in range(workers + 1)]
    ranges = list(itertools.pairwise(bounds))
    if workers == 1:
        parts = [_hash_range(scan, chunk, 0, None, key=key, check=check)]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="qiz-store-hash") as pool:
            jobs = [
                pool.submit(
                    _hash_range, scan, chunk, a, b if b < count else None, key=key, check=check
                )
                for a, b in ranges
            ]
            parts = [job.result() for job in jobs]
    builder = MerkleBuilder()
    table = bytearray()
    index = 0
    for digests, tags in parts:
        table += digests
        for at in range(len(digests) // HASH_SIZE):
            builder.add(bytes(digests[at * HASH_SIZE : (at + 1) * HASH_SIZE]))
            if check is not None:
                check.append(index, tags[at * ChangeCheck.TAG : (at + 1) * ChangeCheck.TAG])
            index += 1
    return bytes(table), builder.root()


def _hash_range(
    scan: Scan,
    chunk: int,
    first: int,
    stop: int | None,
    *,
    key: bytes | None,
    check: ChangeCheck | None,
) -> tuple[bytearray, bytearray]:
    """The digests of chunks ``first`` to ``stop`` as stored, end to end, and their
    fingerprints for ``check`` (empty without one)."""
    digests, tags = bytearray(), bytearray()
    fingerprint = check.fingerprinter() if check is not None else None
    for index, plain in _views(scan, chunk, first, stop):
        if fingerprint is not None:
            tags += fingerprint(index, plain)
        stored = plain if key is None else seal_chunk(key, index, plain)
        digests += hashlib.sha256(stored).digest()
    return digests, tags


def iter_stored_chunks(
    scan: Scan,
    chunk: int,
    key: bytes | None = None,
    table: bytes | None = None,
    check: ChangeCheck | None = None,
) -> Iterator[tuple[int, bytes]]:
    """(index, stored chunk), the same bytes :func:`hash_stream` hashed (sealing is
    deterministic for a key and an index). With the first pass's ``check`` (or, without one,
    its ``table``, hashing every chunk again), each chunk read is compared with the first
    pass's and a changed file raises :class:`ChunkError`."""
    count = 0
    for index, plain in _views(scan, chunk):
        same = check is None or check.matches(index, plain)
        stored = bytes(plain) if key is None else seal_chunk(key, index, plain)
        if check is None and table is not None:
            expected = table[index * HASH_SIZE : (index + 1) * HASH_SIZE]
            same = hashlib.sha256(stored).digest() == expected
        if not same:
            raise ChunkError(
                f"chunk {index} changed since it was hashed: a file was edited during the put"
            )
        count += 1
        yield index, stored
    if check is not None:
        changed = count != len(check)
    else:
        changed = table is not None and count * HASH_SIZE != len(table)
    if changed:
        raise ChunkError(
            "the content changed since it was hashed: a file was edited during the put"
        )
