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

A get decodes and hashes its batches in ``CHECKERS`` threads of its own while the event loop
reads the batches after them: hashing releases the interpreter lock, and with ``WINDOW``
batches in flight a batch waiting for the lock on its way back does not stall the links (the
getter's loop went from about 2.6 to 1.6 ms of CPU per MB, docs/store.md). A put's zfec
encoding has a thread of its own too, a few pieces ahead of the one being sent: zfec releases
the lock while it codes (two threads coding k=3 n=5 pieces ran 1.6 times as fast as one,
measured under load), and the putter's loop went from about 2.0-2.2 to 1.2-1.5 ms of CPU per
MB of content (256 MiB puts on the bench's mesh); the node's total did not fall (2.8-3.1
before, 2.9-3.3 after: the hops cost what the loop saved), so the gain is the loop's freedom
to send while a core is free, not less work. What may block on a disk has a thread: a put's
reads of the user's files (:mod:`qiz.store.service`) and a get's writes
(:mod:`qiz.store.writer`, around the page cache: :mod:`qiz.store.direct`); so do the rare,
heavier steps (a search over share subsets, a chunk table's root).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from qiz import QizError
from qiz.qmp.rpc import RpcError
from qiz.resolve.reach import Unreachable
from qiz.store import erasure, parity
from qiz.store.limits import HASH_SIZE, MAX_DECODE_TRIES, MAX_LEASE, MAX_PIECE, MAX_ROUNDS
from qiz.store.manifest import Manifest

log = logging.getLogger("qiz.store")

Call = Callable[..., Awaitable[Any]]  # call(peer, method, body, *, timeout=...)
TABLE_PART = -1
# These three bound memory in pieces of up to MAX_PIECE (about 1 MiB: 23 chunks at k=3).
# Deeper (4 in flight, 8 batches ahead) measured the same: 405-444 against 395-439 MB/s a put,
# 572-653 against 477-674 a get, three alternating rounds on the bench's mesh.
PUT_INFLIGHT = 3  # pieces in flight to one holder
ENCODE_AHEAD = 2  # pieces a put encodes ahead of the one it is sending
WINDOW = 5  # batches of chunks fetched ahead by a reader (115 chunks at k=3)
CHECKERS = 2  # threads decoding and hashing a reader's batches (hashing releases the GIL)
CALL_TIMEOUT = 30.0  # seconds one piece may take (1 MiB, two more ahead of it, on a slow link)
CLOCK_SKEW = 300  # seconds a holder's clock may differ from ours when it states an expiry
PEER_FAILURES = (RpcError, Unreachable, OSError, TimeoutError)


class TransferError(QizError):
    """A put or get could not complete; the message says which holder or chunk and why."""


class HolderFailed(TransferError):
    def __init__(self, holder: bytes, index: int, reason: str) -> None:
        super().__init__(f"holder of share {index} failed: {reason}")
        self.holder = holder
        self.index = index


def checked_expiry(answer: object, now: float) -> int | None:
    """A holder's lease expiry from its answer, if it is one: a whole number of seconds from
    now to now + MAX_LEASE (a little clock skew allowed). Anything else is a bad answer."""
    expires = answer.get("expires") if isinstance(answer, dict) else None
    if isinstance(expires, float) and expires.is_integer():
        expires = int(expires)
    if not isinstance(expires, int) or isinstance(expires, bool):
        return None
    if not now - CLOCK_SKEW <= expires <= now + MAX_LEASE + CLOCK_SKEW:
        return None
    return expires


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
            self.failed = self.failed or peer_text(str(exc))
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
            raise HolderFailed(self.holder, self.index, peer_text(str(exc))) from None
        expires = checked_expiry(answer, time.time())
        if expires is None:
            raise HolderFailed(self.holder, self.index, "commit answered without a valid expiry")
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


async def upload(
    manifest: Manifest,
    stored: AsyncIterator[tuple[int, bytes]],
    uploads: dict[int, ColumnUpload],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Encode every stored chunk once and send share ``j`` to ``uploads[j]`` (those present:
    a repair sends only the missing columns). The chunks of one piece are encoded together
    (:func:`~qiz.store.erasure.encode_run`: one zfec call, and each column's piece comes out
    whole) in a thread of their own, up to ``ENCODE_AHEAD`` pieces ahead of the piece being
    sent: zfec releases the interpreter lock while it codes, so the encoding of the next
    pieces overlaps the loop's sending of this one (docs/store.md, "Throughput")."""
    per_piece = pieces_per_batch(manifest)
    offsets: dict[int, int] = dict.fromkeys(uploads, 0)
    columns = list(uploads)
    done = 0
    loop = asyncio.get_running_loop()
    coder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qiz-store-encode")
    ahead: list[tuple[int, asyncio.Future[dict[int, bytes]]]] = []

    compiled = manifest.size >= parity.COMPILED_FROM  # worth the kernel's first load

    def encode(batch: list[bytes]) -> dict[int, bytes]:
        return erasure.encode_run(batch, manifest.k, manifest.n, columns, compiled=compiled)

    async def send_oldest() -> None:
        nonlocal done
        size, future = ahead.pop(0)
        coded = await future
        for j, upload_j in uploads.items():
            data = coded[j]
            if data:
                await upload_j.send(j, offsets[j], data)
                offsets[j] += len(data)
        done += size
        if progress is not None:
            progress(done)

    def start(batch: list[tuple[int, bytes]]) -> None:
        size = sum(manifest.stored_size(i) for i, _ in batch)
        ahead.append((size, loop.run_in_executor(coder, encode, [c for _, c in batch])))

    try:
        batch: list[tuple[int, bytes]] = []
        async for item in stored:
            batch.append(item)
            if len(batch) >= per_piece:
                start(batch)
                batch = []
                if len(ahead) > ENCODE_AHEAD:
                    await send_oldest()
                    if all(u.failed is not None for u in uploads.values()):
                        return
        if batch:
            start(batch)
        while ahead:
            await send_oldest()
    finally:
        for _, future in ahead:
            future.cancel()
        if ahead:  # the batch being coded ends before its thread goes
            await asyncio.gather(*(f for _, f in ahead), return_exceptions=True)
        coder.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------- reading


@dataclass
class Sources:
    """Who holds which column (each index's holders best first), and who has been found out:
    ``bad`` served bytes that did not check out, ``dead`` could not be read."""

    by_index: dict[int, list[bytes]]
    bad: set[bytes] = field(default_factory=set)
    dead: set[bytes] = field(default_factory=set)

    def holders(self, index: int) -> list[bytes]:
        return [h for h in self.by_index.get(index, ()) if h not in self.bad and h not in self.dead]

    def holder(self, index: int, rank: int = 0) -> bytes | None:
        """The ``rank``-th usable holder of ``index`` (the last one when fewer)."""
        usable = self.holders(index)
        return usable[min(rank, len(usable) - 1)] if usable else None

    def live_indices(self) -> list[int]:
        return [j for j in sorted(self.by_index) if self.holder(j) is not None]

    def asked(self) -> int:
        return len({h for holders in self.by_index.values() for h in holders})


@dataclass(frozen=True, slots=True)
class Piece:
    """One column's bytes for a batch of chunks, and who served them (blame goes there)."""

    index: int
    holder: bytes
    data: bytes


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
        self._checker: ThreadPoolExecutor | None = None

    async def chunks(self) -> AsyncIterator[tuple[int, bytes]]:
        count = self.manifest.chunks
        starts = list(range(0, count, self.per_batch))
        ahead: list[asyncio.Task[list[bytes]]] = []
        # batches are decoded and hashed in threads of their own while the loop reads the
        # next ones: hashing (which releases the interpreter lock) is a fifth of a get's work,
        # and with one thread the batches queued for it (9 ms a batch, 0.8 of it work)
        self._checker = ThreadPoolExecutor(
            max_workers=CHECKERS, thread_name_prefix="qiz-store-check"
        )
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
            checker, self._checker = self._checker, None
            if checker is not None:
                checker.shutdown(wait=False, cancel_futures=True)

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

    async def _column_piece(self, index: int, offset: int, length: int, rank: int = 0) -> Piece:
        """Read one column's piece from its ``rank``-th usable holder, moving on past
        holders that fail (they are marked dead)."""
        while True:
            holder = self.sources.holder(index, rank)
            if holder is None:
                raise TransferError(f"no live holder of share {index}")
            try:
                return Piece(index, holder, await self._read(holder, index, offset, length))
            except PEER_FAILURES as exc:
                log.info("store: holder of share %d failed: %s", index, peer_text(str(exc)))
                self.sources.dead.add(holder)

    async def _gather(
        self, wanted: list[int], offset: int, length: int, rank: int = 0
    ) -> list[Piece]:
        results = await asyncio.gather(
            *(self._column_piece(j, offset, length, rank) for j in wanted), return_exceptions=True
        )
        pieces = []
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Piece):
                pieces.append(result)
        return pieces

    async def _batch(self, start: int) -> list[bytes]:
        indices, offset, length = self._range(start)
        k = self.manifest.k
        pieces: dict[int, Piece] = {}
        tried: set[int] = set()
        while len(pieces) < k:
            live = [j for j in self.sources.live_indices() if j not in tried]
            # systematic shares first: decoding from 0..k-1 is a concatenation
            wanted = live[: k - len(pieces)]
            if not wanted:
                raise TransferError(
                    f"chunks {indices[0]}-{indices[-1]}: {len(pieces)} of the {k} shares "
                    f"needed can be read ({self.sources.asked()} holders asked)"
                )
            tried.update(wanted)
            for piece in await self._gather(wanted, offset, length):
                pieces[piece.index] = piece
        if self._checker is not None:
            loop = asyncio.get_running_loop()
            decoded = loop.run_in_executor(self._checker, self._decode_batch, indices, pieces)
            chunks, suspects = await decoded
        else:  # an audit: one batch, nothing to overlap with
            chunks, suspects = self._decode_batch(indices, pieces)
        if suspects:
            return await self._recover(start, pieces, chunks, suspects)
        return [c for c in chunks if c is not None]

    def _split(self, indices: list[int], piece: bytes) -> list[memoryview]:
        """A column's piece cut into the batch's shares (views: nothing is copied)."""
        view = memoryview(piece)
        out, at = [], 0
        for i in indices:
            size = self.manifest.share_size(i)
            out.append(view[at : at + size])
            at += size
        return out

    def _decode_one(self, i: int, shares: dict[int, memoryview]) -> bytes | None:
        k, n = self.manifest.k, self.manifest.n
        chunk = erasure.decode_chunk(shares, k, n, self.manifest.stored_size(i))
        return chunk if hashlib.sha256(chunk).digest() == self.hashes[i] else None

    def _decode_batch(
        self, indices: list[int], pieces: dict[int, Piece]
    ) -> tuple[list[bytes | None], list[int]]:
        split = {j: self._split(indices, piece.data) for j, piece in pieces.items()}
        use = sorted(split)[: self.manifest.k]
        chunks: list[bytes | None] = []
        suspects = []
        for at, i in enumerate(indices):
            chunk = self._decode_one(i, {j: split[j][at] for j in use})
            chunks.append(chunk)
            if chunk is None:
                suspects.append(at)
        return chunks, suspects

    def _search(self, i: int, at: int, split: dict[int, list[memoryview]]) -> bytes | None:
        """A chunk that checks out from some k of the shares read, trying at most
        ``MAX_DECODE_TRIES`` subsets (the most trusted first), or None."""
        k = self.manifest.k
        for subset in itertools.islice(itertools.combinations(sorted(split), k), MAX_DECODE_TRIES):
            chunk = self._decode_one(i, {j: split[j][at] for j in subset})
            if chunk is not None:
                return chunk
        return None

    async def _recover(
        self,
        start: int,
        pieces: dict[int, Piece],
        chunks: list[bytes | None],
        suspects: list[int],
    ) -> list[bytes]:
        """Some chunk did not check out. Read every other live column of this batch and look
        for k shares that decode to the right hash; when none do, read each column again
        from its next holder (a hostile provider may claim every column and answer first),
        up to ``MAX_ROUNDS`` holders deep. With a chunk that checks out, re-encode it: every
        holder whose share differs served bad bytes, and is named (each piece remembers who
        served it)."""
        indices, offset, length = self._range(start)
        k, n = self.manifest.k, self.manifest.n
        missing = [j for j in self.sources.live_indices() if j not in pieces]
        for piece in await self._gather(missing, offset, length):
            pieces[piece.index] = piece
        seen: list[Piece] = list(pieces.values())
        for rank in range(MAX_ROUNDS):
            if rank:  # the next holder of every column that has one
                again = [
                    j for j in self.sources.live_indices() if len(self.sources.holders(j)) > rank
                ]
                if not again:
                    break
                fresh = await self._gather(again, offset, length, rank)
                for piece in fresh:
                    pieces[piece.index] = piece
                seen += fresh
            split = {j: self._split(indices, p.data) for j, p in pieces.items()}
            for at in suspects:
                if chunks[at] is None:
                    chunks[at] = await asyncio.to_thread(self._search, indices[at], at, split)
            if all(chunks[at] is not None for at in suspects):
                break
        lost = [indices[at] for at in suspects if chunks[at] is None]
        if lost:
            raise TransferError(
                f"chunk {lost[0]} cannot be rebuilt: no {k} of the shares read from "
                f"{len({p.holder for p in seen})} holders match its hash"
            )
        culprits: set[tuple[int, bytes]] = set()
        for at in range(len(indices)):
            good = chunks[at]
            assert good is not None
            expected = erasure.encode_chunk(good, k, n)
            for piece in seen:
                if self._split(indices, piece.data)[at] != expected[piece.index]:
                    culprits.add((piece.index, piece.holder))
        for index, holder in culprits:
            if holder not in self.sources.bad:
                self.sources.bad.add(holder)
                self.bad_shares += 1
                if self.on_bad is not None:
                    self.on_bad(holder, index)
        return [c for c in chunks if c is not None]

    async def audit(self, start: int) -> tuple[set[int], set[int]]:
        """Read the batch at ``start`` from the first holder of every live column: the
        indices whose shares differ from the re-encoded chunks (bad), and those that could
        not be read (gone)."""
        indices, offset, length = self._range(start)
        live = self.sources.live_indices()
        first = {j: self.sources.holder(j) for j in live}
        got = {p.index: p for p in await self._gather(live, offset, length)}
        gone = {j for j in live if j not in got or got[j].holder != first[j]}
        if len(got) < self.manifest.k:
            return set(), gone
        before = set(self.sources.bad)
        chunks: list[bytes | None] = [None] * len(indices)
        await self._recover(start, got, chunks, list(range(len(indices))))
        bad_holders = self.sources.bad - before
        return {p.index for p in got.values() if p.holder in bad_holders}, gone


def peer_text(text: str, limit: int = 200) -> str:
    """A peer's words, fit for a log line or an error message: printable, bounded."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: limit * 2])
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
            errors.append(peer_text(str(exc)))
    raise TransferError(
        f"no holder served the chunk table ({len(holders)} asked"
        + (f"; last: {errors[-1]}" if errors else "")
        + ")"
    )
