"""The simulated network: nodes with real routing tables and lookups, messages with latency,
jitter and loss, and adversaries.

Messages are function calls scheduled on an event queue; a request that is lost or unanswered
becomes a timeout at the requester, exactly as over QMP. Records are real signed records,
validated by the same code as on a live node (with a shared verified-record cache, so a record
is checked once, not at every hop).
"""

from __future__ import annotations

import enum
import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qiz.identity.peer_record import VerifiedRecordCache
from qiz.resolve.lookup import HEDGE_BUDGET, Lookup
from qiz.resolve.records import RecordError, RecordKind, ValidRecord, validate
from qiz.resolve.routing import Contact, RoutingTable
from qiz.trust.latency import MIN_TIMEOUT, LatencyTable


class Behaviour(enum.Enum):
    HONEST = "honest"
    DROP = "drop"  # never answers
    STALE = "stale"  # answers with an old (lower sequence) record and colluders as contacts
    FORGE = "forge"  # answers with a forged record and colluders as contacts
    ECLIPSE = "eclipse"  # answers with colluders only, never with the record


@dataclass
class SimNode:
    node_id: bytes
    address: str
    table: RoutingTable
    behaviour: Behaviour = Behaviour.HONEST
    store: dict[tuple[RecordKind, bytes], ValidRecord] = field(default_factory=dict)
    alive: bool = True
    latency: LatencyTable | None = None  # what this node measured of its peers' RTTs


@dataclass
class LookupStats:
    found: ValidRecord | None
    closest: list[Contact]
    rounds: int
    messages: int
    latency: float
    invalid_records: int
    hedges: int = 0  # requests whose slot went to another candidate before they ended
    timeouts: int = 0  # requests unanswered past their adaptive timeout
    stalls: int = 0  # ... that held their path's slot until then (not hedged)
    hard_timeouts: int = 0  # requests that ran into the RPC's own (fixed) timeout


@dataclass
class NetConfig:
    rtt: float = 0.050
    jitter: float = 0.010
    loss: float = 0.0
    timeout: float = 2.0  # as a live node's DhtConfig.request_timeout
    k: int = 20
    alpha: int = 3
    # adaptive per-peer timeouts from measured RTTs (qiz.trust.latency), as a live node; off:
    # every silent node costs the full `timeout`
    adaptive: bool = True
    hedge_budget: int = HEDGE_BUDGET  # hedged requests per lookup (0: never hedge)
    avoid_suspects: bool = True  # ask peers that timed out lately last


class SimNetwork:
    def __init__(self, config: NetConfig | None = None, *, seed: int = 1) -> None:
        self.config = config or NetConfig()
        self.random = random.Random(seed)
        self.now = 0.0
        self.nodes: dict[bytes, SimNode] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.records = VerifiedRecordCache(capacity=1 << 16)
        self.stale: dict[bytes, ValidRecord] = {}  # key -> an older valid record (for STALE)
        self.forged: dict[bytes, bytes] = {}  # key -> forged bytes (for FORGE)
        self.messages = 0
        self.epoch = time.time()
        # Whether lookups teach routing tables (evicting nodes that time out). Off by default,
        # so that runs measured one after the other on one network do not clean it for each
        # other.
        self.learn = False

    # ------------------------------------------------------------------ building

    def add_node(self, node_id: bytes, behaviour: Behaviour = Behaviour.HONEST) -> SimNode:
        address = (
            f"10.{self.random.randrange(256)}.{self.random.randrange(256)}."
            f"{self.random.randrange(1, 255)}:7450"
        )
        node = SimNode(node_id, address, RoutingTable(node_id, k=self.config.k), behaviour)
        self.nodes[node_id] = node
        return node

    def fill_tables(self) -> None:
        """Give every node the routing table a converged Kademlia network would have: for
        each bucket, up to k random nodes from that part of the key space."""
        import bisect

        ids = sorted(self.nodes)
        ints = [int.from_bytes(i, "big") for i in ids]
        for node in self.nodes.values():
            me = int.from_bytes(node.node_id, "big")
            for bit in range(256):
                # Bucket `bit`: ids sharing exactly `bit` leading bits with me.
                span = 1 << (255 - bit)
                base = (me ^ span) & ~(span - 1)
                lo = bisect.bisect_left(ints, base)
                hi = bisect.bisect_left(ints, base + span)
                count = hi - lo
                if count:
                    picks = (
                        range(lo, hi)
                        if count <= self.config.k
                        else self.random.sample(range(lo, hi), self.config.k)
                    )
                    for i in picks:
                        other = self.nodes[ids[i]]
                        node.table.add(other.node_id, other.address, 0.0)
                # Ids sharing more than `bit` bits with me: once that is only me, every
                # deeper bucket is empty.
                mine = me & ~(span - 1)
                if bisect.bisect_left(ints, mine + span) - bisect.bisect_left(ints, mine) <= 1:
                    break

    # ------------------------------------------------------------------ event loop

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, action))

    def run(self) -> None:
        while self._queue:
            self.now, _, action = heapq.heappop(self._queue)
            action()

    def _one_way(self) -> float:
        c = self.config
        return max(0.0, c.rtt / 2 + self.random.uniform(-c.jitter, c.jitter) / 2)

    # ------------------------------------------------------------------ RPC

    def _answer(
        self, node: SimNode, target: bytes, kind: RecordKind | None
    ) -> tuple[list[Contact], list[bytes]] | None:
        """What ``node`` replies to a find-node (kind None) or find-value for ``target``."""
        if not node.alive or node.behaviour is Behaviour.DROP:
            return None
        k = self.config.k
        if node.behaviour is Behaviour.HONEST:
            contacts = node.table.closest(target, k)
            record = node.store.get((kind, target)) if kind else None
            return contacts, [record.raw] if record else []
        colluders = [
            c
            for c in node.table.closest(target, 3 * k)
            if self.nodes[c.node_id].behaviour is not Behaviour.HONEST
        ][:k]
        raws: list[bytes] = []
        if kind is not None and node.behaviour is Behaviour.STALE and target in self.stale:
            raws = [self.stale[target].raw]
        elif kind is not None and node.behaviour is Behaviour.FORGE and target in self.forged:
            raws = [self.forged[target]]
        return colluders, raws

    def _avoider(self, origin: SimNode, rtt: LatencyTable) -> Callable[[bytes], bool] | None:
        """Whom ``origin``'s lookups ask last: suspects and slow peers, as a live node's
        ``Dht._avoid`` (None: nobody, when the config turns it off)."""
        if not self.config.avoid_suspects:
            return None
        return lambda peer: rtt.ask_last(peer, self.now)

    def _new_lookup(
        self, origin: SimNode, target: bytes, kind: RecordKind | None, paths: int
    ) -> Lookup:
        """A lookup as a live node makes it: with the origin's RTT estimates (kept across
        its lookups), hedging and suspects asked last, unless the config turns them off."""
        config = self.config
        rtt = None
        if config.adaptive:
            if origin.latency is None:
                ceiling = config.timeout
                origin.latency = LatencyTable(floor=min(MIN_TIMEOUT, ceiling), ceiling=ceiling)
            rtt = origin.latency
        avoid = self._avoider(origin, rtt) if rtt is not None else None
        return Lookup(
            target,
            origin.table.closest(target, config.k),
            self_id=origin.node_id,
            k=config.k,
            alpha=config.alpha,
            paths=paths,
            want_value=kind is not None,
            rtt=rtt,
            hedge_budget=config.hedge_budget,
            avoid=avoid,
        )

    def lookup(
        self,
        origin: SimNode,
        target: bytes,
        *,
        kind: RecordKind | None = None,
        paths: int = 1,
        on_done: Callable[[LookupStats], None],
    ) -> None:
        """Start a lookup from ``origin``; ``on_done`` gets the result in simulated time."""
        lookup = self._new_lookup(origin, target, kind, paths)
        started = self.now
        invalid = [0]
        hard = [0]
        finished = [False]
        wake = [-1.0]  # the time of the wake-up scheduled for the lookup's next deadline

        def pump() -> None:
            if finished[0]:
                return
            if lookup.done:
                finished[0] = True
                on_done(
                    LookupStats(
                        lookup.best,
                        lookup.closest(),
                        lookup.rounds,
                        lookup.messages,
                        self.now - started,
                        invalid[0],
                        hedges=lookup.hedges,
                        timeouts=lookup.timeouts,
                        stalls=lookup.stalls,
                        hard_timeouts=hard[0],
                    )
                )
                return
            for contact in lookup.next_requests(self.now):
                send(contact)
            deadline = lookup.next_deadline()
            if deadline is not None and not (self.now < wake[0] <= deadline):
                wake[0] = max(deadline, self.now) + 1e-9
                self.schedule(wake[0] - self.now, pump)

        def send(contact: Contact) -> None:
            self.messages += 1
            node = self.nodes.get(contact.node_id)
            answered = [False]

            def timeout() -> None:
                if not answered[0]:
                    answered[0] = True
                    hard[0] += not finished[0]
                    if self.learn:
                        origin.table.failed(contact.node_id)
                    lookup.on_failure(contact.node_id, self.now)
                    pump()

            self.schedule(self.config.timeout, timeout)
            if node is None or self.random.random() < self.config.loss:
                return
            reply = self._answer(node, target, kind)
            if reply is None or self.random.random() < self.config.loss:
                return

            def deliver() -> None:
                if answered[0]:
                    return
                answered[0] = True
                contacts, raws = reply
                records = []
                for raw in raws:
                    try:
                        assert kind is not None
                        records.append(
                            validate(kind, raw, key=target, now=self.wall(), cache=self.records)
                        )
                    except RecordError:
                        invalid[0] += 1
                fresh = [Contact(c.node_id, c.address) for c in contacts]
                lookup.on_response(contact.node_id, fresh, records, self.now)
                pump()

            self.schedule(self._one_way() * 2, deliver)

        self.schedule(0.0, pump)

    def wall(self) -> float:
        """Unix time at this point of the simulation (records carry unix expiry times)."""
        return self.epoch + self.now

    def publish(self, origin: SimNode, record: ValidRecord) -> list[SimNode]:
        """Store ``record`` at the k nodes closest to its key, found by a node lookup from
        ``origin``; return the nodes that accepted it (honest ones validate and keep it)."""
        holders: list[SimNode] = []

        def store(stats: LookupStats) -> None:
            for contact in stats.closest:
                node = self.nodes[contact.node_id]
                if node.alive and node.behaviour is Behaviour.HONEST:
                    checked = validate(
                        record.kind, record.raw, key=record.key, now=self.wall(), cache=self.records
                    )
                    current = node.store.get((record.kind, record.key))
                    if current is None or checked.supersedes(current):
                        node.store[(record.kind, record.key)] = checked
                    holders.append(node)

        self.lookup(origin, record.key, on_done=store)
        self.run()
        return holders
