"""The put side's two passes over a content's stream (docs/store.md, "Owners").

First pass (:func:`hash_stream`): read the files in stream order, cut the stream into chunks of
C bytes, seal each one when a content key is given, hash the stored chunk; the hashes make the
chunk table, whose Merkle root goes into the manifest. Second pass
(:func:`iter_stored_chunks`): the same stored chunks again, for erasure coding and sending,
checked against the table when it is given, so a file edited between the passes is caught
instead of published under a root that does not match its shares.

Memory is bounded by one chunk whatever the content's size: files are read into a reused
buffer, never whole, and opened without following symlinks (a file swapped for a link after
the scan is refused).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator

from qiz import QizError
from qiz.store.limits import HASH_SIZE, MAX_CHUNK, MIN_CHUNK
from qiz.store.merkle import MerkleBuilder
from qiz.store.sealing import seal_chunk
from qiz.store.tree import Scan, StreamFile


class ChunkError(QizError):
    """A file changed or vanished while it was being stored; the put should start again."""


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


def _views(scan: Scan, chunk: int) -> Iterator[tuple[int, memoryview]]:
    """(index, chunk) for the stream of ``scan``, each read once into one reused buffer (a view
    valid until the next one: hashing it needs no copy); a file shorter or longer than it was
    at scan time raises :class:`ChunkError`."""
    _check_chunk(chunk)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    filled = index = 0
    for file in scan.files:
        fd = _open(file)
        try:
            left = file.size
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
            if os.read(fd, 1):
                raise ChunkError(f"{file.source} grew while it was being stored")
        finally:
            os.close(fd)
    if filled:
        yield index, view[:filled]


def plain_chunks(scan: Scan, chunk: int) -> Iterator[tuple[int, bytes]]:
    """(index, chunk) for the stream of ``scan``, each its own bytes."""
    for index, view in _views(scan, chunk):
        yield index, bytes(view)


def _stored(scan: Scan, chunk: int, key: bytes | None) -> Iterator[tuple[int, bytes]]:
    for index, plain in _views(scan, chunk):
        yield index, bytes(plain) if key is None else seal_chunk(key, index, plain)


def hash_stream(scan: Scan, chunk: int, key: bytes | None = None) -> tuple[bytes, bytes]:
    """(chunk table, Merkle root) of the stored chunks: SHA-256 of each chunk as stored (its
    ciphertext when ``key`` seals it)."""
    builder = MerkleBuilder()
    table = bytearray()
    for index, plain in _views(scan, chunk):
        stored = plain if key is None else seal_chunk(key, index, plain)
        digest = hashlib.sha256(stored).digest()
        table += digest
        builder.add(digest)
    return bytes(table), builder.root()


def iter_stored_chunks(
    scan: Scan, chunk: int, key: bytes | None = None, table: bytes | None = None
) -> Iterator[tuple[int, bytes]]:
    """(index, stored chunk), the same bytes :func:`hash_stream` hashed (sealing is
    deterministic for a key and an index). With the first pass's ``table``, each chunk is
    checked against it and a changed file raises :class:`ChunkError`."""
    count = 0
    for index, stored in _stored(scan, chunk, key):
        if table is not None:
            expected = table[index * HASH_SIZE : (index + 1) * HASH_SIZE]
            if hashlib.sha256(stored).digest() != expected:
                raise ChunkError(
                    f"chunk {index} changed since it was hashed: a file was edited during the put"
                )
        count += 1
        yield index, stored
    if table is not None and count * HASH_SIZE != len(table):
        raise ChunkError(
            "the content changed since it was hashed: a file was edited during the put"
        )
