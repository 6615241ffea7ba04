"""The DHT service: Kademlia over QMP RPC (protocol ``qiz-dht/1``), feeding the sans-IO routing
table and lookups with real links, and keeping the local record store.

* Contacts enter the routing table only when their id is proven: a QMP link with them
  authenticated it (the handshake binds the id), and the address is the one they signed in
  their peer record. Ids that fail the crypto puzzle are not taken in.
* ``find_node``, ``find_value`` and ``store`` are the RPCs; every record is validated before it
  is stored and again when a lookup receives it.
* A store is admitted only within limits that keep one link or one identity from filling the
  store: the storing peer and the record's signer must solve the id puzzle, stores are
  rate-limited per peer, per source network (/24, /64) and per signer, a signer holds at
  most ``max_records_per_holder`` records (replacing one of its own always fits), and the
  store itself is bounded in rows and bytes with the least valuable records evicted first
  (:mod:`qiz.resolve.store`).
* A replay of a record already held (same or older seq) is answered ``unchanged`` or
  ``older-record`` before the signer's rate limit is charged: only a store that changes
  something spends the signer's budget, so replaying a victim's public records cannot lock
  the victim out of updating them.
* A node publishes its own peer record at start and periodically; stored records are
  republished and expired on a clock the caller injects. Republishing is paced to fit the
  receivers' per-signer limit (at most half the signer burst per upkeep round), and a record
  counts as published only once some node accepted it; otherwise the next round retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qiz import NotFound, QizError
from qiz.crypto.ids import NodeId, ServiceName
from qiz.events import EventBus, EventKind
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import VerifiedRecordCache, parse_address
from qiz.identity.puzzle import solves
from qiz.qmp.admission import address_prefix
from qiz.qmp.manager import LinkManager
from qiz.qmp.rpc import CallContext, RpcError
from qiz.qmp.transport import Link, LinkError
from qiz.ratelimit import KeyedRateLimiter
from qiz.resolve.lookup import HEDGE_BUDGET, Lookup
from qiz.resolve.records import (
    RecordError,
    RecordKind,
    ValidRecord,
    make_name_record,
    validate,
)
from qiz.resolve.routing import Contact, RoutingTable
from qiz.resolve.store import MAX_BYTES, MAX_RECORDS, PutResult, RecordStore
from qiz.tasks import TaskOwner
from qiz.trust.latency import MIN_TIMEOUT, LatencyTable
from qiz.trust.scores import ROUTE

log = logging.getLogger("qiz.dht")
LATENCY_WINDOW = 10_000  # lookup durations kept for the metrics' histogram
PROTOCOL = "dht/1"
FIND_NODE = f"{PROTOCOL}.find_node"
FIND_VALUE = f"{PROTOCOL}.find_value"
STORE = f"{PROTOCOL}.store"
# a peer whose trust score (qiz.trust.scores: job quorum outcomes) fell below this is asked
# last by lookups; one disagreement halves the initial 0.8 to 0.4
LOW_SCORE = 0.5
# below this a peer is not asked at all (qiz.trust.scores.ROUTE: lookups do not go through it)
NO_ROUTE_SCORE = ROUTE


class ResolveError(NotFound, LookupError):
    """A name or id could not be resolved; the message says what was tried."""


class DhtConfigError(QizError):
    """A ``[dht]`` setting in config.toml is not usable; the message names it."""


@dataclass
class DhtConfig:
    k: int = 20
    alpha: int = 3
    value_paths: int = 4  # S/Kademlia disjoint paths for value lookups
    node_paths: int = 1
    # the hard timeout of one DHT request (dial included); lookups stop waiting for a peer
    # much sooner, after its adaptive timeout from measured RTTs (qiz.trust.latency), and
    # this is that timeout's ceiling
    request_timeout: float = 2.0
    # requests one lookup may hedge: past the peer's expected RTT, ask the next candidate too
    hedge_budget: int = HEDGE_BUDGET
    # S/Kademlia id puzzle: contacts, peers that store with us and signers of stored records
    # must have ids with this many leading zero bits (home.DEFAULT_PUZZLE_BITS for CLI nodes)
    puzzle_bits: int = 0
    republish_interval: float = 3600.0
    refresh_interval: float = 900.0
    maintenance_interval: float = 60.0
    enforce_prefix_limits: bool = True
    cache_ttl: float = 60.0  # how long a resolved record is answered from the local cache
    lookup_deadline: float = 30.0  # a lookup returns what it has by then, whatever happens
    # one signer cannot fill a node's store: new keys beyond this are refused (updates of a
    # key it already holds always fit)
    max_records_per_holder: int = 256
    # stores one peer (the id its link proved) may make: a sustained rate and a burst. Owners
    # publish their own records (a peer record, names, providers: a handful at join and per
    # hour), so an honest peer stays far below; a flood over one link gets this rate at most.
    store_rate_per_peer: float = 5.0
    store_burst_per_peer: float = 20.0
    # stores of one signer's records, whichever peers carry them: the same bound per identity
    store_rate_per_signer: float = 2.0
    store_burst_per_signer: float = 20.0
    # stores arriving over links from one source network (/24 IPv4, /64 IPv6), whatever ids
    # the links proved: an attacker minting fresh ids (each with a fresh per-peer burst) gets
    # this rate at most, which bounds the eviction work a full store does for it
    store_rate_per_prefix: float = 20.0
    store_burst_per_prefix: float = 200.0
    store_max_records: int = MAX_RECORDS  # rows in the record store
    store_max_bytes: int = MAX_BYTES  # bytes of the record store (raw + row overhead)

    @classmethod
    def from_table(cls, table: object, *, puzzle_bits: int = 0) -> DhtConfig:
        """The ``[dht]`` table of config.toml: the limits above by name (puzzle_bits is read
        by the home's own config). Unknown keys are left for other versions."""
        if not isinstance(table, dict):
            raise DhtConfigError("config.toml: [dht] must be a table")
        config = cls(puzzle_bits=puzzle_bits)
        for name in TABLE_FIELDS:
            if name not in table:
                continue
            value = table[name]
            default = getattr(config, name)
            kind = int if isinstance(default, int) else float
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and not isinstance(value, int))
                or not 0 < value <= TABLE_MAX
            ):
                raise DhtConfigError(
                    f"config.toml: dht.{name} must be a positive {kind.__name__} "
                    f"(at most {TABLE_MAX})"
                )
            setattr(config, name, kind(value))
        return config


# the [dht] settings config.toml may set, and the largest value any of them takes
TABLE_FIELDS = (
    "max_records_per_holder",
    "store_rate_per_peer",
    "store_burst_per_peer",
    "store_rate_per_signer",
    "store_burst_per_signer",
    "store_rate_per_prefix",
    "store_burst_per_prefix",
    "store_max_records",
    "store_max_bytes",
    "republish_interval",
    "refresh_interval",
    "maintenance_interval",
)
TABLE_MAX = 1 << 40


class Dht:
    def __init__(
        self,
        identity: NodeIdentity,
        links: LinkManager,
        store: RecordStore,
        record_provider: Callable[[], PeerRecord],
        *,
        config: DhtConfig | None = None,
        clock: Callable[[], float] = time.time,
        events: EventBus | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        scores: Callable[[bytes], float] | None = None,
        report: Callable[[bytes, str, str], None] | None = None,
    ) -> None:
        self.identity = identity
        self.events = events or EventBus(clock)
        self.links = links
        self.store = store
        self.record_provider = record_provider
        self.config = config or DhtConfig()
        self.clock = clock
        self.table = RoutingTable(
            identity.node_id.digest,
            k=self.config.k,
            enforce_prefix_limits=self.config.enforce_prefix_limits,
        )
        self.records = VerifiedRecordCache()
        # RTTs measured by lookups (a monotonic clock, not `clock`, which tests may freeze):
        # adaptive timeouts, hedging, and which peers went silent lately
        self.monotonic = monotonic
        ceiling = self.config.request_timeout
        self.latency = LatencyTable(floor=min(MIN_TIMEOUT, ceiling), ceiling=ceiling)
        self.scores = scores  # trust scores of peers, if the node keeps them
        # told of a peer's misbehaviour (peer, reason of qiz.trust.scores.REASONS, detail)
        self.report = report
        self.hedged_requests = 0  # over all lookups
        self.lookup_timeouts = 0  # requests unanswered past their adaptive timeout
        self.counters = {"lookups": 0, "invalid_records": 0, "refused_stores": 0}
        self.rate_limited_stores = 0  # of refused_stores: refused by a rate limit
        self.store.configure(
            max_records=self.config.store_max_records,
            max_bytes=self.config.store_max_bytes,
            home=identity.node_id.digest,
            keep=self._kept_holders,
        )
        self._peer_stores = KeyedRateLimiter(
            self.config.store_rate_per_peer, self.config.store_burst_per_peer
        )
        self._signer_stores = KeyedRateLimiter(
            self.config.store_rate_per_signer, self.config.store_burst_per_signer
        )
        self._prefix_stores = KeyedRateLimiter(
            self.config.store_rate_per_prefix, self.config.store_burst_per_prefix
        )
        # the most recent lookups' durations (seconds): metrics and the dashboard read them
        self.lookup_latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._resolved: dict[tuple[RecordKind, bytes], tuple[float, ValidRecord]] = {}
        self._tasks = TaskOwner("dht", log)
        self._pinging: set[bytes] = set()
        self._maintenance: asyncio.Task | None = None

    def _kept_holders(self) -> set[bytes]:
        """Holders whose records the store never evicts: us, and the peers we pinned."""
        return {self.identity.node_id.digest, *(p.digest for p in self.links.pinned_ids)}

    @property
    def maintaining(self) -> bool:
        """True while the upkeep loop (expiry, republishing, refresh) runs."""
        return self._maintenance is not None and not self._maintenance.done()

    @property
    def _on_loopback(self) -> bool:
        """Contacts at loopback addresses are only worth dialling if we live there too."""
        addresses = self.record_provider().addresses
        return not addresses or any(_is_loopback(parse_address(a)[0]) for a in addresses)

    def handlers(self) -> dict[str, Any]:
        return {FIND_NODE: self._find_node, FIND_VALUE: self._find_value, STORE: self._store}

    # ------------------------------------------------------------------ the table

    def on_link(self, link: Link) -> None:
        """A link authenticated ``link.peer``: its id is proven; take it in at the address it
        signed (a client with no listening address is not a contact)."""
        record = link.peer
        if record is None or not record.addresses:
            return
        if not solves(record.node_id.digest, self.config.puzzle_bits):
            return
        address = _address_seen_at(record.addresses, link.remote_address)
        if address is None:
            return  # it claims to listen on a host it does not connect from: not a contact
        result = self.table.add(record.node_id.digest, address, self.clock())
        if result.ping is not None and result.ping.node_id not in self._pinging:
            self._pinging.add(result.ping.node_id)
            if not self._tasks.closed:
                self._tasks.spawn(self._ping_oldest(result.ping), "ping-oldest")
        try:
            self.store.put(
                validate(
                    RecordKind.PEER, record.raw, key=None, now=self.clock(), cache=self.records
                ),
                self.clock(),
            )
        except (RecordError, sqlite3.Error) as exc:  # one bad record never breaks a link
            self.counters["invalid_records"] += 1
            log.info("peer record of %s not stored: %s", record.node_id.short(), exc)

    async def _ping_oldest(self, contact: Contact) -> None:
        try:
            rpc = await self.links.connect(
                contact.address, NodeId(contact.node_id), timeout=self.config.request_timeout
            )
            await rpc.call("qmp.ping", b"", timeout=self.config.request_timeout)
            self.table.add(contact.node_id, contact.address, self.clock())
        except (LinkError, RpcError, OSError, TimeoutError):
            self.table.remove(contact.node_id)  # the ping failed: a waiting newcomer takes over
        finally:
            self._pinging.discard(contact.node_id)

    # ------------------------------------------------------------------ RPC handlers

    def _contacts_out(self, target: bytes, exclude: bytes) -> list[list]:
        return [
            [c.node_id, c.address]
            for c in self.table.closest(target, self.config.k, exclude=exclude)
        ]

    # FIND_NODE and FIND_VALUE are answered from memory: plain handlers, run inline on
    # receipt without a task of their own (qiz.qmp.rpc).
    def _find_node(self, ctx: CallContext, body: Any) -> Any:
        target = _key(body, "target")
        return {"contacts": self._contacts_out(target, ctx.peer_id.digest)}

    def _find_value(self, ctx: CallContext, body: Any) -> Any:
        key = _key(body, "key")
        kind = _kind(body)
        records = [r.raw for r in self.store.get(kind, key, self.clock(), limit=8)]
        return {"records": records, "contacts": self._contacts_out(key, ctx.peer_id.digest)}

    async def _store(self, ctx: CallContext, body: Any) -> Any:
        """Admit a record, cheapest checks first: the peer's and its network's rates before any
        signature is checked; a replay of what is held answered before the signer's rate is
        charged (only a change spends it); the signer's puzzle and rate before anything is
        written."""
        kind = _kind(body)
        raw = body.get("raw") if isinstance(body, dict) else None
        if not isinstance(raw, bytes):
            raise RpcError("bad-request", "store needs a record")
        now = self.clock()
        bits = self.config.puzzle_bits
        if not solves(ctx.peer_id.digest, bits):
            raise self._refuse(
                "bad-peer",
                f"stores are taken only from ids that solve the "
                f"{bits}-bit id puzzle (dht.puzzle_bits)",
            )
        if not self._peer_stores.allow(ctx.peer_id.digest, now):
            self.rate_limited_stores += 1
            raise self._refuse(
                "rate-limited",
                f"over {self.config.store_rate_per_peer:g} stores/s from one peer "
                f"(burst {self.config.store_burst_per_peer:g}; dht.store_rate_per_peer)",
            )
        if not self._prefix_stores.allow(address_prefix(ctx.link.remote_address), now):
            self.rate_limited_stores += 1
            raise self._refuse(
                "rate-limited",
                f"over {self.config.store_rate_per_prefix:g} stores/s from one network "
                f"(burst {self.config.store_burst_per_prefix:g}; dht.store_rate_per_prefix)",
            )
        try:
            record = validate(kind, raw, key=None, now=now, cache=self.records)
        except RecordError as exc:
            text = str(exc)
            reason = "stale_record" if "expired" in text else "invalid_record"
            self._tell(ctx.peer_id.digest, reason, f"stored: {text}")
            raise self._refuse("bad-record", text) from None
        if not solves(record.holder, bits):
            raise self._refuse(
                "bad-record",
                f"the record's signer does not solve the {bits}-bit id puzzle (dht.puzzle_bits)",
            )
        standing = self.store.standing(record)
        if standing is PutResult.UNCHANGED:
            return {"result": standing.value}
        if standing is PutResult.OLDER:
            raise self._refuse("older-record", "a record with a higher sequence number is held")
        if not self._signer_stores.allow(record.holder, now):
            self.rate_limited_stores += 1
            raise self._refuse(
                "rate-limited",
                f"over {self.config.store_rate_per_signer:g} stores/s of one signer's records "
                f"(burst {self.config.store_burst_per_signer:g}; dht.store_rate_per_signer)",
            )
        quota = self.config.max_records_per_holder
        if not self.store.holds(kind, record.key, record.holder) and (
            self.store.count_holder(record.holder) >= quota
        ):
            raise self._refuse(
                "store-full",
                f"this signer already has its quota of {quota} records here "
                "(dht.max_records_per_holder; updates of its records still fit)",
            )
        result = self.store.put(record, now)
        if result is PutResult.OLDER:
            raise self._refuse("older-record", "a record with a higher sequence number is held")
        if result is PutResult.FULL:
            raise self._refuse(
                "store-full",
                f"this node's record store is full ({self.config.store_max_bytes} bytes, "
                f"{self.config.store_max_records} records; dht.store_max_bytes) of records "
                "worth keeping more than this one",
            )
        return {"result": result.value}

    def _refuse(self, code: str, message: str) -> RpcError:
        self.counters["refused_stores"] += 1
        return RpcError(code, message)

    # ------------------------------------------------------------------ lookups

    def _avoid(self, peer: bytes) -> bool:
        """Peers a lookup asks last: silent lately (timed out or failed), much slower than
        the rest, or a low trust score."""
        if self.latency.ask_last(peer, self.monotonic()):
            return True
        return self.scores is not None and self.scores(peer) < LOW_SCORE

    def _tell(self, peer: bytes, reason: str, detail: str) -> None:
        if self.report is not None:
            self.report(peer, reason, detail)

    def _bad_record(self, peer: bytes, exc: RecordError) -> None:
        """A record that did not validate, from ``peer``: expired is stale, the rest forged
        or malformed."""
        self.counters["invalid_records"] += 1
        text = str(exc)
        self._tell(peer, "stale_record" if "expired" in text else "invalid_record", text)

    async def _query(self, contact: Contact, method: str, body: dict) -> dict:
        timeout = self.config.request_timeout
        rpc = await self.links.connect(contact.address, NodeId(contact.node_id), timeout=timeout)
        reply = await rpc.call(method, body, timeout=timeout)
        if not isinstance(reply, dict):
            raise RpcError("bad-reply", "not a map")
        return reply

    def _parse_contacts(self, reply: dict) -> list[Contact]:
        """Contacts from a reply: hints to dial (expecting the id), never table entries."""
        out = []
        on_loopback = self._on_loopback
        items = reply.get("contacts", [])
        if not isinstance(items, list):
            raise RpcError("bad-reply", "contacts must be a list")
        for item in items[: self.config.k]:
            if not (isinstance(item, list) and len(item) == 2):
                continue
            node_id, address = item
            if not isinstance(node_id, bytes) or len(node_id) != 32 or not isinstance(address, str):
                continue
            try:
                host, _ = parse_address(address)
            except ValueError:
                continue
            if _is_loopback(host) and not on_loopback:
                continue  # nobody off this host can be reached at our loopback
            if solves(node_id, self.config.puzzle_bits):
                out.append(Contact(node_id, address))
        return out

    async def _ask(
        self, contact: Contact, target: bytes, kind: RecordKind | None, lookup: Lookup
    ) -> None:
        """One lookup request: feed the answer (or the failure) to the lookup."""
        try:
            if self.scores is not None and self.scores(contact.node_id) < NO_ROUTE_SCORE:
                raise RpcError("refused", "its trust score is below the routing threshold")
            if kind is not None:
                reply = await self._query(contact, FIND_VALUE, {"key": target, "kind": kind.value})
            else:
                reply = await self._query(contact, FIND_NODE, {"target": target})
            raws = reply.get("records", []) if kind is not None else []
            if not isinstance(raws, list):
                raise RpcError("bad-reply", "records must be a list")
            records = []
            for raw in raws[:8]:
                try:
                    assert kind is not None
                    records.append(
                        validate(kind, raw, key=target, now=self.clock(), cache=self.records)
                    )
                except RecordError as exc:
                    self._bad_record(contact.node_id, exc)
            lookup.on_response(
                contact.node_id, self._parse_contacts(reply), records, self.monotonic()
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any bad answer is a failed request, never a stall
            log.debug("lookup: %s failed: %s", contact.address, exc)
            busy = isinstance(exc, RpcError) and exc.code == "busy"
            if isinstance(exc, TimeoutError):
                self._tell(contact.node_id, "rpc_timeout", "a lookup request")
            elif isinstance(exc, RpcError) and exc.code == "bad-reply":
                self._tell(contact.node_id, "rpc_error", str(exc))
            known = self.table.get(contact.node_id)
            if not busy and known is not None and known.address == contact.address:
                self.table.failed(contact.node_id)  # only for the address we hold
            lookup.on_failure(contact.node_id, self.monotonic())

    async def lookup(
        self, target: bytes, kind: RecordKind | None = None, *, paths: int | None = None
    ) -> Lookup:
        """Run an iterative lookup to completion and return it (closest nodes, best record)."""
        started = time.perf_counter()
        self.counters["lookups"] += 1
        want_value = kind is not None
        lookup = Lookup(
            target,
            self.table.closest(target, self.config.k),
            self_id=self.identity.node_id.digest,
            k=self.config.k,
            alpha=self.config.alpha,
            paths=paths or (self.config.value_paths if want_value else self.config.node_paths),
            want_value=want_value,
            rtt=self.latency,
            hedge_budget=self.config.hedge_budget,
            avoid=self._avoid,
        )
        if want_value:  # what this node holds itself counts as found
            for local in self.store.get(kind, target, self.clock(), limit=8):  # type: ignore[arg-type]
                lookup.consider(local)
        wake = asyncio.Event()
        tasks: set[asyncio.Task] = set()

        async def ask(contact: Contact) -> None:
            try:
                await self._ask(contact, target, kind, lookup)
            finally:
                wake.set()

        deadline = time.monotonic() + self.config.lookup_deadline
        while not lookup.done:
            # requests past their peer's expected RTT are hedged, past its adaptive timeout
            # they stop holding the lookup: both happen inside next_requests
            for contact in lookup.next_requests(self.monotonic()):
                task = asyncio.ensure_future(ask(contact))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if lookup.done:
                break
            if all(task.done() for task in tasks):
                break  # nothing in flight and nothing to ask (done callbacks may still run)
            wake.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                log.info("lookup gave up after %.0f s", self.config.lookup_deadline)
                break
            due = lookup.next_deadline()
            if due is not None:  # wake for the next hedge or timeout, if nothing comes first
                left = min(left, max(0.0, due - self.monotonic()) + 0.001)
            with contextlib.suppress(TimeoutError):  # not wait_for: it can lose a cancellation
                async with asyncio.timeout(left):
                    await wake.wait()
        for task in tasks:
            task.cancel()
        if tasks:  # the cancelled requests end here, not behind the caller's back
            await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - started
        self.lookup_latencies.append(elapsed)
        self.hedged_requests += lookup.hedges
        self.lookup_timeouts += lookup.timeouts
        self.events.emit(
            EventKind.LOOKUP_DONE,
            target=target.hex(),
            record_kind=kind.value if kind is not None else None,
            found=lookup.best is not None if want_value else None,
            ms=round(elapsed * 1000, 3),
        )
        return lookup

    # ------------------------------------------------------------------ publishing

    async def publish(self, raw: bytes, kind: RecordKind) -> int:
        """Store a record at the k nodes closest to its key; return how many accepted it.
        It counts as published (not due again for ``republish_interval``) only if some node
        accepted it: one refused everywhere (rate-limited, say) is retried by the upkeep."""
        record = validate(kind, raw, key=None, now=self.clock(), cache=self.records)
        self.store.put(record, self.clock())
        lookup = await self.lookup(record.key)
        accepted = 0

        async def put(contact: Contact) -> None:
            nonlocal accepted
            try:
                await self._query(contact, STORE, {"kind": kind.value, "raw": raw})
                accepted += 1
            except (LinkError, RpcError, OSError, TimeoutError):
                pass

        await asyncio.gather(*(put(c) for c in lookup.closest(self.config.k)))
        if accepted:
            self.store.mark_published(record, self.clock())
        self.events.emit(
            EventKind.RECORD_PUBLISHED,
            record_kind=kind.value,
            key=record.key.hex(),
            stored_at=accepted,
        )
        return accepted

    async def publish_self(self) -> int:
        return await self.publish(self.record_provider().raw, RecordKind.PEER)

    async def publish_name(self, label: str, value: str, *, ttl: int) -> tuple[ServiceName, int]:
        name = ServiceName.of(self.identity.node_id, label)
        held = self.store.newest(RecordKind.NAME, name.digest, self.identity.node_id.digest, 0)
        seq = max(int(self.clock() * 1000), (held.seq + 1) if held else 0)
        raw = make_name_record(self.identity, label, value, seq=seq, now=self.clock(), ttl=ttl)
        return name, await self.publish(raw, RecordKind.NAME)

    # ------------------------------------------------------------------ resolving

    def _cached(self, kind: RecordKind, key: bytes) -> ValidRecord | None:
        entry = self._resolved.get((kind, key))
        if entry is None:
            return None
        until, record = entry
        if until <= self.clock() or record.expires <= self.clock():
            del self._resolved[(kind, key)]
            return None
        return record

    def _remember(self, record: ValidRecord) -> None:
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[(record.kind, record.key)] = (self.clock() + self.config.cache_ttl, record)

    async def resolve_peer(self, node_id: NodeId, *, use_cache: bool = True) -> PeerRecord:
        """The freshest verified peer record of ``node_id`` the network holds. Answers from the
        local cache (``cache_ttl``) when it can; ``use_cache=False`` always asks the DHT."""
        if node_id == self.identity.node_id:
            return self.record_provider()
        cached = self._cached(RecordKind.PEER, node_id.digest) if use_cache else None
        if cached is not None:
            return PeerRecord.verify(cached.raw, now=self.clock(), expected_id=node_id)
        linked = self.links.peers.get(node_id)
        lookup = await self.lookup(node_id.digest, RecordKind.PEER)
        best = lookup.best
        if best is None and linked is not None and linked.link.peer is not None:
            return linked.link.peer
        if best is None:
            raise ResolveError(f"no peer record for {node_id} was found")
        self._remember(best)
        return PeerRecord.verify(best.raw, now=self.clock(), expected_id=node_id)

    async def resolve_name(
        self, owner: NodeId, label: str, *, use_cache: bool = True
    ) -> ValidRecord:
        name = ServiceName.of(owner, label)
        cached = self._cached(RecordKind.NAME, name.digest) if use_cache else None
        if cached is None:
            lookup = await self.lookup(name.digest, RecordKind.NAME)
            if lookup.best is None:
                raise ResolveError(f"no record for {owner}/{label} was found")
            cached = lookup.best
            self._remember(cached)
        return validate(RecordKind.NAME, cached.raw, key=name.digest, now=self.clock())

    # ------------------------------------------------------------------ upkeep

    async def bootstrap(self) -> None:
        """Fill the table: look up our own id through whatever links we have."""
        await self.lookup(self.identity.node_id.digest)

    def start(self) -> None:
        """Start the upkeep loop (once: a second call while it runs does nothing)."""
        if not self.maintaining and not self._tasks.closed:
            self._maintenance = self._tasks.spawn(self._maintain(), "maintenance")

    async def stop(self) -> None:
        """Cancel upkeep and pings and wait until none of them runs any more."""
        await self._tasks.close()

    async def maintain_once(self) -> dict[str, int]:
        """One round of upkeep: expire, republish what is due, refresh stale buckets."""
        now = self.clock()
        expired = self.store.expire(now)
        republished = 0
        # Owners republish their own records (replicas live out their TTL): a node never
        # spends its upkeep on whatever others chose to store with it. Every store is charged
        # to our id as signer at the receivers, so one round publishes at most
        # republish_batch() records (the rest stay due for the next rounds) and a record
        # nobody accepted stays due and is retried first next round.
        due = self.store.due_for_republish(
            now,
            self.config.republish_interval,
            holder=self.identity.node_id.digest,
            limit=self.republish_batch(),
        )
        for record in due:
            with contextlib.suppress(RecordError):
                if record.kind is RecordKind.PEER:
                    accepted = await self.publish_self()  # a fresh record, not the old bytes
                else:
                    accepted = await self.publish(record.raw, record.kind)
                republished += accepted > 0
        for index in self.table.stale_buckets(now, self.config.refresh_interval)[:4]:
            await self.lookup(_random_key_in_bucket(self.identity.node_id.digest, index))
        return {"expired": expired, "republished": republished}

    def republish_batch(self) -> int:
        """Records one upkeep round republishes: half the per-signer burst, so that a round
        fits the receivers' bucket with room left for the owner's own publishes; between
        rounds (``maintenance_interval``, 60 s) the bucket refills at ``store_rate_per_signer``
        (2/s). With the defaults, 10 a minute: a holder's full quota (256) within 26 minutes,
        inside ``republish_interval`` (an hour)."""
        return max(1, int(self.config.store_burst_per_signer) // 2)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.config.maintenance_interval)
            try:
                await self.maintain_once()
            except Exception:  # upkeep must never stop: log and go on
                log.exception("DHT maintenance failed")


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _address_seen_at(claimed: tuple[str, ...], remote: str) -> str | None:
    """The first claimed address on the host the peer actually connects from (its port may
    differ: a dialler's source port is not its listening port). None if no claim matches."""
    remote_host = remote.rsplit(":", 1)[0].strip("[]")
    for address in claimed:
        host, _ = parse_address(address)
        if host == remote_host or (remote_host == "" and _is_loopback(host)):
            return address
    return None


def _key(body: Any, name: str) -> bytes:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, bytes) or len(value) != 32:
        raise RpcError("bad-request", f"{name} must be 32 bytes")
    return value


def _kind(body: Any) -> RecordKind:
    try:
        return RecordKind(body.get("kind"))
    except (ValueError, AttributeError):
        raise RpcError("bad-request", "unknown record kind") from None


def _random_key_in_bucket(self_key: bytes, index: int) -> bytes:
    """A random key that falls in bucket ``index`` of the table of ``self_key``."""
    me = int.from_bytes(self_key, "big")
    flip = 1 << (255 - index)
    low = int.from_bytes(os.urandom(32), "big") & (flip - 1)
    prefix = (me ^ flip) & ~(flip - 1) & ((1 << 256) - 1)
    return (prefix | low).to_bytes(32, "big")
