"""Relays and circuits on a live node (docs/nat.md §3, §4): the asyncio side of
:class:`~qiz.qmp.relay.RelayCore`.

One :class:`RelayService` plays all three parts:

* **relay** (when ``config.enabled``): serves ``relay.reserve`` and ``relay.connect``, opens the
  stream to the target, and forwards stream messages between the two links, rewriting only the
  stream id; the core decides every limit and every close;
* **target**: serves ``relay.incoming`` from a relay it holds a reservation on: accepts the
  stream, runs a responder QMP connection over it (a :class:`~qiz.qmp.streams.CircuitTransport`
  under the same :class:`~qiz.qmp.transport.Link` as TCP), and hands the established link to
  the link manager to adopt like an inbound one;
* **client**: :meth:`RelayService.reserve` takes (and renews at half-life) a reservation, and
  :meth:`RelayService.dial_via` opens a circuit and runs an initiator connection over it; the
  link manager calls it (``relay_dialer``) from ``connect_record``.

The QMP handshake and channel run end to end inside the circuit: the relay forwards ciphertext
it cannot read, and cannot impersonate either side (the dialler expects the target's id).

Abuse is charged to the peer's trust score (``relay_abuse``, through the link manager's
``report_peer``): what the core names (flow control broken, a third circuit to one target
asked for again after a refusal; see :mod:`qiz.qmp.relay`) and relay requests that do not
parse (a malformed ``relay.reserve``, ``relay.connect`` or ``relay.incoming``, or a stream id
already in use), which no honest node sends. The peer is the authenticated one at the other
end of the link the request came on, so no one can be charged for another's bytes. Refusals
because something is full are never charged (see the core's notes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qiz.crypto.ids import NodeId
from qiz.identity import PeerRecord
from qiz.identity.peer_record import RelayAddress
from qiz.qmp.admission import address_prefix
from qiz.qmp.connection import Connection
from qiz.qmp.errors import ErrorCode
from qiz.qmp.manager import LinkManager
from qiz.qmp.relay import (
    Close,
    End,
    Forward,
    Refusal,
    RelayConfig,
    RelayCore,
    network_prefix,
)
from qiz.qmp.rpc import CallContext, Handler, RpcEndpoint, RpcError
from qiz.qmp.streams import (
    MAX_SID,
    MAX_STREAMS_PER_LINK,
    CircuitTransport,
    StreamError,
    StreamMux,
)
from qiz.qmp.transport import Link, LinkError
from qiz.ratelimit import KeyedRateLimiter

log = logging.getLogger("qiz.relay")
REFUSED = "relay-refused"
# why a link is kept open (LinkManager.keep): a reservation rides on it, here or at the relay
KEEP_RELAY, KEEP_HELD = "relay reservation", "reservation held"
# Seconds between the relay's checks for expired reservations and circuits (at most).
TICK_INTERVAL = 5.0


# relay.connect requests served per dialler: per second, and in a burst.
CONNECT_RATE = 2.0
CONNECT_BURST = 8


def relay_address(relay: NodeId) -> str:
    """A relayed link's address: ``relay:`` and the first 12 characters of the relay's id."""
    return f"relay:{str(relay)[:12]}"


@dataclass(frozen=True, slots=True)
class HeldReservation:
    """A reservation this node holds on a relay."""

    relay: NodeId
    address: str  # where the relay was reached
    expires: float
    limits: dict[str, int]


class _Forwarder:
    """The relay's handler for one end of a circuit: everything goes through the core."""

    def __init__(self, service: RelayService, link: Link, mux: StreamMux) -> None:
        self.service = service
        self.link = link
        self.mux = mux
        self.sid = -1

    @property
    def end(self) -> End:
        return End(self.link, self.sid)

    def on_stream_data(self, data: bytes) -> None:
        self.service._on_data(self.end, data)

    def on_stream_credit(self, credit: int) -> None:
        self.service._on_credit(self.end, credit)

    def on_stream_close(self, code: str, reason: str) -> None:
        if (code, reason) == ("closed", "link closed"):
            reason = "relay link closed"
        self.service._apply(self.service.core.on_close(self.end, code, reason))


def _connect_body(body: Any) -> tuple[bytes, int]:
    """``relay.connect``'s target digest and stream id, or a bad-request error."""
    if not isinstance(body, dict) or set(body) != {"to", "sid"}:
        raise RpcError("bad-request", 'relay.connect takes {"to", "sid"}')
    to, sid = body["to"], body["sid"]
    if not isinstance(to, bytes) or len(to) != 32:
        raise RpcError("bad-request", "to must be a 32-byte node id digest")
    if isinstance(sid, bool) or not isinstance(sid, int) or not 0 <= sid < MAX_SID:
        raise RpcError("bad-request", "sid must be an integer in [0, 2**62)")
    return to, sid


class RelayService:
    """Relay, target and client of circuits for one node's link manager."""

    def __init__(
        self,
        links: LinkManager,
        config: RelayConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.links = links
        self.config = config or RelayConfig()
        self.clock = clock
        self.core = RelayCore(self.config)
        self.core.on_abuse = self._abused
        # circuits asked for per dialler (each costs the relay an RPC to the target and the
        # target a handshake): a steady few per second, a burst of a few more
        self._connects = KeyedRateLimiter(CONNECT_RATE, CONNECT_BURST)
        self._muxes: dict[Link, StreamMux] = {}  # links with circuits or reservations here
        self._ticker: asyncio.Task[None] | None = None
        # client side: reservations held on relays, and their renewal tasks
        self.held: dict[NodeId, HeldReservation] = {}
        self._renewing: dict[NodeId, asyncio.Task[None]] = {}
        # called with every STREAM_DATA payload the relay forwards (tests look at the bytes)
        self.on_forward: Callable[[bytes], None] | None = None
        # Addresses relays report (for the NAT layer, docs/nat.md §1, §5): on_seen(relay, ours)
        # when a relay answers relay.connect with the address it sees us at; on_incoming(relay,
        # dialler, its address as the relay sees it) when a relay opens a circuit to us.
        self.on_seen: Callable[[NodeId, str], None] | None = None
        self.on_incoming: Callable[[NodeId, NodeId, str], None] | None = None
        # whether a peer may still have our relay slots (qiz.trust.scores: "give"); all may
        # when the node keeps no scores
        self.may_give: Callable[[bytes], bool] | None = None
        links.relay_dialer = self.dial_via

    def handlers(self) -> dict[str, Handler]:
        return {
            "relay.reserve": self._serve_reserve,
            "relay.connect": self._serve_connect,
            "relay.incoming": self._serve_incoming,
        }

    # ================================================================== abuse

    def _abused(self, peer: Any, what: str) -> None:
        """The core caught ``peer`` (a NodeId) abusing the relay: its score pays."""
        assert isinstance(peer, NodeId)
        self.links.report(peer, "relay_abuse", what)

    def _garbage(self, ctx: CallContext, method: str, message: str) -> RpcError:
        """A relay request from ``ctx``'s peer that no honest node sends: charge the peer,
        and answer bad-request."""
        self.links.report(ctx.peer_id, "relay_abuse", f"{method}: {message}")
        return RpcError("bad-request", message)

    def _stream_refused(
        self, ctx: CallContext, method: str, mux: StreamMux, exc: StreamError
    ) -> RpcError:
        """A stream the peer named cannot be taken: garbage (a malformed id, one of ours, one
        already open) is charged; a link closing or at its stream cap is not."""
        if mux.closed or len(mux.streams) >= MAX_STREAMS_PER_LINK:
            return RpcError("bad-request", str(exc))
        return self._garbage(ctx, method, str(exc))

    # ================================================================== relay

    async def _serve_reserve(self, ctx: CallContext, body: Any) -> dict[str, Any]:
        if body not in ({}, None):
            raise self._garbage(ctx, "relay.reserve", "relay.reserve takes {}")
        if ctx.link in self.links.relayed:
            raise RpcError(REFUSED, "not over a relayed link")
        if self.may_give is not None and not self.may_give(ctx.peer_id.digest):
            raise RpcError(REFUSED, "your trust score here is under the line for relay slots")
        reservation = self.core.reserve(
            ctx.peer_id, ctx.link, network_prefix(ctx.link.remote_address), self.clock()
        )
        if isinstance(reservation, Refusal):
            raise RpcError(REFUSED, reservation.reason)
        self._watch(ctx.link)
        self.links.keep(ctx.link, KEEP_RELAY)
        self._start_ticker()
        return {
            "expires": int(reservation.expires),
            "limits": {
                "bytes": self.config.circuit_bytes,
                "seconds": int(self.config.circuit_seconds),
            },
        }

    async def _serve_connect(self, ctx: CallContext, body: Any) -> dict[str, Any]:
        try:
            to, sid = _connect_body(body)
        except RpcError as exc:
            raise self._garbage(ctx, "relay.connect", exc.message) from None
        if ctx.link in self.links.relayed:
            raise RpcError(REFUSED, "not over a relayed link")
        if not self._connects.allow(ctx.peer_id.digest, self.clock()):
            raise RpcError(REFUSED, "too many circuits asked for lately")
        target = NodeId(to)
        checked = self.core.check_connect(ctx.peer_id, target, self.clock())
        if isinstance(checked, Refusal):
            raise RpcError(REFUSED, checked.reason)
        target_link = checked.link
        assert isinstance(target_link, Link)
        target_rpc = self.links.rpc_for(target_link)
        dialler_rpc = self.links.rpc_for(ctx.link)
        if target_rpc is None or dialler_rpc is None:
            raise RpcError(REFUSED, "no reservation")
        a = _Forwarder(self, ctx.link, dialler_rpc.streams)
        b = _Forwarder(self, target_link, target_rpc.streams)
        try:
            a.mux.accept(sid, a)
        except StreamError as exc:
            raise self._stream_refused(ctx, "relay.connect", a.mux, exc) from None
        a.sid = sid
        try:
            b.sid = b.mux.open(b)
        except StreamError:
            a.mux.streams.pop(sid, None)
            raise RpcError(REFUSED, "the target's link has too many streams") from None
        circuit = self.core.connect(ctx.peer_id, a.end, target, b.end, self.clock())
        if isinstance(circuit, Refusal):
            a.mux.streams.pop(a.sid, None)
            b.mux.streams.pop(b.sid, None)
            raise RpcError(REFUSED, circuit.reason)
        self._watch(ctx.link)
        self._watch(target_link)
        seen = ctx.link.remote_address
        try:
            await target_rpc.call(
                "relay.incoming", {"from": ctx.peer_id.digest, "sid": b.sid, "seen": seen}
            )
        except RpcError as exc:
            self._apply(self.core.close_circuit(a.end, "refused", exc.message))
            raise RpcError(REFUSED, f"target refused: {exc.message}"[:200]) from None
        except BaseException:
            self._apply(self.core.close_circuit(a.end, "closed", "relay.connect abandoned"))
            raise
        if self.core.circuit_of(a.end) is None:  # closed meanwhile (a link went)
            raise RpcError(REFUSED, "the circuit closed while it opened")
        return {"seen": seen}

    def _on_data(self, end: End, data: bytes) -> None:
        verdict = self.core.on_data(end, len(data))
        if isinstance(verdict, Forward):
            if self.on_forward is not None:
                self.on_forward(data)
            mux = self._muxes.get(verdict.to.link)  # type: ignore[arg-type]
            if mux is not None:
                mux.send_data(verdict.to.sid, data)
        else:
            self._apply(verdict)

    def _on_credit(self, end: End, credit: int) -> None:
        verdict = self.core.on_credit(end, credit)
        if isinstance(verdict, Forward):
            mux = self._muxes.get(verdict.to.link)  # type: ignore[arg-type]
            if mux is not None:
                mux.send_credit(verdict.to.sid, credit)
        else:
            self._apply(verdict)

    def _apply(self, closes: list[Close]) -> None:
        for close in closes:
            mux = self._muxes.get(close.end.link)  # type: ignore[arg-type]
            if mux is not None and close.end.sid in mux.streams:
                mux.close_stream(close.end.sid, close.code, close.reason, notify=False)

    def _watch(self, link: Link) -> None:
        if link in self._muxes or not link.is_open:
            return
        rpc = self.links.rpc_for(link)
        if rpc is None:
            return
        self._muxes[link] = rpc.streams
        link.add_close_listener(self._on_link_closed)

    def _on_link_closed(self, link: Link) -> None:
        self._apply(self.core.release(link))
        self._muxes.pop(link, None)

    def _start_ticker(self) -> None:
        if self._ticker is None and not self.links.tasks.closed:
            period = min(
                TICK_INTERVAL, self.config.reservation_ttl / 4, self.config.circuit_seconds / 4
            )
            self._ticker = self.links.tasks.every(period, self._tick, "relay tick")

    async def _tick(self) -> None:
        expired = self.core.tick(self.clock())
        self._apply(expired.closes)
        held = {r.link for r in self.core.reservations.values()}
        for reservation in expired.reservations:
            if reservation.link not in held:
                self.links.unkeep(reservation.link, KEEP_RELAY)  # type: ignore[arg-type]

    def snapshot(self) -> dict[str, Any]:
        """What the relay holds and did, for status and metrics: reservations and circuits
        here now, bytes forwarded and circuits opened since start, refusals and closes by
        reason, and the reservations this node holds on relays (relay id -> expiry)."""
        core = self.core
        return {
            "enabled": self.config.enabled,
            "reservations": len(core.reservations),
            "circuits": len(core.circuits),
            "bytes_forwarded": core.counters["bytes"],
            "circuits_opened": core.counters["circuits"],
            "refused": {
                k.removeprefix("refused: "): v
                for k, v in core.counters.items()
                if k.startswith("refused: ")
            },
            "closed": {
                k.removeprefix("closed: "): v
                for k, v in core.counters.items()
                if k.startswith("closed: ")
            },
            "held": {str(relay): held.expires for relay, held in self.held.items()},
        }

    # ================================================================== target

    async def _serve_incoming(self, ctx: CallContext, body: Any) -> dict[str, Any]:
        method = "relay.incoming"
        if not isinstance(body, dict) or set(body) != {"from", "sid", "seen"}:
            raise self._garbage(ctx, method, 'relay.incoming takes {"from", "sid", "seen"}')
        origin, sid, seen = body["from"], body["sid"], body["seen"]
        if not isinstance(origin, bytes) or len(origin) != 32:
            raise self._garbage(ctx, method, "from must be a 32-byte node id digest")
        if not isinstance(seen, str) or len(seen) > 64:
            raise self._garbage(ctx, method, "seen must be an address (at most 64 characters)")
        held = self.held.get(ctx.peer_id)
        if held is None or ctx.link in self.links.relayed:
            raise RpcError(REFUSED, "no reservation here")
        rpc = self.links.rpc_for(ctx.link)
        if rpc is None or self.links.closing:
            raise RpcError("busy", "the node is stopping")
        # A relayed handshake counts against the relay's network's budget of handshakes in
        # progress, like any inbound one (docs/nat.md §4.2).
        pending = self.links.listener.pending
        prefix = address_prefix(ctx.link.remote_address)
        if pending.full or pending.prefix_full(prefix):
            raise RpcError("busy", "too many handshakes in progress")
        transport = CircuitTransport(rpc.streams)
        try:
            transport.accept(sid)
        except StreamError as exc:
            raise self._stream_refused(ctx, method, rpc.streams, exc) from None
        links = self.links
        config = dataclasses.replace(
            links.config.qmp,
            handshake_timeout=min(links.config.qmp.handshake_timeout, links.config.pending_timeout),
        )
        conn = Connection.responder(
            links.identity,
            links.record_provider(),
            cookies=links.listener.cookies,
            # each dialler behind a relay has a KEM budget of its own (the relay's word for who
            # dials), so one dialler cannot spend every other's through the same relay
            peer_address=f"{relay_address(ctx.peer_id)}/{origin.hex()[:16]}",
            now=links.clock(),
            config=config,
            records=links.listener.records,
        )
        link = self._run_over(transport, conn, ctx.peer_id)
        if link.is_open:
            pending.add(link, prefix)
            link.add_close_listener(pending.discard)
        links.tasks.spawn(
            self._finish_incoming(
                link, NodeId(origin), ctx.peer_id, seen, config.handshake_timeout
            ),
            "relayed handshake",
        )
        return {}

    async def _finish_incoming(
        self, link: Link, origin: NodeId, relay: NodeId, seen: str, timeout: float
    ) -> None:
        try:
            await link.wait_established(timeout + 1.0)
        except (LinkError, TimeoutError):
            self.links.listener.pending.discard(link)
            link.close(ErrorCode.HANDSHAKE_TIMEOUT, "relayed handshake did not complete")
            return
        except asyncio.CancelledError:
            link.close(ErrorCode.SHUTDOWN, "node shutting down")
            raise
        self.links.listener.pending.discard(link)
        if link.peer_id != origin:
            link.close(ErrorCode.UNEXPECTED_PEER, "not the node the relay announced")
            return
        with contextlib.suppress(LinkError):
            self.links.adopt(link, relay=relay)
            if self.on_incoming is not None:
                self.on_incoming(relay, origin, seen)

    def _run_over(self, transport: CircuitTransport, conn: Connection, relay: NodeId) -> Link:
        link = Link(conn, clock=self.links.clock)
        link.remote_address = relay_address(relay)  # connection_made keeps it: no peername
        transport.set_protocol(link)
        link.connection_made(transport)
        return link

    # ================================================================== client

    async def reserve(self, relay_rpc: RpcEndpoint) -> HeldReservation:
        """Reserve a slot on the relay at the other end of ``relay_rpc`` (renewed at half-life
        for as long as its link lives). Raises :class:`RpcError` (``relay-refused``: why)."""
        result = await relay_rpc.call("relay.reserve", {})
        relay = relay_rpc.link.peer_id
        assert relay is not None
        limits = result.get("limits") if isinstance(result, dict) else None
        expires = result.get("expires") if isinstance(result, dict) else None
        if (
            not isinstance(expires, int)
            or not isinstance(limits, dict)
            or not all(isinstance(limits.get(k), int) for k in ("bytes", "seconds"))
        ):
            raise RpcError("bad-request", "the relay's answer to relay.reserve is malformed")
        held = HeldReservation(
            relay,
            relay_rpc.link.remote_address,
            float(expires),
            {"bytes": limits["bytes"], "seconds": limits["seconds"]},
        )
        self.held[relay] = held
        self.links.keep(relay_rpc.link, KEEP_HELD)
        if relay not in self._renewing and not self.links.tasks.closed:
            self._renewing[relay] = self.links.tasks.spawn(
                self._keep_reserved(relay_rpc), f"reservation {str(relay)[:12]}"
            )
        return held

    def release(self, relay: NodeId) -> None:
        """Stop holding (and renewing) the reservation on ``relay``: the relay forgets it when
        it expires or the link closes, which nothing keeps open any more."""
        task = self._renewing.get(relay)
        if task is not None:
            task.cancel()  # its finally forgets the reservation and lets the link idle out
        else:
            self.held.pop(relay, None)

    async def _keep_reserved(self, relay_rpc: RpcEndpoint) -> None:
        relay = relay_rpc.link.peer_id
        assert relay is not None
        try:
            while relay_rpc.link.is_open:
                held = self.held.get(relay)
                if held is None:
                    return
                wait = max(1.0, (held.expires - self.clock()) / 2)
                closed = asyncio.ensure_future(relay_rpc.link.wait_closed())
                try:
                    await asyncio.wait({closed}, timeout=wait)
                finally:
                    closed.cancel()
                if not relay_rpc.link.is_open:
                    return
                try:
                    result = await relay_rpc.call("relay.reserve", {})
                    self.held[relay] = dataclasses.replace(held, expires=float(result["expires"]))
                except (RpcError, KeyError, TypeError, ValueError) as exc:
                    log.info("relay %s no longer holds our reservation: %s", relay, exc)
                    return
        finally:
            self.held.pop(relay, None)
            self._renewing.pop(relay, None)
            self.links.unkeep(relay_rpc.link, KEEP_HELD)

    async def dial_via(self, relay: RelayAddress, record: PeerRecord, timeout: float) -> Link:
        """An established link to ``record``'s node through a circuit on ``relay`` (not yet
        adopted: the link manager does that). Raises :class:`LinkError`."""
        relay_rpc = await self.links.connect(relay.address, relay.node_id, timeout=timeout)
        if relay_rpc.link in self.links.relayed:
            raise LinkError(ErrorCode.PROTOCOL_ERROR, "a relay is not reached through a relay")
        transport = CircuitTransport(relay_rpc.streams)
        try:
            sid = transport.open()
        except StreamError as exc:
            raise LinkError(ErrorCode.BUSY, f"relay link: {exc}") from None
        try:
            answer = await relay_rpc.call(
                "relay.connect", {"to": record.node_id.digest, "sid": sid}, timeout=timeout
            )
        except BaseException as exc:
            transport.abort()
            if isinstance(exc, RpcError):
                raise LinkError(
                    ErrorCode.BUSY if exc.code == REFUSED else ErrorCode.PROTOCOL_ERROR,
                    f"relay {str(relay.node_id)[:12]}: {exc}",
                ) from None
            raise
        seen = answer.get("seen") if isinstance(answer, dict) else None
        if self.on_seen is not None and isinstance(seen, str) and len(seen) <= 64:
            self.on_seen(relay.node_id, seen)
        links = self.links
        conn = Connection.initiator(
            links.identity,
            links.record_provider(),
            expected=record,
            now=links.clock(),
            config=links.config.qmp,
        )
        link = self._run_over(transport, conn, relay.node_id)
        try:
            await link.wait_established(timeout)
        except TimeoutError:
            link.close(ErrorCode.HANDSHAKE_TIMEOUT, "handshake timed out")
            raise LinkError(
                ErrorCode.HANDSHAKE_TIMEOUT, f"relayed handshake with {record.node_id} timed out"
            ) from None
        except BaseException:
            link.close(ErrorCode.SHUTDOWN, "dial abandoned")
            raise
        return link
