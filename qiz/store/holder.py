"""The holder's RPC face: ``store.offer/put/commit/renew/release/have/manifest/read``
(docs/store.md, "Holders: the protocol"), each a thin adapter over
:class:`~qiz.store.holdings.Holdings`: a plain function answered inline, but for the commit,
which waits for its fsync in a worker thread.

Every body is a peer's and hostile: each field's type and size is checked here, before
:class:`Holdings` sees it, and every refusal is an :class:`~qiz.qmp.rpc.RpcError` with one of
the protocol's codes. The handlers run on the event loop and do little per call (a piece's
``pwrite`` or ``pread`` of at most ``MAX_PIECE``, a few indexed SQLite statements); the one
slow step, hashing a chunk table of up to 32 MiB and fsyncing a column at commit, runs in a
worker thread.

After a commit the content is announced (``announce(cid, expires)``: the node publishes a
provider record), in the background so that a slow DHT never delays the owner's answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from qiz.crypto.ids import DIGEST_SIZE, ContentId, NodeId
from qiz.qmp.rpc import CallContext, Handler, RpcError
from qiz.ratelimit import KeyedRateLimiter
from qiz.store.holdings import TABLE, Checked, HoldError, Holdings
from qiz.store.limits import (
    MAX_LEASE,
    MAX_MANIFEST,
    MAX_OFFSET,
    MAX_PENDING_ANNOUNCES,
    MAX_PENDING_FLUSHES,
    MAX_PIECE,
    MAX_SHARES,
    STORE_WRITE_BURST,
    STORE_WRITE_RATE,
)

log = logging.getLogger("qiz.store")

Announce = Callable[[ContentId, float], Awaitable[None]]

METHODS = (
    "store.offer",
    "store.put",
    "store.commit",
    "store.renew",
    "store.release",
    "store.have",
    "store.manifest",
    "store.read",
)
# the methods that write the holder's index (a transaction and an fsync each): rate-limited
WRITES = frozenset({"store.offer", "store.commit", "store.renew", "store.release"})


class HolderService:
    """Serves this node's holdings to owners and getters over RPC."""

    def __init__(
        self,
        holdings: Holdings,
        *,
        announce: Announce | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holdings = holdings
        self.announce = announce
        self.clock = clock
        self.counters = {
            "offers": 0,
            "refused": 0,
            "bytes_written": 0,
            "bytes_served": 0,
            "commits": 0,
            "collected": 0,
            "freed_bytes": 0,
            "announce_failed": 0,
            "rate_limited": 0,
        }
        self._writes = KeyedRateLimiter(STORE_WRITE_RATE, STORE_WRITE_BURST)
        self._announcing: set[asyncio.Task[None]] = set()
        self._flushing: set[asyncio.Future[None]] = set()

    def handlers(self) -> dict[str, Handler]:
        """The RPC methods, by name, for the node's dispatch table. Every method but
        ``store.commit`` is a plain function, answered inline in the receive path without a
        task of its own (:mod:`qiz.qmp.rpc`): a put or a get moved 7-8 pieces per MB of
        content through them when pieces were 240 KiB (about 1.7 and 1 now), and a task per
        piece was a measurable part of a holder's CPU (docs/store.md, "Throughput")."""
        plain: dict[str, Callable[[NodeId, dict], Any]] = {
            "store.offer": self._offer,
            "store.put": self._put,
            "store.renew": self._renew,
            "store.release": self._release,
            "store.have": self._have,
            "store.manifest": self._manifest,
            "store.read": self._read,
        }
        table: dict[str, Handler] = {name: self._guard(name, m) for name, m in plain.items()}
        table["store.commit"] = self._guard_async("store.commit", self._commit)
        return table

    def _admit(self, name: str, ctx: CallContext, body: Any) -> None:
        """Refuse a body that is not a map, and a write over this peer's rate."""
        if not isinstance(body, dict):
            self.counters["refused"] += 1
            raise RpcError("bad-request", f"{name} takes a map")
        if name in WRITES and not self._writes.allow(ctx.peer_id.digest, self.clock()):
            self.counters["refused"] += 1
            self.counters["rate_limited"] += 1
            raise RpcError("busy", "too many store requests from this peer; try again later")

    def _refusal(self, name: str, exc: HoldError | RpcError | OSError) -> RpcError:
        """The RpcError a method's refusal or disk failure becomes, counted."""
        if isinstance(exc, HoldError):
            self.counters["refused"] += 1
            return RpcError(exc.code, exc.message)
        if isinstance(exc, RpcError):
            self.counters["refused"] += 1
            return exc
        # the disk: full, or failing; the peer learns no path
        self.counters["refused"] += 1
        log.warning("store: %s failed: %s", name, exc)
        reason = exc.strerror or "I/O error"
        return RpcError("full", f"this holder cannot write: {reason}")

    def _guard(self, name: str, method: Callable[[NodeId, dict], Any]) -> Handler:
        def handler(ctx: CallContext, body: Any) -> Any:
            self._admit(name, ctx, body)
            try:
                return method(ctx.peer_id, body)
            except (HoldError, RpcError, OSError) as exc:
                refusal = self._refusal(name, exc)
                if refusal is exc:
                    raise
                raise refusal from None

        return handler

    def _guard_async(self, name: str, method: Callable[[NodeId, dict], Awaitable[Any]]) -> Handler:
        async def handler(ctx: CallContext, body: Any) -> Any:
            self._admit(name, ctx, body)
            try:
                return await method(ctx.peer_id, body)
            except (HoldError, RpcError, OSError) as exc:
                refusal = self._refusal(name, exc)
                if refusal is exc:
                    raise
                raise refusal from None

        return handler

    # ------------------------------------------------------------------ methods

    def _offer(self, peer: NodeId, body: dict) -> dict:
        manifest = _bytes(body, "manifest", MAX_MANIFEST)
        index = _int(body, "index", 0, MAX_SHARES - 1)
        lease = _int(body, "lease", 1, 1 << 40)
        have = self.holdings.offer(peer, manifest, index, min(lease, MAX_LEASE))
        self.counters["offers"] += 1
        return {"have": have}

    def _put(self, peer: NodeId, body: dict) -> dict:
        cid = _cid(body)
        part = _int(body, "part", TABLE, MAX_SHARES - 1)
        offset = _int(body, "offset", 0, MAX_OFFSET)
        data = _bytes(body, "data", MAX_PIECE)
        due = self.holdings.write(peer, cid, part, offset, data)
        self.counters["bytes_written"] += len(data)
        if due is not None and len(self._flushing) < MAX_PENDING_FLUSHES:
            task = asyncio.ensure_future(asyncio.to_thread(_flush_quietly, due))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        return {}

    async def _commit(self, peer: NodeId, body: dict) -> dict:
        cid = _cid(body)
        index = _int(body, "index", 0, MAX_SHARES - 1)
        held = self.holdings.held_lease(peer, cid, index)
        if held is not None:  # the offer answered "have": nothing was sent
            return {"expires": int(held)}
        checked = self.holdings.prepare(peer, cid, index)
        work = asyncio.ensure_future(asyncio.to_thread(Holdings.finish, checked))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            # the caller gave up (cancel, link closed), not the thread: it still uses the
            # files, so the commit ends when it does; a retried commit then finds the lease
            work.add_done_callback(lambda done: self._finish_later(checked, done))
            raise
        except BaseException:
            self.holdings.abandon(checked)
            raise
        return {"expires": int(self._complete(checked))}

    def _complete(self, checked: Checked) -> float:
        expires = self.holdings.complete(checked)
        self.counters["commits"] += 1
        self._announce(checked.upload.cid, expires)
        return expires

    def _finish_later(self, checked: Checked, done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is not None:
            self.holdings.abandon(checked)
            return
        try:
            self._complete(checked)
        except (HoldError, OSError) as exc:
            log.info("store: a commit nobody waited for failed: %s", exc)

    def _renew(self, peer: NodeId, body: dict) -> dict:
        cid = _cid(body)
        index = _int(body, "index", 0, MAX_SHARES - 1)
        lease = _int(body, "lease", 1, 1 << 40)
        return {"expires": int(self.holdings.renew(peer, cid, index, min(lease, MAX_LEASE)))}

    def _release(self, peer: NodeId, body: dict) -> dict:
        cid = _cid(body)
        index = _int(body, "index", 0, MAX_SHARES - 1)
        self.holdings.release(peer, cid, index)
        return {}

    def _have(self, _peer: NodeId, body: dict) -> dict:
        cid = _cid(body)
        indices = self.holdings.have(cid)
        if not indices:
            raise RpcError("not-found", f"this node holds nothing of {cid.short()}")
        return {"indices": indices}

    def _manifest(self, _peer: NodeId, body: dict) -> dict:
        cid = _cid(body)
        raw = self.holdings.manifest(cid)
        if raw is None:
            raise RpcError("not-found", f"this node holds nothing of {cid.short()}")
        return {"manifest": raw}

    def _read(self, _peer: NodeId, body: dict) -> dict:
        cid = _cid(body)
        part = _int(body, "part", TABLE, MAX_SHARES - 1)
        offset = _int(body, "offset", 0, MAX_OFFSET)
        length = _int(body, "length", 0, MAX_PIECE)
        data = self.holdings.read(cid, part, offset, length)
        self.counters["bytes_served"] += len(data)
        return {"data": data}

    # ------------------------------------------------------------------ upkeep

    def _announce(self, cid: ContentId, expires: float) -> None:
        if self.announce is None:
            return
        if len(self._announcing) >= MAX_PENDING_ANNOUNCES:
            self.counters["announce_failed"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._announce_one(cid, expires))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce_one(self, cid: ContentId, expires: float) -> None:
        assert self.announce is not None
        try:
            await self.announce(cid, expires)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a DHT hiccup: the next commit or renewal announces again
            self.counters["announce_failed"] += 1
            log.info("store: announcing %s failed: %s", cid.short(), exc)

    def collect(self) -> dict[str, int]:
        """Run the collector now (``qiz store gc``), counting what it freed."""
        result = self.holdings.collect(self.clock())
        self.counters["collected"] += result["columns"]
        self.counters["freed_bytes"] += result["freed_bytes"]
        return result

    async def collect_loop(self, every: float) -> None:
        """Collect every ``every`` seconds until cancelled; a failed round is logged and the
        next one tries again."""
        while True:
            await asyncio.sleep(every)
            try:
                self.collect()
            except Exception:
                log.exception("store: collecting failed")

    async def close(self) -> None:
        """Cancel announcements still in flight and wait for background flushes (the node
        is stopping)."""
        tasks = list(self._announcing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._flushing, return_exceptions=True)


def _flush_quietly(path: Path) -> None:
    """fdatasync ``path`` (in a worker thread). Only a head start for the commit's own fsync,
    which alone makes the column durable: a file gone or renamed meanwhile is no error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fdatasync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- body fields


def _field(body: dict, name: str) -> object:
    if name not in body:
        raise RpcError("bad-request", f"missing field {name!r}")
    return body[name]


def _int(body: dict, name: str, low: int, high: int) -> int:
    value = _field(body, name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RpcError("bad-request", f"{name} must be a whole number from {low} to {high}")
    return value


def _bytes(body: dict, name: str, limit: int) -> bytes:
    value = _field(body, name)
    if not isinstance(value, bytes):
        raise RpcError("bad-request", f"{name} must be bytes")
    if len(value) > limit:
        raise RpcError("bad-request", f"{name} is over its {limit}-byte limit")
    return value


def _cid(body: dict) -> ContentId:
    value = _field(body, "cid")
    if not isinstance(value, bytes) or len(value) != DIGEST_SIZE:
        raise RpcError("bad-request", f"cid must be {DIGEST_SIZE} bytes")
    return ContentId(value)
