"""The storage pool on a node: what :class:`~qiz.node.Node` wires in (docs/store.md).

:class:`StoreService` is both sides of the pool:

* the **holder**: :class:`~qiz.store.holder.HolderService` over
  :class:`~qiz.store.holdings.Holdings` answers ``store.*`` RPCs, and every commit announces a
  provider record for the content id in the DHT;
* the **owner**: ``put`` (scan, hash, sign the manifest, place the n columns, stream them),
  ``get`` (find the manifest and the holders, read k shares of every chunk, check, unpack),
  ``pin``/``unpin``/``rm``, and the upkeep pass that renews leases, audits a random batch of
  every content it keeps and rebuilds columns whose holder is gone or served bad bytes.

Peers are reached by id through one :class:`~qiz.resolve.reach.PeerCaller`; this node, when it
holds a column itself, is called directly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from qiz import wire
from qiz.crypto.ids import ContentId, NodeId
from qiz.events import EventBus, EventKind
from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.manager import LinkManager
from qiz.qmp.rpc import CallContext, Handler, RpcError
from qiz.resolve.dht import Dht
from qiz.resolve.reach import PeerCaller, Unreachable
from qiz.resolve.records import MAX_TTL, RecordKind, make_provider_record
from qiz.store import chunks as chunking
from qiz.store import erasure, sealing, tree
from qiz.store.catalog import Catalog, Owned
from qiz.store.config import StoreConfig
from qiz.store.errors import ContentNotFound, NotEnoughHolders, NotOwned, StoreError
from qiz.store.holder import HolderService
from qiz.store.holdings import Holdings
from qiz.store.limits import CHUNK_SIZE, MAX_HOLDERS_PER_INDEX, MAX_LEASE
from qiz.store.manifest import (
    Manifest,
    ManifestError,
    build_manifest,
    parse_manifest,
)
from qiz.store.placement import order_candidates, place
from qiz.store.transfer import (
    PEER_FAILURES,
    ChunkReader,
    ColumnUpload,
    HolderFailed,
    Sources,
    TransferError,
    checked_expiry,
    peer_text,
    read_table,
    send_table,
    upload,
)
from qiz.store.writer import BackgroundWriter
from qiz.tasks import TaskOwner

log = logging.getLogger("qiz.store")
OWNER_DB = "owner.sqlite"
PROGRESS_EVERY = 0.1  # seconds between progress events of one transfer
HAVE_TIMEOUT = 5.0
LOOKUP_TIMEOUT = 10.0
READ_BATCH = 16  # stored chunks a put reads (and checks) per trip to the worker thread
WRITE_PENDING = 4 << 20  # bytes of a get queued for the disk beyond the batch being written
SOURCE_TRIES = 3  # provider lookups a get makes before it says too few shares are held
SOURCE_RETRY = 0.5  # seconds before the second lookup (then twice that)


class Scores(Protocol):
    def get(self, peer: bytes) -> float: ...
    def failed(self, peer: bytes) -> None: ...
    def record(self, peer: bytes, reason: str, detail: str = "") -> None: ...


@dataclass(frozen=True)
class PutResult:
    cid: ContentId
    kind: str
    size: int
    chunks: int
    k: int
    n: int
    holders: list[str]  # index j -> holder of column j ("" when none holds it now)
    sealed_to: list[str]
    seconds: float
    live: int = 0  # columns held when the put returned (n, unless a holder failed for good)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cid": str(self.cid)}


@dataclass(frozen=True)
class GetResult:
    cid: ContentId
    kind: str
    path: str
    size: int
    seconds: float
    holders_asked: int
    bad_shares: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cid": str(self.cid)}


class _Progress:
    """Progress events of one transfer, at most one per ``PROGRESS_EVERY`` seconds."""

    def __init__(self, events: EventBus, transfer: str | None, op: str, total: int) -> None:
        self.events = events
        self.transfer = transfer
        self.op = op
        self.total = total
        self.done = 0
        self._last = 0.0

    def __call__(self, done: int, *, final: bool = False) -> None:
        self.done = done
        if self.transfer is None:
            return
        now = time.monotonic()
        if final or now - self._last >= PROGRESS_EVERY:
            self._last = now
            self.events.emit(
                EventKind.STORE_PROGRESS,
                transfer=self.transfer,
                op=self.op,
                done=done,
                total=self.total,
            )


class StoreService:
    def __init__(
        self,
        identity: NodeIdentity,
        links: LinkManager,
        dht: Dht,
        handlers: dict[str, Handler],
        *,
        config: StoreConfig | None = None,
        home: Path | None = None,
        scores: Scores | None = None,
        clock: Callable[[], float] = time.time,
        events: EventBus | None = None,
    ) -> None:
        self.identity = identity
        self.links = links
        self.dht = dht
        self.config = config or StoreConfig()
        self.clock = clock
        self.events = events if events is not None else EventBus(clock)
        self.scores = scores
        self.home = home
        self.caller = PeerCaller(identity, links, dht, handlers)
        self.holdings = Holdings(home, self.config, clock)
        self.holder = HolderService(self.holdings, announce=self._announce, clock=clock)
        handlers.update(self.holder.handlers())
        handlers["store.holders"] = self._rpc_holders
        self.catalog = Catalog(home / "store" / OWNER_DB if home is not None else None)
        self.counters = {
            "puts": 0,
            "gets": 0,
            "bytes_put": 0,
            "bytes_got": 0,
            "repairs": 0,
            "bad_shares": 0,
            "renewals": 0,
            "lost_columns": 0,
        }
        self._owner = TaskOwner("store", log)

    @property
    def me(self) -> bytes:
        return self.identity.node_id.digest

    async def call(self, peer: bytes, method: str, body: Any, *, timeout: float = 10.0) -> Any:
        return await self.caller.call(peer, method, body, timeout=timeout)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._owner.every(self.config.collect_every, self._collect, "collect store")
        # renewals come every renew_every (shorter than any lease, StoreConfig checks); each
        # content's audit and repair come with the first pass after repair_every
        every = min(self.config.renew_every, self.config.repair_every)
        self._owner.every(every, self.upkeep, "store upkeep")

    async def _collect(self) -> None:
        self.holder.collect()

    async def stop(self) -> None:
        await self._owner.close()
        await self.holder.close()

    def close(self) -> None:
        self.catalog.close()
        self.holdings.close()

    # ------------------------------------------------------------------ the holder's side

    async def _announce(self, cid: ContentId, expires: float) -> None:
        """Publish "this node holds shares of ``cid``" until the lease ends (at most the DHT's
        longest TTL; renewals announce again)."""
        now = self.clock()
        ttl = int(max(60, min(expires - now, MAX_TTL)))
        raw = make_provider_record(
            self.identity, cid, [self.links.listener.address], now=now, ttl=ttl
        )
        await self.dht.publish(raw, RecordKind.PROVIDER)

    def _announce_owner(self, cid: ContentId) -> None:
        """An owner is a provider too: it serves the manifest and says who holds what
        (``store.holders``), so a get right after a put finds every holder even before the
        holders' own announcements have spread."""
        expires = self.clock() + self.config.lease_seconds
        self._owner.spawn(self._announce(cid, expires), f"announce {cid.short()}")

    # ------------------------------------------------------------------ put

    async def put(
        self,
        path: Path,
        *,
        k: int | None = None,
        n: int | None = None,
        to: Sequence[PeerRecord] = (),
        transfer: str | None = None,
    ) -> PutResult:
        """Store the file or directory at ``path`` in the pool; see docs/store.md."""
        started = time.perf_counter()
        k = k or self.config.k
        n = n or self.config.n
        try:
            erasure.check_params(k, n)
        except erasure.ErasureError as exc:
            raise StoreError(str(exc)) from None
        scan = await asyncio.to_thread(tree.scan, Path(path))
        key = sealing.new_content_key() if to else None
        check = chunking.ChangeCheck()  # the second pass compares fingerprints, not hashes
        table, root = await asyncio.to_thread(chunking.hash_stream, scan, CHUNK_SIZE, key, check)
        recipients = sealed_tree = None
        if key is not None:
            # one wrapped key per recipient, whatever the caller repeated, in the id order
            # the manifest requires
            unique = {record.node_id.digest: record for record in to}
            recipients = [sealing.wrap_key(key, root, unique[d]) for d in sorted(unique)]
            sealed_tree = sealing.seal_tree(key, wire.encode(tree.entries_to_cbor(scan.entries)))
        try:
            manifest = build_manifest(
                self.identity,
                scan.kind,
                scan.entries,
                scan.size,
                CHUNK_SIZE,
                root,
                k,
                n,
                sealed_tree=sealed_tree,
                recipients=recipients,
                created=int(self.clock()),
            )
        except ManifestError as exc:
            raise StoreError(f"cannot store {path}: {exc}") from None
        progress = _Progress(self.events, transfer, "put", manifest.size)
        stored = _stored_chunks(scan, manifest.chunk, key, check)
        holders, failed = await self._place_and_send(
            manifest, table, range(n), stored, progress=progress, exclude=set()
        )
        lost = [j for j in range(n) if j not in holders]
        name = manifest.name or scan.name
        self.catalog.add(
            manifest.cid.digest,
            manifest.raw,
            name,
            pinned=True,
            published=True,
            now=self.clock(),
            holders=[(j, h, e) for j, (h, e) in holders.items()],
        )
        for j, holder in failed.items():  # remembered (and not relied on) until rebuilt
            self.catalog.place(manifest.cid.digest, j, holder, "bad", 0)
        if lost:  # a holder failed mid-put: the others hold enough; rebuild its column now
            await self.check(manifest.cid, repair=True)
        self._announce_owner(manifest.cid)
        progress(manifest.size, final=True)
        self.counters["puts"] += 1
        self.counters["bytes_put"] += manifest.size
        placed = self._live(manifest.cid)
        self.events.emit(
            EventKind.STORE_PUT, cid=str(manifest.cid), size=manifest.size, holders=len(placed)
        )
        return PutResult(
            manifest.cid,
            manifest.kind,
            manifest.size,
            manifest.chunks,
            k,
            n,
            [str(NodeId(placed[j])) if j in placed else "" for j in range(n)],
            [str(NodeId(r[0])) for r in manifest.recipients or ()],
            round(time.perf_counter() - started, 3),
            len(placed),
        )

    async def put_files(
        self,
        files: Mapping[str, bytes],
        *,
        name: str | None = None,
        k: int | None = None,
        n: int | None = None,
        to: Sequence[PeerRecord] = (),
        transfer: str | None = None,
    ) -> PutResult:
        """Store in-memory files: one file and a ``name`` make a ``file`` content, anything
        else a ``dir`` (paths as in a tree entry). They are written to a private temporary
        directory first, so the same scan and checks apply as for a path."""
        if name is not None and len(files) != 1:
            raise StoreError("a named content holds exactly one file")
        base = self.holdings.root / "tmp"
        base.mkdir(mode=0o700, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="put-", dir=base))
        try:
            if name is not None:
                target = scratch / name
                tree.check_path(name)
                target.write_bytes(next(iter(files.values())))
            else:
                target = scratch / "content"
                target.mkdir()
                for rel, data in files.items():
                    tree.check_path(rel)
                    path = target / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
            return await self.put(target, k=k, n=n, to=to, transfer=transfer)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _score(self, peer: bytes) -> float:
        return self.scores.get(peer) if self.scores is not None else 1.0

    async def _candidates(self, cid: bytes, exclude: set[bytes]) -> list[bytes]:
        """The nodes closest to ``cid`` and the linked peers, best first."""
        found: list[bytes] = [peer.digest for peer in self.links.peers]
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                lookup = await self.dht.lookup(cid)
            found += [contact.node_id for contact in lookup.closest()]
        except (TimeoutError, OSError) as exc:
            log.info("store: lookup for holders failed: %s", exc)
        found += [c.node_id for c in self.dht.table.closest(cid, self.dht.config.k)]
        return order_candidates(cid, found, self._score, exclude=exclude | {self.me})

    async def _place_and_send(
        self,
        manifest: Manifest,
        table: bytes,
        indices: range | list[int],
        stored: AsyncIterator[tuple[int, bytes]],
        *,
        progress: Callable[[int], None] | None = None,
        exclude: set[bytes],
        partial: bool = False,
    ) -> tuple[dict[int, tuple[bytes, int]], dict[int, bytes]]:
        """Offer ``indices`` to new holders, stream their columns from ``stored`` and commit;
        index -> (holder, lease expiry) for those that committed. A put needs every index
        placed and at least k committed (:class:`NotEnoughHolders` / :class:`TransferError`);
        a repair (``partial``) takes whatever can be placed and committed. Also returns the
        holders that accepted but failed (index -> holder), so that nobody retries them."""
        cid = manifest.cid.digest
        lease = int(min(self.config.lease_seconds, MAX_LEASE))
        candidates = await self._candidates(cid, exclude)
        placement = await place(manifest, indices, candidates, self.call, lease)
        wanted = len(list(indices))
        if not placement.holders or (len(placement.holders) < wanted and not partial):
            reason = f"; {placement.refusals[-1]}" if placement.refusals else ""
            raise NotEnoughHolders(
                f"{len(placement.holders)} of the {wanted} holders needed accepted "
                f"({placement.asked} asked{reason})"
            )
        uploads = {
            j: ColumnUpload(self.call, cid, holder, j)
            for j, holder in placement.holders.items()
            if j not in placement.already_held
        }
        expiry = int(self.clock()) + lease
        committed = {j: (placement.holders[j], expiry) for j in placement.already_held}
        try:
            if uploads:
                await send_table(uploads.values(), table)
                await upload(manifest, stored, uploads, progress)
            results = await asyncio.gather(
                *(u.finish() for u in uploads.values()), return_exceptions=True
            )
        except BaseException:
            for u in uploads.values():
                await u.abort()
            raise
        finally:
            await _close(stored)
        failed: dict[int, bytes] = {}
        for (j, u), result in zip(uploads.items(), results, strict=True):
            if isinstance(result, HolderFailed):
                log.info("store: %s", result)
                self._failed(u.holder)
                failed[j] = u.holder
            elif isinstance(result, BaseException):
                raise result
            else:
                committed[j] = (u.holder, result)
        floor = 1 if partial else manifest.k
        if len(committed) < floor:
            raise TransferError(
                f"only {len(committed)} of {wanted} holders stored their share; nothing is "
                "recorded (the others' offers lapse)"
            )
        return committed, failed

    def _failed(self, holder: bytes) -> None:
        if self.scores is not None:
            self.scores.failed(holder)

    # ------------------------------------------------------------------ finding content

    async def manifest(self, cid: ContentId) -> Manifest:
        """The checked manifest: this node's copy (owner or holder), else a provider's."""
        return (await self._find_manifest(cid))[0]

    async def _find_manifest(self, cid: ContentId) -> tuple[Manifest, list[bytes] | None]:
        """The checked manifest, and the providers the DHT named on the way (None when this
        node had its own copy): a get asks them for their columns next, without a second
        lookup (each costs 10-40 ms on a loaded mesh)."""
        owned = self.catalog.get(cid.digest)
        if owned is not None:
            return parse_manifest(owned.manifest, cid=cid), None
        held = self.holdings.manifest(cid)
        if held is not None:
            return parse_manifest(held, cid=cid), None
        asked: set[bytes] = set()
        # a node that just started may not have filled its routing table, and holders'
        # announcements spread for a moment after a put: the lookup is tried SOURCE_TRIES times
        for attempt in range(SOURCE_TRIES):
            providers = [p for p in await self._providers(cid) if p not in asked]
            asked.update(providers)
            for holder in providers:
                try:
                    answer = await self.call(holder, "store.manifest", {"cid": cid.digest})
                    return parse_manifest(answer["manifest"], cid=cid), sorted(asked)
                except (*PEER_FAILURES, ManifestError, KeyError, TypeError) as exc:
                    log.info("store: manifest from %s: %s", holder.hex()[:12], peer_text(str(exc)))
            if attempt + 1 < SOURCE_TRIES:
                await asyncio.sleep(SOURCE_RETRY * (attempt + 1))
        raise ContentNotFound(str(cid), len(asked))

    async def _providers(self, cid: ContentId) -> list[bytes]:
        found: list[bytes] = []
        owned = self.catalog.get(cid.digest)
        if owned is not None:
            found += [p.holder for p in self.catalog.placements(cid.digest)]
        if self.holdings.have(cid):
            found.append(self.me)
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                lookup = await self.dht.lookup(cid.digest, RecordKind.PROVIDER)
            found += list(lookup.by_holder)
        except (TimeoutError, OSError) as exc:
            log.info("store: provider lookup failed: %s", exc)
        return list(dict.fromkeys(found))

    async def _sources(
        self, cid: ContentId, manifest: Manifest, found: list[bytes] | None = None
    ) -> Sources:
        """Who holds which column: every provider found is asked which columns it holds, and
        owners among them for their placements (a holder's own announcement may still be on
        its way right after a put). Too few: the lookup is tried again, ``SOURCE_TRIES`` in
        all, before the get gives up. ``found``: providers a lookup just named (the first
        try asks them instead of looking up again)."""
        by_index: dict[int, list[bytes]] = {}
        asked: set[bytes] = set()

        def add(index: object, holder: bytes) -> None:
            if isinstance(index, int) and 0 <= index < manifest.n:
                listed = by_index.setdefault(index, [])
                if holder not in listed and len(listed) < MAX_HOLDERS_PER_INDEX:
                    listed.append(holder)

        async def have(holder: bytes) -> None:
            try:
                answer = await self.call(
                    holder, "store.have", {"cid": cid.digest}, timeout=HAVE_TIMEOUT
                )
            except PEER_FAILURES:
                return
            indices = answer.get("indices") if isinstance(answer, dict) else None
            claimed = [
                j
                for j in (indices[: manifest.n] if isinstance(indices, list) else ())
                if isinstance(j, int) and not isinstance(j, bool) and 0 <= j < manifest.n
            ]
            # an honest holder keeps one column of a content (placement never gives a holder
            # two): one that claims several is heard for the lowest only, so a hostile node
            # cannot stand first in line for every column
            if claimed:
                add(min(claimed), holder)

        async def placed(owner: bytes) -> None:
            try:
                answer = await self.call(
                    owner, "store.holders", {"cid": cid.digest}, timeout=HAVE_TIMEOUT
                )
            except PEER_FAILURES:
                return
            rows = answer.get("holders") if isinstance(answer, dict) else None
            heard = [
                row[1]
                for row in (rows[: manifest.n] if isinstance(rows, list) else ())
                if isinstance(row, list)
                and len(row) == 2
                and isinstance(row[1], bytes)
                and len(row[1]) == 32
            ]
            new = [h for h in dict.fromkeys(heard) if h not in asked]
            asked.update(new)
            await asyncio.gather(*(have(h) for h in new))

        for attempt in range(SOURCE_TRIES):
            named = found if attempt == 0 and found else await self._providers(cid)
            providers = [p for p in named if p not in asked]
            asked.update(providers)
            await asyncio.gather(*(have(p) for p in providers), *(placed(p) for p in providers))
            if len(Sources(by_index).live_indices()) >= manifest.k:
                break
            if attempt + 1 < SOURCE_TRIES:
                await asyncio.sleep(SOURCE_RETRY * (attempt + 1))
        # best first: the holders this node placed itself, then by their score here
        trusted = {p.holder for p in self.catalog.placements(cid.digest) if p.state == "ok"}
        for listed in by_index.values():
            listed.sort(key=lambda h: (h not in trusted, -self._score(h)))
        sources = Sources(by_index)
        if len(sources.live_indices()) < manifest.k:
            raise StoreError(
                f"content {cid} cannot be read: {len(sources.live_indices())} of the "
                f"{manifest.k} shares needed are held ({len(asked)} holders asked)"
            )
        return sources

    async def _rpc_holders(self, ctx: CallContext, body: Any) -> Any:
        """``store.holders``: an owner's placements of a content it keeps (index, holder)."""
        raw = body.get("cid") if isinstance(body, dict) else None
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise RpcError("bad-request", "store.holders needs a 32-byte cid")
        if self.catalog.get(raw) is None:
            raise RpcError("not-found", "this node does not keep that content")
        return {
            "holders": [[p.idx, p.holder] for p in self.catalog.placements(raw) if p.state == "ok"]
        }

    def _on_bad(self, holder: bytes, index: int) -> None:
        """A share that did not decode to its chunk. The holder may not be to blame (it cannot
        check what a publisher sent it): a transient reason (qiz.trust.scores)."""
        self.counters["bad_shares"] += 1
        if self.scores is not None:
            self.scores.record(holder, "bad_share", f"share {index}")

    def _on_bad_audit(self, holder: bytes, index: int) -> None:
        """A bad share of content this node published and sent itself: the holder's doing."""
        self.counters["bad_shares"] += 1
        if self.scores is not None:
            self.scores.record(holder, "corrupt_share", f"share {index} of our own content")
        self.events.emit(EventKind.STORE_BAD_SHARE, holder=str(NodeId(holder)), index=index)

    async def _reader(
        self, cid: ContentId, manifest: Manifest, found: list[bytes] | None = None
    ) -> ChunkReader:
        sources = await self._sources(cid, manifest, found)
        holders = [h for j in sources.live_indices() for h in sources.by_index[j]]
        table = await read_table(manifest, list(dict.fromkeys(holders)), self.call)
        return ChunkReader(manifest, table, sources, self.call, on_bad=self._on_bad)

    def _opened(self, manifest: Manifest) -> tuple[bytes | None, tuple[tree.TreeEntry, ...]]:
        """The content key (None when public) and the file tree."""
        if not manifest.sealed:
            assert manifest.tree is not None
            return None, manifest.tree
        key = sealing.unwrap_key(manifest, self.identity)
        return key, sealing.open_manifest_tree(manifest, key)

    async def _plain_chunks(
        self, cid: ContentId, manifest: Manifest, key: bytes | None, reader: ChunkReader
    ) -> AsyncIterator[bytes]:
        async for i, stored in reader.chunks():
            yield sealing.open_chunk(key, i, stored) if key is not None else stored

    # ------------------------------------------------------------------ get

    async def get(
        self, cid: ContentId, target: Path, *, force: bool = False, transfer: str | None = None
    ) -> GetResult:
        """Fetch ``cid`` into ``target`` (a file or a directory, as the content is); nothing
        appears at ``target`` unless every byte checked out."""
        started = time.perf_counter()
        manifest, found = await self._find_manifest(cid)
        key, entries = self._opened(manifest)
        parent = Path(target).absolute().parent
        if parent.is_dir():  # what a get killed earlier left there (its process is gone)
            await asyncio.to_thread(tree.remove_stale_temps, parent)
        unpacker = tree.Unpacker(Path(target), manifest.kind, entries, force=force)
        progress = _Progress(self.events, transfer, "get", manifest.size)
        done = 0
        writer = BackgroundWriter(unpacker.write_many, max_pending=WRITE_PENDING)
        try:  # from here on, whatever happens, the temporary goes (and its descriptor)
            reader = await self._reader(cid, manifest, found)
            async for chunk in self._plain_chunks(cid, manifest, key, reader):
                await writer.write(chunk)
                done += len(chunk)
                progress(done)
            await writer.drain()
            # finish renames into place (with --force, the old target aside first): once it
            # started it runs to its end, whatever cancels the get meanwhile
            finishing = asyncio.ensure_future(asyncio.to_thread(unpacker.finish))
            try:
                await asyncio.shield(finishing)
            except asyncio.CancelledError:
                await asyncio.wait({finishing})
                raise
        except BaseException:
            try:  # the batch being written ends before its descriptors close
                await writer.settle()
            finally:
                writer.close()  # blocks only if settling itself was cancelled
                unpacker.abort()
            raise
        finally:
            writer.close()
        progress(done, final=True)
        self.counters["gets"] += 1
        self.counters["bytes_got"] += manifest.size
        self.events.emit(EventKind.STORE_GOT, cid=str(cid), size=manifest.size)
        return GetResult(
            cid,
            manifest.kind,
            str(target),
            manifest.size,
            round(time.perf_counter() - started, 3),
            reader.sources.asked(),
            reader.bad_shares,
        )

    async def fetch_files(self, cid: ContentId, *, max_size: int) -> dict[str, bytes]:
        """A content's files in memory (checked), refused over ``max_size`` stream bytes
        before anything is read."""
        manifest, found = await self._find_manifest(cid)
        if manifest.size > max_size:
            raise StoreError(
                f"content {cid} is {manifest.size} bytes, over the {max_size}-byte limit here"
            )
        key, entries = self._opened(manifest)
        reader = await self._reader(cid, manifest, found)
        stream = bytearray()
        async for chunk in self._plain_chunks(cid, manifest, key, reader):
            stream += chunk
        files, at = {}, 0
        for entry in entries:
            if entry.type == tree.FILE:
                files[entry.path] = bytes(stream[at : at + entry.size])
                at += entry.size
        return files

    async def fetch_bytes(self, cid: ContentId, *, max_size: int) -> bytes:
        """A ``file`` content's bytes (checked), refused over ``max_size``."""
        manifest = await self.manifest(cid)
        if manifest.kind != "file":
            raise StoreError(f"content {cid} is a directory, not a file")
        files = await self.fetch_files(cid, max_size=max_size)
        return next(iter(files.values()))

    # ------------------------------------------------------------------ owning

    def listing(self) -> list[dict[str, Any]]:
        return [self._row(owned) for owned in self.catalog.all()]

    def _row(self, owned: Owned) -> dict[str, Any]:
        manifest = parse_manifest(owned.manifest)
        return {
            "cid": str(manifest.cid),
            "kind": manifest.kind,
            "name": owned.name,
            "size": manifest.size,
            "k": manifest.k,
            "n": manifest.n,
            "pinned": owned.pinned,
            "published": owned.published,
            "created": manifest.created,
            "sealed": manifest.sealed,
            "health": owned.health,
            "live": owned.live,
        }

    async def status(self, cid: ContentId) -> dict[str, Any]:
        """Each share's holder and health, checked now (nothing is repaired)."""
        owned = self.catalog.get(cid.digest)
        if owned is None:
            manifest = await self.manifest(cid)
            sources = await self._sources(cid, manifest)
            shares = [
                {"index": j, "holder": str(NodeId(h)), "state": "ok", "expires": None}
                for j in sorted(sources.by_index)
                for h in sources.by_index[j]
            ]
            live = len(sources.live_indices())
            pinned = False
        else:
            manifest = parse_manifest(owned.manifest)
            await self.check(cid, repair=False)
            shares = [
                {
                    "index": p.idx,
                    "holder": str(NodeId(p.holder)),
                    "state": p.state,
                    "expires": p.expires,
                }
                for p in self.catalog.placements(cid.digest)
            ]
            live = sum(1 for s in shares if s["state"] == "ok")
            pinned = owned.pinned
        return {
            "cid": str(cid),
            "kind": manifest.kind,
            "size": manifest.size,
            "chunks": manifest.chunks,
            "k": manifest.k,
            "n": manifest.n,
            "sealed_to": [str(NodeId(r[0])) for r in manifest.recipients or ()],
            "pinned": pinned,
            "shares": shares,
            "live": live,
            "health": _health(live, manifest),
        }

    async def pin(self, cid: ContentId) -> dict[str, Any]:
        """Become an owner of ``cid``: take a lease of our own on each column's holder, and
        renew and repair it from now on."""
        manifest = await self.manifest(cid)
        sources = await self._sources(cid, manifest)
        lease = int(min(self.config.lease_seconds, MAX_LEASE))
        holders = []
        for j in sources.live_indices():
            holder = sources.holder(j)
            assert holder is not None
            try:
                body = {"manifest": manifest.raw, "index": j, "lease": lease}
                answer = await self.call(holder, "store.offer", body)
            except PEER_FAILURES:
                continue
            if isinstance(answer, dict) and answer.get("have") is True:
                holders.append((j, holder, int(self.clock()) + lease))
        name = manifest.name or str(cid)
        self.catalog.add(
            cid.digest,
            manifest.raw,
            name,
            pinned=True,
            published=False,
            now=self.clock(),
            holders=holders,
        )
        self.catalog.set_pinned(cid.digest, True)
        self._announce_owner(cid)
        return {"cid": str(cid), "pinned": True, "live": len(holders)}

    async def unpin(self, cid: ContentId) -> dict[str, Any]:
        """Stop keeping ``cid`` alive: its leases lapse at their expiry."""
        if self.catalog.get(cid.digest) is None:
            raise NotOwned(f"content {cid} is not pinned here")
        self.catalog.set_pinned(cid.digest, False)
        return {"cid": str(cid), "pinned": False}

    async def rm(self, cid: ContentId) -> dict[str, Any]:
        """Release this node's leases on ``cid`` now and forget it."""
        if self.catalog.get(cid.digest) is None:
            raise NotOwned(f"content {cid} is not in this node's store")
        released = 0
        for placed in self.catalog.placements(cid.digest):
            try:
                await self.call(
                    placed.holder, "store.release", {"cid": cid.digest, "index": placed.idx}
                )
                released += 1
            except PEER_FAILURES:
                pass
        self.catalog.forget(cid.digest)
        return {"cid": str(cid), "removed": True, "released": released}

    async def gc(self) -> dict[str, Any]:
        return dict(self.holder.collect())

    def stats(self) -> dict[str, Any]:
        usage = self.holdings.usage()
        return {
            **usage,
            **self.counters,
            "holder": dict(self.holder.counters),
            "owned": len(self.catalog.all()),
        }

    # ------------------------------------------------------------------ upkeep and repair

    async def upkeep(self) -> None:
        """The periodic pass over every pinned content: renew its leases; audit and repair it
        when ``repair_every`` has passed since its last check."""
        for owned in self.catalog.all():
            if not owned.pinned:
                continue
            due = self.clock() - owned.checked >= self.config.repair_every
            try:
                await self.check(ContentId(owned.cid), repair=due, audit=due)
            except Exception as exc:  # one content's trouble never stops the others' upkeep
                log.info("store: upkeep of %s: %s", ContentId(owned.cid).short(), exc)

    async def check(self, cid: ContentId, *, repair: bool, audit: bool = True) -> str:
        """Renew each holder's lease (which tells who still holds what), audit one random
        batch of chunks against every live column, and, with ``repair``, rebuild the columns
        found missing or bad on new holders. Returns the health. A column found bad stays
        bad (whatever its holder says at the next renewal) until it is rebuilt elsewhere."""
        owned = self.catalog.get(cid.digest)
        if owned is None:
            raise NotOwned(f"content {cid} is not in this node's store")
        manifest = parse_manifest(owned.manifest, cid=cid)
        lease = int(min(self.config.lease_seconds, MAX_LEASE))
        placements = {p.idx: p for p in self.catalog.placements(cid.digest)}

        async def renew(idx: int) -> None:
            placed = placements[idx]
            body = {"cid": cid.digest, "index": idx, "lease": lease}
            try:
                answer = await self.call(placed.holder, "store.renew", body, timeout=HAVE_TIMEOUT)
            except RpcError as exc:
                if exc.code == "busy":  # rate-limited: the lease is there, renew next pass
                    return
                state = "unreachable" if exc.code in ("timeout", "link-closed") else "missing"
                if placed.state != "bad":
                    self.catalog.place(cid.digest, idx, placed.holder, state, placed.expires)
                return
            except (Unreachable, OSError, TimeoutError):
                if placed.state != "bad":
                    self.catalog.place(
                        cid.digest, idx, placed.holder, "unreachable", placed.expires
                    )
                return
            expires = checked_expiry(answer, self.clock())
            if expires is None:  # a holder that cannot say when its lease ends is not relied on
                self.catalog.place(cid.digest, idx, placed.holder, "missing", placed.expires)
                return
            state = "bad" if placed.state == "bad" else "ok"
            self.catalog.place(cid.digest, idx, placed.holder, state, expires)
            self.counters["renewals"] += 1

        await asyncio.gather(*(renew(idx) for idx in placements))
        live = self._live(cid)
        if audit and len(live) >= manifest.k and manifest.chunks:
            await self._audit(cid, manifest, live)
            live = self._live(cid)
        missing = [j for j in range(manifest.n) if j not in live]
        if repair and missing and len(live) >= manifest.k:
            await self._rebuild(cid, manifest, live, missing)
            live = self._live(cid)
        health = _health(len(live), manifest)
        self.catalog.checked(cid.digest, self.clock(), health, audited=audit and repair)
        return health

    def _live(self, cid: ContentId) -> dict[int, bytes]:
        return {p.idx: p.holder for p in self.catalog.placements(cid.digest) if p.state == "ok"}

    async def _audit(self, cid: ContentId, manifest: Manifest, live: dict[int, bytes]) -> None:
        """Read one random batch from every live column and check each share against the
        re-encoded chunk: a holder keeping bad bytes is found even if no get touched them,
        and one that cannot serve what it renews is found missing."""
        sources = Sources({j: [h] for j, h in live.items()})
        try:
            table = await read_table(manifest, list(live.values()), self.call)
        except TransferError:
            return
        # this node published it: it sent each holder the right bytes, so a bad share is the
        # holder's doing (a reader of someone else's content cannot tell, see _on_bad)
        ours = manifest.publisher_id == self.identity.node_id
        on_bad = self._on_bad_audit if ours else self._on_bad
        reader = ChunkReader(manifest, table, sources, self.call, on_bad=on_bad)
        start = random.randrange(0, manifest.chunks, reader.per_batch)
        try:
            bad, gone = await reader.audit(start)
        except TransferError as exc:  # fewer than k shares agree: nothing can be told apart
            log.info("store: audit of %s: %s", cid.short(), exc)
            return
        for j in gone:
            self.catalog.place(cid.digest, j, live[j], "missing", 0)
        for j in bad:
            self.catalog.place(cid.digest, j, live[j], "bad", 0)

    async def _rebuild(
        self, cid: ContentId, manifest: Manifest, live: dict[int, bytes], missing: list[int]
    ) -> None:
        """Rebuild ``missing`` columns from the live ones on new holders: as many as can be
        placed now (the rest at the next pass), each recorded as soon as it committed."""
        sources = Sources({j: [h] for j, h in live.items()})
        try:
            table = await read_table(manifest, list(live.values()), self.call)
        except TransferError as exc:
            log.info("store: repair of %s: %s", cid.short(), exc)
            return
        reader = ChunkReader(manifest, table, sources, self.call, on_bad=self._on_bad)
        exclude = {p.holder for p in self.catalog.placements(cid.digest)}
        try:
            committed, _failed = await self._place_and_send(
                manifest, table, missing, _reader_chunks(reader), exclude=exclude, partial=True
            )
        except (NotEnoughHolders, TransferError) as exc:
            log.info("store: repair of %s: %s", cid.short(), exc)
            return
        for j, (holder, expires) in committed.items():
            self.catalog.place(cid.digest, j, holder, "ok", expires)
            self.counters["repairs"] += 1
            self.events.emit(
                EventKind.STORE_REPAIRED, cid=str(cid), index=j, holder=str(NodeId(holder))
            )


def _health(live: int, manifest: Manifest) -> str:
    if live >= manifest.n:
        return "ok"
    return "degraded" if live >= manifest.k else "lost"


async def _stored_chunks(
    scan: tree.Scan, chunk: int, key: bytes | None, check: chunking.ChangeCheck
) -> AsyncIterator[tuple[int, bytes]]:
    """The put's second pass, read (and checked against the first, sealed) in a worker
    thread a batch at a time: the user's files may be on a slow disk or a network file
    system, and a read must never stop the node's event loop."""
    chunks: Iterator[tuple[int, bytes]] = chunking.iter_stored_chunks(scan, chunk, key, check=check)

    def take() -> list[tuple[int, bytes]]:
        return [item for _, item in zip(range(READ_BATCH), chunks, strict=False)]

    while batch := await asyncio.to_thread(take):
        for item in batch:
            yield item


async def _reader_chunks(reader: ChunkReader) -> AsyncIterator[tuple[int, bytes]]:
    async for item in reader.chunks():
        yield item


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
