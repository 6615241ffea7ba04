"""The connection manager: one link per peer, kept alive, repaired, and pruned.

* ``connect`` deduplicates: concurrent dials to one address share one attempt, and a peer
  already linked (in either direction) is reused;
* when two nodes dial each other at once, both keep the link initiated by the node with the
  smaller id and close the other after a short grace period, so both pick the same one;
* pinned peers (bootstrap addresses) are redialled with exponential backoff and jitter;
* keepalive pings measure RTT; links unused for ``idle_close`` seconds are closed unless pinned;
* inbound links are capped by the :class:`~qiz.qmp.transport.Listener`: handshakes in progress
  and established links separately, per source prefix, with slots kept for known peers (the
  ones this manager pins or has dialled, and whatever ``known_peer`` names).

Events: the manager pushes ``peer.linked`` when a peer first gets a primary link and
``peer.unlinked`` when its last link closes, exactly once per transition: a duplicate link being
resolved, or a spare taking over from a dead primary, is no transition and emits nothing.

Peers that left: when a peer's last link closes, its last row (address, direction, bytes, RTT,
when it linked and was last heard from) is kept as a departed peer with ``left_at`` and
``left_reason`` (:func:`leave_reason`), so ``qiz peers`` and the dashboard show it offline instead
of dropping it; at most :data:`MAX_DEPARTED_PEERS`, each for :data:`DEPARTED_PEER_TTL` seconds, and
forgotten when the peer links again.

Relayed links (docs/nat.md §4): :meth:`LinkManager.connect_record` tries a record's direct
addresses, then its relays through ``relay_dialer`` (set by
:class:`~qiz.qmp.relay_service.RelayService`); a link that runs over a relay circuit is adopted
like any other (peers table, events, RPC endpoint) and its row says ``"path": "relayed"`` and
which relay.

Trust (qiz.trust.scores): ``refuse_peer`` is asked about every authenticated peer before its
link is taken in, and ``report_peer`` is told of what the link layer can prove a peer did wrong,
as ``handshake_failed`` (see :func:`handshake_blame`). Proving is the point: an id is only a
claim until the handshake ends, and a charge against a claim would let anyone lower an innocent
node's score by claiming to be it.

Tasks: every task of the link layer (dials, redial loops, keepalive, delayed closes, RPC
handlers and replies) belongs to one :class:`~qiz.tasks.TaskOwner`; :meth:`LinkManager.close`
cancels and awaits them all, so when it returns no code of the link layer is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from qiz.crypto.ids import NodeId
from qiz.events import EventBus, EventKind
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import RelayAddress, parse_address
from qiz.qmp.connection import QmpConfig
from qiz.qmp.cookie import KEM_BURST_PER_PREFIX, KEM_RATE_PER_PREFIX
from qiz.qmp.errors import ErrorCode
from qiz.qmp.rpc import Handler, RpcEndpoint
from qiz.qmp.rpc_limits import RpcMeter
from qiz.qmp.transport import (
    COOKIE_THRESHOLD,
    MAX_INBOUND,
    MAX_INBOUND_PER_PREFIX,
    MAX_PENDING,
    MAX_PENDING_PER_PREFIX,
    PENDING_TIMEOUT,
    RESERVED_KNOWN,
    Link,
    LinkError,
    Listener,
    dial,
)
from qiz.tasks import TaskOwner

log = logging.getLogger("qiz.links")
# Peers this node dialled that it remembers as known (for the inbound slots kept for known
# peers); bounds that memory. The oldest is forgotten first.
MAX_DIALLED_KNOWN = 1024
# Peers whose last link closed, remembered (shown offline, with when and why they left); the
# oldest is forgotten first, and none is kept longer than DEPARTED_PEER_TTL seconds.
MAX_DEPARTED_PEERS = 256
DEPARTED_PEER_TTL = 24 * 3600.0


@dataclass
class ManagerConfig:
    keepalive_interval: float = 15.0
    idle_close: float = 300.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    duplicate_grace: float = 2.0
    # inbound limits: what each protects is said where the default is defined
    max_inbound: int = MAX_INBOUND  # established inbound links
    reserved_known: int = RESERVED_KNOWN  # of those, kept for known peers
    max_inbound_per_prefix: int = MAX_INBOUND_PER_PREFIX  # ... unknown peers from one /24, /64
    max_pending: int = MAX_PENDING  # handshakes in progress, all sources
    max_pending_per_prefix: int = MAX_PENDING_PER_PREFIX  # ... from one /24 or /64
    pending_timeout: float = PENDING_TIMEOUT  # seconds an inbound handshake may take
    kem_rate_per_prefix: float = KEM_RATE_PER_PREFIX  # INITs decapsulated per second, per prefix
    kem_burst_per_prefix: int = KEM_BURST_PER_PREFIX  # ... in one burst
    cookie_threshold: int = COOKIE_THRESHOLD  # handshakes in progress: INITs need a cookie
    qmp: QmpConfig = field(default_factory=QmpConfig)


# How a dial to a node's own signed record ended, when the far end broke the handshake: the
# codes we close with when its bytes are wrong (a RESPONSE or COOKIE that does not authenticate,
# a frame that is not QMP or too large, a version we never offered) ...
DIAL_FAULTS_FOUND = frozenset(
    {
        ErrorCode.AUTHENTICATION_FAILED,
        ErrorCode.PROTOCOL_ERROR,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
    }
)
# ... and the one it closes with itself that says it is not the node (our INIT's mac1, made
# with the record's key, is wrong for its key). BUSY, REFUSED, SHUTDOWN, a lost connection and
# timeouts are never charged: an honest node says and does those.
DIAL_FAULTS_SAID = frozenset({ErrorCode.AUTHENTICATION_FAILED})
# How we close an authenticated direct link whose peer broke the channel protocol (a frame that
# does not authenticate or parse): charged to the proven peer.
LINK_FAULTS = frozenset(
    {ErrorCode.AUTHENTICATION_FAILED, ErrorCode.PROTOCOL_ERROR, ErrorCode.FRAME_TOO_LARGE}
)


def handshake_blame(
    address: str,
    expected: PeerRecord | NodeId | None,
    closed: tuple[ErrorCode, str, bool] | None,
    error: LinkError,
) -> str | None:
    """What to charge the node of ``expected`` for a failed dial to ``address`` (a detail for
    ``handshake_failed``), or None: it is not to blame, or nothing proves it is.

    A dial is charged only when ``expected`` is the node's own signed, verified record and
    ``address`` is one of the addresses it names. Then the node itself said "I am at this
    address, with this X-Wing key", and we committed to that key (INIT is encrypted to it):
    a far end that cannot prove it holds the key, or breaks the handshake, shows the record
    wrong, which is its signer's doing (stale at worst: the charge is transient and small).
    Never charged:

    * a dial by id alone (``NodeId``) or to an address the record does not name: the address
      came from someone else (a contact list, a LAN beacon, a bootstrap line), and whoever
      answers there may present the target's public record: anyone could aim us at a
      stranger's host and make the target look bad;
    * a connection that never opened (``closed`` None, the node is down or unreachable),
      except when our own side refused the record's key before any byte went out: the
      signer published an unusable key;
    * timeouts, BUSY, REFUSED, SHUTDOWN and lost connections: an honest, loaded or
      departing node does each of them;
    * relayed dials (not made here): a relay could tamper with the bytes it carries;
    * an address that a stranger may hold on the dialler's own network (private, link-local,
      shared or unique-local ranges: a node bound to every interface publishes its LAN and
      container-bridge addresses too, and whoever holds the same address on our LAN answers
      there): only globally routable and loopback addresses are attributed to the signer.

    ``closed`` is the link's ``(code, reason, by_peer)`` when a connection was made.
    """
    if not isinstance(expected, PeerRecord) or address not in expected.addresses:
        return None
    if not _attributable(address):
        return None
    if closed is None:
        if error.code is ErrorCode.AUTHENTICATION_FAILED:
            return f"its record's key is unusable: {error}"
        return None
    code, reason, by_peer = closed
    faults = DIAL_FAULTS_SAID if by_peer else DIAL_FAULTS_FOUND
    if code not in faults:
        return None
    who = "the far end said" if by_peer else "its handshake failed"
    return f"dial to {address}, {who}: {code.name.lower()}: {reason}"


def _attributable(address: str) -> bool:
    """Whether only the address's owner can answer a dial to it from here: a global unicast
    address, or loopback (this machine's own processes)."""
    try:
        host, _ = parse_address(address)
    except ValueError:
        return False
    ip = ipaddress.ip_address(host)
    return ip.is_loopback or ip.is_global


def leave_reason(code: ErrorCode, reason: str, by_peer: bool) -> str:
    """Why a peer's last link closed, in the words ``qiz peers`` shows: ``closed by peer``,
    ``peer stopping``, ``keepalive timeout``, ``idle``, ``node stopping``, ``closed here``, or an
    error with its detail (``IO error: ...``, ``protocol error: ...``)."""
    if code == ErrorCode.IDLE_TIMEOUT:
        return "idle" if reason == "idle" and not by_peer else "keepalive timeout"
    if code == ErrorCode.SHUTDOWN:
        return "peer stopping" if by_peer else "node stopping"
    if code == ErrorCode.NORMAL_CLOSE:
        if reason.startswith("connection lost:"):
            return f"IO error: {reason.removeprefix('connection lost:').strip()}"
        return "closed by peer" if by_peer else "closed here"
    return f"{code.name.lower().replace('_', ' ')}: {reason}"


def peer_row(link: Link, relay: NodeId | None = None) -> dict[str, Any]:
    """One peer's row as ``qiz peers`` and ``GET /api/peers`` show it (docs/json/peers.schema.json),
    from its primary link: online, with no ``left_at``. ``relay``: the relay a relayed link
    runs through (``path`` is then ``relayed``)."""
    stats = link.stats()
    return {
        "node_id": stats["peer"],
        # where it listens (an inbound link's far end is a source port nobody can dial)
        "address": (stats["listens_at"] or [stats["address"]])[0],
        "remote_address": stats["address"],
        "listens_at": stats["listens_at"],
        "state": "online",
        "direction": stats["direction"],
        "path": "direct" if relay is None else "relayed",
        "relay": None if relay is None else str(relay),
        "rtt_ms": stats["rtt_ms"],
        "bytes_sent": stats["bytes_sent"],
        "bytes_received": stats["bytes_received"],
        "connected_at": stats["since"],
        "last_seen_at": link.conn.last_received,  # the last bytes from the peer
        "left_at": None,
        "left_reason": None,
    }


@dataclass
class PeerLink:
    link: Link
    rpc: RpcEndpoint
    last_used: float


class LinkManager:
    """Owns a node's links: the listener, outbound dials and their upkeep."""

    def __init__(
        self,
        identity: NodeIdentity,
        record_provider: Callable[[], PeerRecord],
        handlers: dict[str, Handler],
        *,
        config: ManagerConfig | None = None,
        clock: Callable[[], float] = time.time,
        on_peer: Callable[[Link], None] | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.identity = identity
        self.events = events if events is not None else EventBus(clock)
        self.on_peer = on_peer  # told of every authenticated link (the DHT's routing table)
        # asked about every authenticated peer before its link is taken in: a reason to refuse
        # it (banned, or its trust score below the link threshold), or None (qiz.trust.scores)
        self.refuse_peer: Callable[[bytes], str | None] | None = None
        # told of what a proven peer did wrong on the link layer: (digest, reason of
        # qiz.trust.scores.REASONS, detail); see handshake_blame and _on_close. The relay
        # service reports relay abuse through it too.
        self.report_peer: Callable[[bytes, str, str], None] | None = None
        self.rpc_meter = RpcMeter()  # per-peer rate limits on every RPC method
        self.rpc_clock: Callable[[], float] = time.monotonic  # the meter's time (tests hold it)
        self.record_provider = record_provider
        self.handlers = handlers
        self.config = config or ManagerConfig()
        self.clock = clock
        self.peers: dict[NodeId, PeerLink] = {}  # the primary link to each peer
        self.spares: dict[NodeId, list[PeerLink]] = {}  # later links to a peer (see _adopt)
        config = self.config
        self.listener = Listener(
            identity,
            record_provider,
            on_link=self._on_inbound,
            config=config.qmp,
            max_inbound=config.max_inbound,
            reserved_known=config.reserved_known,
            max_inbound_per_prefix=config.max_inbound_per_prefix,
            cookie_threshold=config.cookie_threshold,
            max_pending=config.max_pending,
            max_pending_per_prefix=config.max_pending_per_prefix,
            pending_timeout=config.pending_timeout,
            kem_rate=config.kem_rate_per_prefix,
            kem_burst=config.kem_burst_per_prefix,
            is_known=self.is_known,
            clock=clock,
        )
        # Peers the node relies on, beyond those pinned or dialled here (the node may name its
        # routing table's contacts): they may use the inbound slots kept for known peers.
        self.known_peer: Callable[[NodeId], bool] | None = None
        self._dialled: OrderedDict[NodeId, None] = OrderedDict()  # bounded: MAX_DIALLED_KNOWN
        self._dialing: dict[str, asyncio.Task[PeerLink | LinkError]] = {}
        self._dialing_records: dict[NodeId, asyncio.Task[RpcEndpoint | LinkError]] = {}
        self._pinned: set[str] = set()
        self._pinned_ids: set[NodeId] = set()
        self.tasks = TaskOwner("links", log)
        self.closing = False
        # Relayed links: the relay each runs through (see connect_record); the dialler that
        # opens circuits is set by the relay service.
        self.relayed: dict[Link, NodeId] = {}
        # Links never closed as idle, and why (a relay reservation rides on them, at either
        # end: it ends with its link). See keep().
        self.kept: dict[Link, set[str]] = {}
        self.relay_dialer: Callable[[RelayAddress, PeerRecord, float], Awaitable[Link]] | None = (
            None
        )
        # peers whose last link closed: their last row, oldest first (bounded, see above)
        self.departed: OrderedDict[NodeId, dict[str, Any]] = OrderedDict()
        # handshakes completed / failed by our dials; what closed links had counted (their
        # live counts are added in counters_snapshot)
        self.counters = {
            "handshakes": 0,
            "dials_failed": 0,
            "frames_dropped_closed": 0,
            "rpc_malformed_closed": 0,
            "rpc_reply_unsent_closed": 0,
            "refused_by_trust": 0,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self, listen: str) -> None:
        await self.listener.start(listen)
        self.tasks.every(self._keepalive_interval, self._keepalive, "keepalive")

    async def close(self) -> None:
        """Close every link and end every task of the link layer; when this returns, none is
        still running and every ``peer.unlinked`` event has been emitted."""
        self.closing = True
        await self.tasks.close()  # dials, redial loops, keepalive, handlers: cancelled, awaited
        for peer in list(self._all_links()):
            peer.link.close(ErrorCode.SHUTDOWN, "node shutting down")
        await self.listener.close()

    def _all_links(self) -> list[PeerLink]:
        return [*self.peers.values(), *(s for spares in self.spares.values() for s in spares)]

    # ------------------------------------------------------------------ observation

    def counters_snapshot(self) -> dict[str, int]:
        """Totals since start, for metrics; the names are stable.

        ``handshakes_ok``: links authenticated and taken in (both directions);
        ``handshakes_failed``: our dials that failed plus inbound handshakes that failed;
        ``inbound_refused``: inbound connections refused (any of the caps below);
        ``inbound_full`` / ``pending_refused`` / ``unknown_refused``: ... because every
        established slot was taken / the source prefix's handshakes in progress were at their
        cap (or all were, with none to drop) / only slots kept for known peers were left;
        ``prefix_inbound_full``: unknown peers refused once authenticated because their prefix
        held ``max_inbound_per_prefix`` established inbound links;
        ``pending_evicted``: handshakes in progress dropped to make room for a new connection;
        ``pending_timed_out``: inbound handshakes closed at the pending deadline;
        ``kem_decapsulations``: INITs the node did KEM work for (one decapsulation and two
        encapsulations each); ``kem_rate_limited``: INITs not decapsulated because their
        prefix's KEM budget was spent; ``init_replays_refused``: INITs refused because their
        KEM ciphertext was already seen; ``cookies_sent``: COOKIE replies;
        ``frames_dropped_replayed``: DATA frames dropped as replays or too old;
        ``rpc_malformed``: RPC messages from peers that did not parse;
        ``rpc_reply_unsent``: RPC refusals dropped because the peer did not read them;
        ``links``: peers with an open primary link now; ``pending``: inbound handshakes in
        progress now (gauges, not totals).
        """
        live = self._all_links()
        listener = self.listener
        cookies = listener.cookies
        return {
            **listener.counters,
            "pending": len(listener.pending),
            "kem_decapsulations": cookies.kem_operations,
            "kem_rate_limited": cookies.kem_limited,
            "init_replays_refused": cookies.replays_refused,
            "cookies_sent": cookies.cookies_sent,
            "handshakes_ok": self.counters["handshakes"],
            "handshakes_failed": self.counters["dials_failed"] + self.listener.handshakes_failed,
            "inbound_refused": self.listener.refused,
            "frames_dropped_replayed": self.counters["frames_dropped_closed"]
            + sum(p.link.frames_dropped for p in live),
            "rpc_malformed": self.counters["rpc_malformed_closed"]
            + sum(p.rpc.bad_messages for p in live),
            "rpc_reply_unsent": self.counters["rpc_reply_unsent_closed"]
            + sum(p.rpc.replies_dropped for p in live),
            "links": len(self.peers),
            "refused_by_trust": self.counters["refused_by_trust"],
            "rpc_rate_limited": self.rpc_meter.refused,
        }

    def is_known(self, peer_id: NodeId) -> bool:
        """Whether ``peer_id`` may use the inbound slots kept for known peers: a pinned peer,
        one this node dialled, or one ``known_peer`` names. Never a peer merely because it
        linked to us before (new identities are cheap)."""
        if peer_id in self._pinned_ids or peer_id in self._dialled:
            return True
        return self.known_peer is not None and self.known_peer(peer_id)

    def peer_stats(self) -> list[dict[str, Any]]:
        """One row per link (primaries and spares): peer, addresses, direction, RTT, bytes."""
        return [peer.link.stats() for peer in self._all_links()]

    def peer_rows(self) -> list[dict[str, Any]]:
        """One row per peer: the linked ones (online, from the primary link), then the ones
        that left within :data:`DEPARTED_PEER_TTL` (offline, with ``left_at`` and
        ``left_reason``), most recent first."""
        self._forget_departed()
        online = [peer_row(peer.link, self.relayed.get(peer.link)) for peer in self.peers.values()]
        return online + [dict(row) for row in reversed(self.departed.values())]

    def _depart(self, link: Link, reason: str) -> None:
        """Remember a peer whose last link just closed."""
        assert link.peer_id is not None
        row = peer_row(link, self.relayed.get(link))
        row.update(state="offline", left_at=self.clock(), left_reason=reason)
        self.departed.pop(link.peer_id, None)
        self.departed[link.peer_id] = row
        self._forget_departed()

    def _forget_departed(self) -> None:
        """Drop departed peers beyond the count or older than the TTL (oldest first)."""
        horizon = self.clock() - DEPARTED_PEER_TTL
        while self.departed and (
            len(self.departed) > MAX_DEPARTED_PEERS
            or next(iter(self.departed.values()))["left_at"] < horizon
        ):
            self.departed.popitem(last=False)

    # ------------------------------------------------------------------ links

    async def connect(
        self, address: str, expected: PeerRecord | NodeId | None = None, *, timeout: float = 10.0
    ) -> RpcEndpoint:
        """An RPC endpoint on a link to ``address``, reusing any existing link to that peer."""
        expected_id = expected.node_id if isinstance(expected, PeerRecord) else expected
        if expected_id is not None:
            existing = self.peers.get(expected_id)
            if existing is not None and existing.link.is_open:
                existing.last_used = self.clock()
                return existing.rpc
        if self.closing:
            raise LinkError(ErrorCode.SHUTDOWN, "the link manager is closed")
        pending = self._dialing.get(address)
        if pending is None:
            pending = self.tasks.spawn(self._dial(address, expected, timeout), f"dial {address}")
            self._dialing[address] = pending
            pending.add_done_callback(lambda _f: self._dialing.pop(address, None))
        try:
            outcome = await asyncio.shield(pending)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if pending.cancelled() and current is not None and not current.cancelling():
                # the dial was ended by close(), not our caller: say so as a link error
                raise LinkError(ErrorCode.SHUTDOWN, "the link manager closed") from None
            raise
        if isinstance(outcome, LinkError):
            # a fresh exception per caller: several callers may share this one dial
            raise LinkError(outcome.code, str(outcome))
        peer = outcome
        if expected_id is not None and peer.link.peer_id != expected_id:
            # Another caller's dial to this address, which found a different node there.
            raise LinkError(
                ErrorCode.UNEXPECTED_PEER, f"{address} is {peer.link.peer_id}, not {expected_id}"
            )
        peer.last_used = self.clock()
        return peer.rpc

    async def _dial(
        self, address: str, expected: PeerRecord | NodeId | None, timeout: float
    ) -> PeerLink | LinkError:
        """One dial, shared by every caller that asked for ``address`` meanwhile. A failure is
        returned, not raised: it is an outcome for the callers, not a fault of the task."""
        made: list[Link] = []  # the connection, if one was made (how it closed says who failed)
        try:
            link = await dial(
                address,
                self.identity,
                self.record_provider(),
                expected=expected,
                config=self.config.qmp,
                timeout=timeout,
                clock=self.clock,
                on_close=made.append,
            )
        except LinkError as exc:
            self.counters["dials_failed"] += 1
            closed = made[0].closed.result() if made and made[0].closed.done() else None
            blame = handshake_blame(address, expected, closed, exc)
            if blame is not None and isinstance(expected, PeerRecord):
                self.report(expected.node_id, "handshake_failed", blame)
            return exc
        self._remember_dialled(link)
        try:
            return self._adopt(link)
        except LinkError as exc:
            return exc

    def report(self, peer_id: NodeId, reason: str, detail: str) -> None:
        """Charge ``peer_id`` one event of ``reason`` (through ``report_peer``, if set)."""
        if self.report_peer is not None:
            self.report_peer(peer_id.digest, reason, detail)

    def _remember_dialled(self, link: Link) -> None:
        if link.peer_id is not None:
            self._dialled[link.peer_id] = None
            self._dialled.move_to_end(link.peer_id)
            while len(self._dialled) > MAX_DIALLED_KNOWN:
                self._dialled.popitem(last=False)

    async def connect_record(self, record: PeerRecord, *, timeout: float = 10.0) -> RpcEndpoint:
        """An RPC endpoint on a link to the node of ``record``: an existing link, else its
        direct addresses in order, else a circuit through each of its relays in order
        (docs/nat.md §4.3). Concurrent calls for one node share one attempt. Raises
        :class:`LinkError` saying what each attempt met."""
        existing = self.peers.get(record.node_id)
        if existing is not None and existing.link.is_open:
            existing.last_used = self.clock()
            return existing.rpc
        if self.closing:
            raise LinkError(ErrorCode.SHUTDOWN, "the link manager is closed")
        pending = self._dialing_records.get(record.node_id)
        if pending is None:
            pending = self.tasks.spawn(
                self._connect_record(record, timeout), f"dial {str(record.node_id)[:12]}"
            )
            self._dialing_records[record.node_id] = pending
            pending.add_done_callback(
                lambda _f, node=record.node_id: self._dialing_records.pop(node, None)
            )
        try:
            outcome = await asyncio.shield(pending)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if pending.cancelled() and current is not None and not current.cancelling():
                raise LinkError(ErrorCode.SHUTDOWN, "the link manager closed") from None
            raise
        if isinstance(outcome, LinkError):
            raise LinkError(outcome.code, str(outcome))  # a fresh one per caller
        return outcome

    async def _connect_record(self, record: PeerRecord, timeout: float) -> RpcEndpoint | LinkError:
        """One attempt, shared by the callers of connect_record; a failure is returned."""
        failures: list[str] = []
        for address in record.addresses:
            try:
                return await self.connect(address, record, timeout=timeout)
            except LinkError as exc:
                failures.append(f"{address}: {exc}")
        for relay in record.relays if self.relay_dialer is not None else ():
            assert self.relay_dialer is not None
            try:
                link = await self.relay_dialer(relay, record, timeout)
                self._remember_dialled(link)
                return self.adopt(link, relay=relay.node_id).rpc
            except LinkError as exc:
                failures.append(f"relay {str(relay.node_id)[:12]}: {exc}")
        if not failures:
            failures.append("its record names no address and no relay")
        return LinkError(
            ErrorCode.PROTOCOL_ERROR, f"cannot reach {record.node_id}: {'; '.join(failures)}"
        )

    def adopt(self, link: Link, *, relay: NodeId | None = None) -> PeerLink:
        """Take in an established link made outside this manager (a relayed one: ``relay`` is
        the relay it runs through) as if it had been dialled or accepted here."""
        if relay is None:
            return self._adopt(link)
        self.relayed[link] = relay  # before _adopt: the linked event and rows say relayed
        try:
            entry = self._adopt(link)
        except LinkError:
            self.relayed.pop(link, None)
            raise
        # after _adopt's own listener, so that a departed row still says through which relay
        link.add_close_listener(lambda closed: self.relayed.pop(closed, None))
        return entry

    def keep(self, link: Link, why: str) -> None:
        """Never close ``link`` as idle while some ``why`` holds (see :meth:`unkeep`)."""
        if not link.is_open:
            return
        if link not in self.kept:
            self.kept[link] = set()
            link.add_close_listener(lambda closed: self.kept.pop(closed, None))
        self.kept[link].add(why)

    def unkeep(self, link: Link, why: str) -> None:
        reasons = self.kept.get(link)
        if reasons is not None:
            reasons.discard(why)
            if not reasons:
                del self.kept[link]

    def rpc_for(self, link: Link) -> RpcEndpoint | None:
        """The RPC endpoint of ``link`` if it is one of this manager's open links."""
        if link.peer_id is None:
            return None
        for entry in (self.peers.get(link.peer_id), *self.spares.get(link.peer_id, ())):
            if entry is not None and entry.link is link:
                return entry.rpc
        return None

    def _on_inbound(self, link: Link) -> None:
        # Our own dial, looped back (a node listed among its own peers), or a link that closed
        # or arrived during shutdown: _adopt closed it; raising here would only reach the
        # event loop.
        with contextlib.suppress(LinkError):
            self._adopt(link)

    def _adopt(self, link: Link) -> PeerLink:
        """Take a new established link into the table and return the peer's primary link.

        Two links to one peer arise when both dial at once, or when a short-lived client (such
        as ``qiz ping`` with the node's own identity) dials a peer we are already linked to.
        Links established within ``duplicate_grace`` of each other are a simultaneous dial:
        both ends keep the one whose initiator has the smaller id and close the other. A link
        that arrives later does not displace an older working one: it is kept as a spare
        (the peer may be using it), and the older one is pinged at once so that a dead primary
        -- the peer restarted -- is replaced by the spare without waiting for the idle timeout.
        """
        peer_id = link.peer_id
        assert peer_id is not None
        self.counters["handshakes"] += 1
        if self.closing or not link.is_open:
            closed = link.conn.close_reason
            link.close(ErrorCode.SHUTDOWN, "node shutting down")
            if closed is not None and closed.by_peer:  # say why the peer closed it (REFUSED)
                raise LinkError(closed.code, f"the peer closed the link: {closed.reason}")
            raise LinkError(ErrorCode.SHUTDOWN, "the link closed before it was taken in")
        if peer_id == self.identity.node_id:
            link.close(ErrorCode.UNEXPECTED_PEER, "a node does not link to itself")
            raise LinkError(ErrorCode.UNEXPECTED_PEER, "dialled our own address")
        refusal = self.refuse_peer(peer_id.digest) if self.refuse_peer is not None else None
        if refusal is not None:  # either side: our dial, or their link to us
            self.counters["refused_by_trust"] += 1
            link.close(ErrorCode.REFUSED, refusal)
            raise LinkError(ErrorCode.REFUSED, refusal)
        digest = peer_id.digest

        def meter(method: str) -> str | None:
            if self.rpc_meter.allow(digest, method, self.rpc_clock()):
                return None
            return f"over {self.rpc_meter.rate_of(method):g} {method} requests/s from one peer"

        rpc = RpcEndpoint(link, self.handlers, tasks=self.tasks, meter=meter)
        entry = PeerLink(link, rpc, self.clock())
        link.add_close_listener(lambda _link, entry=entry: self._on_close(entry))
        if self.on_peer is not None:
            self.on_peer(link)
        self._later(0, self._first_ping, link)
        current = self.peers.get(peer_id)
        if current is None:
            self.peers[peer_id] = entry
            self.departed.pop(peer_id, None)  # back: online again
            self.events.emit(
                EventKind.PEER_LINKED,
                peer=str(peer_id),
                address=link.remote_address,
                direction="out" if link.conn.is_initiator else "in",
            )
            return entry
        if not current.link.is_open:  # closing, its close listener not yet run: a takeover
            self.peers[peer_id] = entry
            return entry
        if link in self.relayed and current.link in self.relayed:
            # a second circuit from a peer already linked through a relay: no spare of those
            # (each holds a relay's circuit slot, docs/nat.md section 6)
            link.close(ErrorCode.NORMAL_CLOSE, "already linked through a relay")
            return current
        if (link in self.relayed) != (current.link in self.relayed):
            # a direct link always wins over a relayed one (a punched hole, docs/nat.md §5),
            # whichever came first: both ends apply the same rule, so both keep the same link
            keep, drop = (current, entry) if link in self.relayed else (entry, current)
            self.peers[peer_id] = keep
            self._later(
                self.config.duplicate_grace,
                drop.link.close,
                ErrorCode.NORMAL_CLOSE,
                "replaced by a direct link",
            )
            return keep
        if abs(link.since - current.link.since) <= self.config.duplicate_grace:
            keep, drop = (
                (entry, current) if self._preferred(link, current.link) else (current, entry)
            )
            self.peers[peer_id] = keep
            self._later(
                self.config.duplicate_grace, drop.link.close, ErrorCode.NORMAL_CLOSE, "duplicate"
            )
            return keep
        self.spares.setdefault(peer_id, []).append(entry)
        self._later(0, self._check_primary, peer_id)
        return current

    async def _check_primary(self, peer_id: NodeId) -> None:
        current = self.peers.get(peer_id)
        if current is None:
            return
        try:
            await current.link.ping(timeout=2.0)
        except (LinkError, TimeoutError):
            current.link.close(ErrorCode.IDLE_TIMEOUT, "no answer to ping; a newer link exists")

    async def _first_ping(self, link: Link) -> None:
        """Measure the RTT of a new link at once, so status shows it before the first keepalive."""
        with contextlib.suppress(LinkError, TimeoutError):
            await link.ping(timeout=self.config.keepalive_interval)

    def _preferred(self, new: Link, old: Link) -> bool:
        """Both ends agree: keep the link whose initiator has the smaller node id."""

        def initiator(link: Link) -> bytes:
            assert link.peer_id is not None
            return (self.identity.node_id if link.conn.is_initiator else link.peer_id).digest

        return initiator(new) < initiator(old)

    def _on_close(self, entry: PeerLink) -> None:
        """Forget a closed link; a spare link to the same peer becomes its primary. The peer
        is unlinked (one event) only when no open link to it is left."""
        link = entry.link
        code, reason, by_peer = link.closed.result()
        if not by_peer and code in LINK_FAULTS and link not in self.relayed:
            # The peer proved its id (its CONFIRM, or its RESPONSE to our INIT), then sent
            # bytes that do not authenticate or parse: its fault, or an on-path attacker's,
            # who could as well cut the link. Not over a relay: the relay may be the culprit.
            assert link.peer_id is not None
            self.report(link.peer_id, "handshake_failed", f"broke the link protocol: {reason}")
        self.counters["frames_dropped_closed"] += link.frames_dropped
        self.counters["rpc_malformed_closed"] += entry.rpc.bad_messages
        self.counters["rpc_reply_unsent_closed"] += entry.rpc.replies_dropped
        peer_id = link.peer_id
        assert peer_id is not None  # only authenticated links are taken in
        spares = [s for s in self.spares.get(peer_id, []) if s.link is not link and s.link.is_open]
        current = self.peers.get(peer_id)
        if current is not None and current.link is link:
            del self.peers[peer_id]
            if spares:
                self.peers[peer_id] = spares.pop(0)
            else:
                self._depart(link, leave_reason(code, reason, by_peer))
                self.events.emit(EventKind.PEER_UNLINKED, peer=str(peer_id), reason=reason)
        if spares:
            self.spares[peer_id] = spares
        else:
            self.spares.pop(peer_id, None)

    def _later(self, delay: float, fn: Callable, *args: object) -> None:
        """Run ``fn(*args)`` (plain or async) after ``delay`` seconds, owned by the manager."""
        if self.tasks.closed:
            return

        async def run() -> None:
            await asyncio.sleep(delay)
            result = fn(*args)
            if asyncio.iscoroutine(result):
                await result

        self.tasks.spawn(run(), getattr(fn, "__name__", "later"))

    # ------------------------------------------------------------------ upkeep

    def pin(self, address: str, expected: NodeId | None = None) -> None:
        """Keep a link to ``address`` up for as long as the manager runs."""
        if address not in self._pinned and not self.closing:
            self._pinned.add(address)
            self.tasks.spawn(self._keep_linked(address, expected), f"pinned {address}")

    @property
    def pinned_ids(self) -> frozenset[NodeId]:
        """The ids of the pinned peers we have linked to (the DHT never evicts their records)."""
        return frozenset(self._pinned_ids)

    async def _keep_linked(self, address: str, expected: NodeId | None) -> None:
        delay = self.config.backoff_initial
        pinned_id: NodeId | None = expected
        while not self.closing:
            try:
                endpoint = await self.connect(address, pinned_id)
                pinned_id = endpoint.link.peer_id
                if pinned_id is not None:
                    self._pinned_ids.add(pinned_id)
                delay = self.config.backoff_initial
                await endpoint.link.wait_closed()
                if self.closing:
                    return
                log.info("link to %s lost; redialling", address)
            except LinkError as exc:
                log.info("cannot link to %s: %s; retry in %.1fs", address, exc, delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.config.backoff_max)

    def _keepalive_interval(self) -> float:
        return self.config.keepalive_interval

    async def _keepalive(self) -> None:
        """Close links unused for ``idle_close`` (not a pinned peer's primary); ping the rest,
        which both measures RTT and keeps the peer's idle timeout from firing."""
        now = self.clock()
        alive = []
        for peer in self._all_links():
            peer_id = peer.link.peer_id
            is_primary = self.peers.get(peer_id) is peer  # type: ignore[arg-type]
            idle = now - max(peer.last_used, peer.rpc.last_activity)
            kept = peer.link in self.kept or (is_primary and peer_id in self._pinned_ids)
            if idle > self.config.idle_close and not kept:
                peer.link.close(ErrorCode.IDLE_TIMEOUT, "idle")
            else:
                alive.append(peer.link)
        results = await asyncio.gather(
            *(link.ping(timeout=self.config.keepalive_interval) for link in alive),
            return_exceptions=True,
        )
        for result in results:
            # a lost or silent link is closed by its own timers; anything else is a bug
            if isinstance(result, BaseException) and not isinstance(
                result, LinkError | TimeoutError | asyncio.CancelledError
            ):
                log.error("keepalive ping failed", exc_info=result)
