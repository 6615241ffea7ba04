"""Relays and circuits end to end on 127.0.0.1 (docs/nat.md §3, §4): three link managers, R a
relay, B reserving on R, A dialling B by a record that names no address, only R.

Everything is real: TCP links, the QMP handshake inside the circuit, the relay's forwarding.
The relay's forwarding is observed (``RelayService.on_forward``) to show it only ever sees
ciphertext."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from qiz import wire
from qiz.events import EventBus
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import RelayAddress
from qiz.qmp.circuit import CIRCUIT_WINDOW
from qiz.qmp.manager import LinkManager
from qiz.qmp.relay import RelayConfig
from qiz.qmp.relay_service import RelayService
from qiz.qmp.rpc import CallContext, Handler, RpcError
from qiz.qmp.transport import LinkError

from .helpers import HOST, manager, record_of, run
from .helpers import async_eventually as eventually


class Node:
    """A link manager with a relay service, as the node will wire them."""

    def __init__(self, relay_config: RelayConfig | None = None, **links: Any) -> None:
        self.identity = NodeIdentity.generate()
        self.record: PeerRecord = record_of(self.identity)

        async def echo(ctx: CallContext, body: Any) -> Any:
            return body

        handlers: dict[str, Handler] = {"qmp.ping": echo}
        self.links = LinkManager(
            self.identity, lambda: self.record, handlers, config=manager(**links), events=EventBus()
        )
        self.relay = RelayService(self.links, relay_config)
        handlers.update(self.relay.handlers())

    @property
    def id(self) -> Any:
        return self.identity.node_id

    @property
    def address(self) -> str:
        return self.links.listener.address

    def record_via(self, *relays: Node) -> PeerRecord:
        """A record naming no address, only ``relays``."""
        now = time.time()
        self.record = PeerRecord.create(
            self.identity,
            [],
            seq=int(now * 1000),
            now=now,
            relays=[RelayAddress(r.id, r.address) for r in relays],
        )
        return self.record


async def mesh(config: RelayConfig | None = None, **links: Any) -> tuple[Node, Node, Node]:
    r, a, b = Node(config, **links), Node(**links), Node(**links)
    for node in (r, a, b):
        await node.links.start(f"{HOST}:0")
    rpc_br = await b.links.connect(r.address, r.id)
    held = await b.relay.reserve(rpc_br)
    assert held.relay == r.id and held.expires > time.time()
    return r, a, b


async def stop(*nodes: Node) -> None:
    for node in nodes:
        await node.links.close()


def test_a_and_b_talk_through_the_relay_which_sees_only_ciphertext() -> None:
    async def scenario() -> None:
        r, a, b = await mesh()
        forwarded: list[bytes] = []
        r.relay.on_forward = forwarded.append
        seen: list[tuple] = []
        a.relay.on_seen = lambda *args: seen.append(("a", *args))
        b.relay.on_incoming = lambda *args: seen.append(("b", *args))
        try:
            record = b.record_via(r)
            rpc = await a.links.connect_record(record)
            assert rpc.link.peer_id == b.id
            assert rpc.link.remote_address == f"relay:{str(r.id)[:12]}"
            marker = b"MARKER-" + os.urandom(16).hex().encode()
            assert await rpc.call("qmp.ping", marker) == marker
            await eventually(lambda: a.id in b.links.peers, what="B adopts the relayed link")
            back = b.links.peers[a.id].rpc
            a_seen_at = r.links.peers[a.id].link.remote_address  # A's address as R sees it
            assert seen == [("a", r.id, a_seen_at), ("b", r.id, a.id, a_seen_at)]
            assert await back.call("qmp.ping", "from B") == "from B"
            assert forwarded, "the relay forwarded nothing"
            assert marker not in b"".join(forwarded)
            stats = r.relay.snapshot()
            assert stats["circuits"] == 1 and stats["reservations"] == 1
            assert stats["bytes_forwarded"] == sum(map(len, forwarded))
            assert b.relay.snapshot()["held"] == {str(r.id): b.relay.held[r.id].expires}
            # rows say relayed, and through which relay
            (row,) = [p for p in a.links.peer_rows() if p["node_id"] == str(b.id)]
            assert row["path"] == "relayed" and row["relay"] == str(r.id)
            (row_b,) = [p for p in b.links.peer_rows() if p["node_id"] == str(a.id)]
            assert row_b["path"] == "relayed" and row_b["direction"] == "in"
            (direct,) = [p for p in b.links.peer_rows() if p["node_id"] == str(r.id)]
            assert direct["path"] == "direct" and direct["relay"] is None
            # a second connect_record reuses the link
            assert await a.links.connect_record(record) is rpc
            # concurrent ones share one circuit
            c = Node()
            await c.links.start(f"{HOST}:0")
            try:
                together = await asyncio.gather(*(c.links.connect_record(record) for _ in range(3)))
                assert len({id(x) for x in together}) == 1
                assert r.relay.core.circuits_from(c.id) == 1
            finally:
                await stop(c)
        finally:
            await stop(a, b, r)

    run(scenario(), timeout=60)


def test_8_mib_cross_the_circuit_intact_and_the_relay_holds_at_most_a_window() -> None:
    async def scenario() -> None:
        r, a, b = await mesh()
        try:
            rpc = await a.links.connect_record(b.record_via(r))
            piece = 128 * 1024
            blob = os.urandom(8 * 1024 * 1024)
            pieces = [blob[i : i + piece] for i in range(0, len(blob), piece)]
            echoed = await asyncio.gather(*(rpc.call("qmp.ping", p, timeout=60) for p in pieces))
            assert b"".join(echoed) == blob
            (circuit,) = r.relay.core.circuits.values()
            assert circuit.bytes >= 2 * len(blob)
            assert r.relay.core.peak_outstanding <= CIRCUIT_WINDOW
            for link in (r.links.peers[a.id].link, r.links.peers[b.id].link):
                mux = r.links.rpc_for(link).streams  # type: ignore[union-attr]
                # what the relay queued for a link: one window of this circuit, plus the
                # link's own messages in front of it
                assert mux.peak_queued <= CIRCUIT_WINDOW + 64 * 1024
        finally:
            await stop(a, b, r)

    run(scenario(), timeout=120)


def test_refusals_carry_their_reasons() -> None:
    async def scenario() -> None:
        r, a, b = await mesh(RelayConfig(max_circuits_per_peer=1))
        stranger = Node()
        try:
            # no reservation: the target never reserved on R
            with pytest.raises(LinkError, match="no reservation"):
                await a.links.connect_record(stranger.record_via(r))
            # a record with nothing to dial
            with pytest.raises(LinkError, match="no address and no relay"):
                await a.links.connect_record(record_of(stranger.identity))
            record = b.record_via(r)
            await a.links.connect_record(record)
            # a second circuit to B (connect_record would reuse the link; dial directly)
            with pytest.raises(LinkError, match="too many circuits to this peer"):
                await a.relay.dial_via(record.relays[0], record, 5.0)
            assert r.relay.snapshot()["refused"] == {
                "no reservation": 1,
                "too many circuits to this peer": 1,
            }
            # malformed calls are bad requests
            to_r = await a.links.connect(r.address, r.id)
            for body in ({}, {"to": b"x", "sid": 0}, {"to": b.id.digest, "sid": -1}):
                with pytest.raises(RpcError, match="bad-request"):
                    await to_r.call("relay.connect", body)
            # R gives no slot to a peer under its trust line for giving (qiz.trust.scores)
            r.relay.may_give = lambda peer: peer != a.id.digest
            with pytest.raises(RpcError, match="trust score here is under the line"):
                await a.relay.reserve(await a.links.connect(r.address, r.id))
            r.relay.may_give = None
            # R refuses reservations when disabled
            r.relay.config.enabled = False
            with pytest.raises(RpcError, match="relay disabled"):
                await a.relay.reserve(await a.links.connect(r.address, r.id))
            # B only accepts circuits from relays it reserved on
            with pytest.raises(RpcError, match="no reservation here"):
                await (await a.links.connect(b.address, b.id)).call(
                    "relay.incoming", {"from": a.id.digest, "sid": 1, "seen": "x:1"}
                )
        finally:
            await stop(a, b, r, stranger)

    run(scenario(), timeout=60)


def test_the_byte_limit_closes_the_circuit_and_the_peers_can_reconnect() -> None:
    async def scenario() -> None:
        r, a, b = await mesh()
        try:
            record = b.record_via(r)
            rpc = await a.links.connect_record(record)
            await eventually(lambda: a.id in b.links.peers, what="B adopts the relayed link")
            b_side = b.links.peers[a.id].link
            (circuit,) = r.relay.core.circuits.values()
            r.relay.config.circuit_bytes = circuit.bytes + 10_000
            with pytest.raises(RpcError):
                await rpc.call("qmp.ping", os.urandom(64 * 1024))
            await asyncio.wait_for(rpc.link.wait_closed(), 10)
            await asyncio.wait_for(b_side.wait_closed(), 10)
            assert not r.relay.core.circuits
            assert r.relay.core.counters["closed: limit"] == 1
            assert rpc.link.transport.close_code == "limit"  # type: ignore[union-attr]
            await eventually(lambda: b.id not in a.links.peers, what="A forgets the link")
            r.relay.config.circuit_bytes = 256 * 1024 * 1024
            again = await a.links.connect_record(record)
            assert again is not rpc
            assert await again.call("qmp.ping", "again") == "again"
        finally:
            await stop(a, b, r)

    run(scenario(), timeout=60)


def test_closing_the_relay_link_to_b_closes_a_circuit_and_b_reservation() -> None:
    async def scenario() -> None:
        r, a, b = await mesh()
        try:
            rpc = await a.links.connect_record(b.record_via(r))
            assert await rpc.call("qmp.ping", 1) == 1
            assert r.relay.core.reservations
            r.links.peers[b.id].link.close()
            await asyncio.wait_for(rpc.link.wait_closed(), 10)
            assert rpc.link.transport.close_reason == "relay link closed"  # type: ignore[union-attr]
            assert not r.relay.core.circuits and not r.relay.core.reservations
            await eventually(lambda: not b.relay.held, what="B drops its reservation")
            # R's link to A stays up
            assert r.links.peers[a.id].link.is_open
        finally:
            await stop(a, b, r)

    run(scenario(), timeout=60)


def test_a_reservation_is_renewed_at_half_life_while_its_link_lives() -> None:
    async def scenario() -> None:
        r, a, b = await mesh(RelayConfig(reservation_ttl=4.0))
        try:
            first = b.relay.held[r.id].expires
            await eventually(
                lambda: b.relay.held[r.id].expires > first, what="B renews its reservation"
            )
            # still reserved on R after the first expiry: A can dial B
            await eventually(lambda: time.time() > first + 0.5, what="the first expiry")
            rpc = await a.links.connect_record(b.record_via(r))
            assert await rpc.call("qmp.ping", "renewed") == "renewed"
            # the relayed handshake was counted as in progress, and is no longer
            assert len(b.links.listener.pending) == 0
        finally:
            await stop(a, b, r)

    run(scenario(), timeout=60)


def test_a_dialler_past_its_credit_loses_the_circuit_not_its_link() -> None:
    async def scenario() -> None:
        r, a, b = await mesh()
        try:
            rpc = await a.links.connect_record(b.record_via(r))
            await eventually(lambda: a.id in b.links.peers, what="B adopts the relayed link")
            b_link = b.links.peers[a.id].link
            b_link.transport.pause_reading()  # type: ignore[union-attr]  # B grants no more
            sid = rpc.link.transport.get_extra_info("stream_id")  # type: ignore[union-attr]
            a_to_r = a.links.peers[r.id].rpc
            for _ in range(CIRCUIT_WINDOW // (64 * 1024) + 1):
                await a_to_r.link.send(wire.encode([4, sid, os.urandom(64 * 1024)]))
            await asyncio.wait_for(rpc.link.wait_closed(), 10)
            await asyncio.wait_for(b_link.wait_closed(), 10)
            assert rpc.link.transport.close_code == "protocol"  # type: ignore[union-attr]
            assert r.relay.core.counters["closed: protocol"] == 1
            assert r.relay.core.peak_outstanding <= CIRCUIT_WINDOW
            # a stray stream message to R: refused, the link carries on
            await a_to_r.link.send(wire.encode([4, 12345 * 2, b"stray"]))
            assert await a_to_r.call("qmp.ping", "up") == "up"
            assert r.links.peers[a.id].link.is_open and r.links.peers[b.id].link.is_open
        finally:
            await stop(a, b, r)

    run(scenario(), timeout=60)


def test_links_that_carry_a_reservation_are_not_closed_as_idle() -> None:
    async def scenario() -> None:
        r, a, b = await mesh(idle_close=0.5, keepalive_interval=0.2)
        try:
            idle = await a.links.connect(r.address, r.id)  # no reservation on it
            await asyncio.wait_for(idle.link.wait_closed(), 10)
            assert idle.link.closed.result()[1] == "idle"
            # B's link to R carries B's reservation: kept at both ends
            assert b.links.peers[r.id].link.is_open and r.links.peers[b.id].link.is_open
            assert r.id in b.relay.held and b.id in r.relay.core.reservations
        finally:
            await stop(a, b, r)

    run(scenario(), timeout=60)
