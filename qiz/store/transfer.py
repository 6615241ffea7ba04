"""Moving columns: the owner's side of ``store.put`` / ``store.read`` (docs/store.md).

* :class:`ColumnUpload` sends one holder its column (and the chunk table) in pieces of at most
  ``MAX_PIECE`` bytes, several in flight, then commits.
* :func:`upload` encodes stored chunks once and feeds every holder's upload from them.
* :class:`ChunkReader` yields a content's stored chunks in order, each decoded from k shares and
  checked against the chunk table before anyone sees it. Batches of chunks (as many as one
  piece holds per column) are fetched ``WINDOW`` ahead, so memory stays bounded whatever the
  content's size. A chunk that does not check out is rebuilt from the other holders and the
  one that served bad bytes is named (re-encoding the good chunk shows exactly whose share
  differs), skipped from then on and reported.

Everything CPU-heavy (zfec, hashing, AES) runs in a worker thread, a batch at a time, so the
event loop keeps the links moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from qiz import QizError
from qiz.qmp.rpc import RpcError
from qiz.resolve.reach import Unreachable
from qiz.store import erasure
from qiz.store.limits import HASH_SIZE, MAX_PIECE
from qiz.store.manifest import Manifest

log = logging.getLogger("qiz.store")

Call = Callable[..., Awaitable[Any]]  # call(peer, method, body, *, timeout=...)
TABLE_PART = -1
PUT_INFLIGHT = 4  # pieces in flight to one holder
WINDOW = 6  # batches of chunks fetched ahead by a reader
ENCODE_BATCH = 8  # chunks encoded per trip to the worker thread
CALL_TIMEOUT = 30.0  # seconds one piece may take (192 KiB over a slow link)
PEER_FAILURES = (RpcError, Unreachable, OSError, TimeoutError)


class TransferError(QizError):
    """A put or get could not complete; the message says which holder or chunk and why."""


class HolderFailed(TransferError):
    def __init__(self, holder: bytes, index: int, reason: str) -> None:
        super().__init__(f"holder of share {index} failed: {reason}")
        self.holder = holder
        self.index = index


def pieces_per_batch(manifest: Manifest) -> int:
    """Chunks whose shares fit one piece of a column (at least one)."""
    if manifest.chunks == 0:
        return 1
    return max(1, MAX_PIECE // max(1, manifest.share_size(0)))


# ---------------------------------------------------------------------------------- upload


@dataclass
class ColumnUpload:
    """One holder's column: pieces sent in order of production, ``PUT_INFLIGHT`` at a time."""

    call: Call
    cid: bytes
    holder: bytes
    index: int
    sent: int = 0
    failed: str | None = None
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PUT_INFLIGHT))
    _tasks: set[asyncio.Task] = field(default_factory=set)

    async def send(self, part: int, offset: int, data: bytes) -> None:
        """Queue one piece; waits while ``PUT_INFLIGHT`` are unanswered (backpressure)."""
        if self.failed is not None:
            return
        await self._slots.acquire()
        task = asyncio.ensure_future(self._put(part, offset, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put(self, part: int, offset: int, data: bytes) -> None:
        try:
            body = {"cid": self.cid, "part": part, "offset": offset, "data": data}
            await self.call(self.holder, "store.put", body, timeout=CALL_TIMEOUT)
            self.sent += len(data)
        except PEER_FAILURES as exc:
            self.failed = self.failed or str(exc)
        finally:
            self._slots.release()

    async def finish(self) -> int:
        """Wait for the pieces, then commit; the lease's expiry, or :class:`HolderFailed`."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks))
        if self.failed is not None:
            raise HolderFailed(self.holder, self.index, self.failed)
        try:
            answer = await self.call(
                self.holder,
                "store.commit",
                {"cid": self.cid, "index": self.index},
                timeout=CALL_TIMEOUT,
            )
        except PEER_FAILURES as exc:
            raise HolderFailed(self.holder, self.index, str(exc)) from None
        expires = answer.get("expires") if isinstance(answer, dict) else None
        if not isinstance(expires, int):
            raise HolderFailed(self.holder, self.index, "commit answered without an expiry")
        return expires

    async def abort(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def send_table(uploads: Iterable[ColumnUpload], table: bytes) -> None:
    """The chunk table goes to every holder first (each keeps a copy for getters)."""
    for upload in uploads:
        for offset in range(0, len(table), MAX_PIECE):
            await upload.send(TABLE_PART, offset, table[offset : offset + MAX_PIECE])


def _encode_batch(chunks: list[tuple[int, bytes]], k: int, n: int) -> list[tuple[int, list[bytes]]]:
    return [(i, erasure.encode_chunk(chunk, k, n)) for i, chunk in chunks]


async def upload(
    manifest: Manifest,
    stored: AsyncIterator[tuple[int, bytes]],
    uploads: dict[int, ColumnUpload],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Encode every stored chunk once and send share ``j`` to ``uploads[j]`` (those present:
    a repair sends only the missing columns), batching consecutive shares into pieces."""
    per_piece = pieces_per_batch(manifest)
    buffers: dict[int, list[bytes]] = {j: [] for j in uploads}
    offsets: dict[int, int] = dict.fromkeys(uploads, 0)
    pending = 0  # shares buffered per column (the same for all)
    done = 0

    async def flush() -> None:
        nonlocal pending
        for j, upload_j in uploads.items():
            if buffers[j]:
                data = b"".join(buffers[j])
                buffers[j] = []
                await upload_j.send(j, offsets[j], data)
                offsets[j] += len(data)
        pending = 0

    async def encode(batch: list[tuple[int, bytes]]) -> None:
        nonlocal pending, done
        encoded = await asyncio.to_thread(_encode_batch, batch, manifest.k, manifest.n)
        for i, shares in encoded:
            for j in uploads:
                buffers[j].append(shares[j])
            pending += 1
            done += manifest.stored_size(i)
            if pending >= per_piece:
                await flush()
        if progress is not None:
            progress(done)

    batch: list[tuple[int, bytes]] = []
    async for item in stored:
        batch.append(item)
        if len(batch) >= ENCODE_BATCH:
            await encode(batch)
            batch = []
            if all(u.failed is not None for u in uploads.values()):
                return
    if batch:
        await encode(batch)
    await flush()


# ---------------------------------------------------------------------------------- reading


@dataclass
class Sources:
    """Who holds which column, and who has been found out."""

    by_index: dict[int, list[bytes]]
    bad: set[bytes] = field(default_factory=set)
    dead: set[bytes] = field(default_factory=set)

    def holder(self, index: int) -> bytes | None:
        for holder in self.by_index.get(index, ()):
            if holder not in self.bad and holder not in self.dead:
                return holder
        return None

    def live_indices(self) -> list[int]:
        return [j for j in sorted(self.by_index) if self.holder(j) is not None]

    def asked(self) -> int:
        return len({h for holders in self.by_index.values() for h in holders})


class ChunkReader:
    """A content's stored chunks, in order, checked (see the module's docstring)."""

    def __init__(
        self,
        manifest: Manifest,
        table: bytes,
        sources: Sources,
        call: Call,
        *,
        on_bad: Callable[[bytes, int], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.hashes = [table[i : i + HASH_SIZE] for i in range(0, len(table), HASH_SIZE)]
        self.sources = sources
        self.call = call
        self.on_bad = on_bad
        self.per_batch = pieces_per_batch(manifest)
        self.bad_shares = 0

    async def chunks(self) -> AsyncIterator[tuple[int, bytes]]:
        count = self.manifest.chunks
        starts = list(range(0, count, self.per_batch))
        ahead: list[asyncio.Task[list[bytes]]] = []
        try:
            for start in starts[:WINDOW]:
                ahead.append(asyncio.ensure_future(self._batch(start)))
            next_start = WINDOW
            for start in starts:
                chunks = await ahead.pop(0)
                if next_start < len(starts):
                    ahead.append(asyncio.ensure_future(self._batch(starts[next_start])))
                    next_start += 1
                for offset, chunk in enumerate(chunks):
                    yield start + offset, chunk
        finally:
            for task in ahead:
                task.cancel()
            if ahead:
                await asyncio.gather(*ahead, return_exceptions=True)

    def _range(self, start: int) -> tuple[list[int], int, int]:
        stop = min(start + self.per_batch, self.manifest.chunks)
        indices = list(range(start, stop))
        offset = self.manifest.share_offset(start)
        length = sum(self.manifest.share_size(i) for i in indices)
        return indices, offset, length

    async def _read(self, holder: bytes, index: int, offset: int, length: int) -> bytes:
        body = {
            "cid": self.manifest.cid.digest,
            "part": index,
            "offset": offset,
            "length": length,
        }
        answer = await self.call(holder, "store.read", body, timeout=CALL_TIMEOUT)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, bytes) or len(data) != length:
            raise RpcError("bad-reply", "store.read answered the wrong number of bytes")
        return data

    async def audit(self, start: int) -> set[int]:
        """Read the batch at ``start`` from every live column and return the indices whose
        shares differ from the re-encoded chunks (the chunks are rebuilt from any k that
        check out); the holders found out are reported as bad."""
        indices, offset, length = self._range(start)
        live = self.sources.live_indices()
        results = await asyncio.gather(
            *(self._column_piece(j, offset, length) for j in live), return_exceptions=True
        )
        pieces = {r[0]: r[1] for r in results if not isinstance(r, BaseException)}
        if len(pieces) < self.manifest.k:
            return set()
        before = set(self.sources.bad)
        chunks: list[bytes | None] = [None] * len(indices)
        await self._recover(start, pieces, chunks, list(range(len(indices))))
        bad_holders = self.sources.bad - before
        return {j for j in live for h in self.sources.by_index.get(j, ()) if h in bad_holders}

    async def _column_piece(self, index: int, offset: int, length: int) -> tuple[int, bytes]:
        """Read one column's piece from its first live holder, moving on past failures."""
        while True:
            holder = self.sources.holder(index)
            if holder is None:
                raise TransferError(f"no live holder of share {index}")
            try:
                return index, await self._read(holder, index, offset, length)
            except PEER_FAILURES as exc:
                log.info("store: holder of share %d failed: %s", index, exc)
                self.sources.dead.add(holder)

    async def _batch(self, start: int) -> list[bytes]:
        indices, offset, length = self._range(start)
        k = self.manifest.k
        pieces: dict[int, bytes] = {}
        tried: set[int] = set()
        while True:
            live = [j for j in self.sources.live_indices() if j not in tried]
            # systematic shares first: decoding from 0..k-1 is a concatenation
            wanted = sorted(live)[: max(0, k - len(pieces))]
            if len(pieces) + len(wanted) < k:
                raise TransferError(
                    f"chunks {indices[0]}-{indices[-1]}: {len(pieces) + len(wanted)} of the "
                    f"{k} shares needed can be read ({self.sources.asked()} holders asked)"
                )
            tried.update(wanted)
            results = await asyncio.gather(
                *(self._column_piece(j, offset, length) for j in wanted), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    continue
                pieces[result[0]] = result[1]
            if len(pieces) >= k:
                break
        chunks, suspects = await asyncio.to_thread(self._decode_batch, indices, pieces)
        if suspects:
            chunks = await self._recover(start, pieces, chunks, suspects)
        return chunks

    def _split(self, indices: list[int], piece: bytes) -> list[bytes]:
        out, at = [], 0
        for i in indices:
            size = self.manifest.share_size(i)
            out.append(piece[at : at + size])
            at += size
        return out

    def _decode_one(self, i: int, shares: dict[int, bytes]) -> bytes | None:
        k, n = self.manifest.k, self.manifest.n
        chunk = erasure.decode_chunk(shares, k, n, self.manifest.stored_size(i))
        return chunk if hashlib.sha256(chunk).digest() == self.hashes[i] else None

    def _decode_batch(
        self, indices: list[int], pieces: dict[int, bytes]
    ) -> tuple[list[bytes | None], list[int]]:
        split = {j: self._split(indices, piece) for j, piece in pieces.items()}
        use = sorted(split)[: self.manifest.k]
        chunks: list[bytes | None] = []
        suspects = []
        for at, i in enumerate(indices):
            chunk = self._decode_one(i, {j: split[j][at] for j in use})
            chunks.append(chunk)
            if chunk is None:
                suspects.append(at)
        return chunks, suspects

    async def _recover(
        self,
        start: int,
        pieces: dict[int, bytes],
        chunks: list[bytes | None],
        suspects: list[int],
    ) -> list[bytes]:
        """Some chunk did not check out: read every other live column of this batch, find k
        shares that decode to the right hash, and name the holders whose shares differ from
        the re-encoded chunk."""
        indices, offset, length = self._range(start)
        for j in self.sources.live_indices():
            if j not in pieces:
                with contextlib.suppress(TransferError):
                    got = await self._column_piece(j, offset, length)
                    pieces[got[0]] = got[1]
        split = {j: self._split(indices, piece) for j, piece in pieces.items()}
        k, n = self.manifest.k, self.manifest.n
        culprits: set[int] = set()
        for at in suspects:
            i = indices[at]
            found = None
            for subset in itertools.combinations(sorted(split), k):
                chunk = await asyncio.to_thread(
                    self._decode_one, i, {j: split[j][at] for j in subset}
                )
                if chunk is not None:
                    found = chunk
                    break
            if found is None:
                raise TransferError(
                    f"chunk {i} cannot be rebuilt: no {k} of the {len(split)} shares read "
                    f"match its hash"
                )
            chunks[at] = found
            expected = erasure.encode_chunk(found, k, n)
            culprits.update(j for j in split if split[j][at] != expected[j])
        for j in culprits:
            holder = self.sources.holder(j)
            if holder is not None:
                self.sources.bad.add(holder)
                self.bad_shares += 1
                if self.on_bad is not None:
                    self.on_bad(holder, j)
        return [c for c in chunks if c is not None]


async def read_table(manifest: Manifest, holders: list[bytes], call: Call) -> bytes:
    """The chunk table from the first holder whose copy matches the manifest's root."""
    from qiz.store.merkle import table_root

    size = manifest.table_size()
    errors = []
    for holder in holders:
        try:
            parts = []
            for offset in range(0, size, MAX_PIECE):
                length = min(MAX_PIECE, size - offset)
                body = {
                    "cid": manifest.cid.digest,
                    "part": TABLE_PART,
                    "offset": offset,
                    "length": length,
                }
                answer = await call(holder, "store.read", body, timeout=CALL_TIMEOUT)
                data = answer.get("data") if isinstance(answer, dict) else None
                if not isinstance(data, bytes) or len(data) != length:
                    raise RpcError("bad-reply", "store.read answered the wrong number of bytes")
                parts.append(data)
            table = b"".join(parts)
            if await asyncio.to_thread(table_root, table) == manifest.root:
                return table
            errors.append("a chunk table that does not match the manifest's root")
        except PEER_FAILURES as exc:
            errors.append(str(exc))
    raise TransferError(
        f"no holder served the chunk table ({len(holders)} asked"
        + (f"; last: {errors[-1]}" if errors else "")
        + ")"
    )
