"""Relay abuse costs the abuser's score, and only the abuser's (``relay_abuse``,
``qiz.qmp.relay`` and ``qiz.qmp.relay_service``): a dialler asking for a third circuit to one
target, a malformed relay request, a stream past its credit; never a peer refused because the
relay, or its target, is full.

R is a whole :class:`~qiz.node.Node` (it keeps scores; the charges show in the rows ``qiz
peers`` prints); A, B and C are link managers with a relay service, on 127.0.0.1."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from qiz import wire
from qiz.compute.service import ComputeConfig
from qiz.events import EventBus
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import RelayAddress
from qiz.node import Node
from qiz.qmp.circuit import CIRCUIT_WINDOW
from qiz.qmp.manager import LinkManager
from qiz.qmp.relay import REFUSE_CIRCUITS, REFUSE_PAIR, REFUSE_RESERVATIONS, RelayConfig
from qiz.qmp.relay_service import RelayService
from qiz.qmp.rpc import CallContext, Handler, RpcEndpoint, RpcError
from qiz.qmp.streams import CircuitTransport

from .helpers import HOST, make_node, manager, record_of, run
from .helpers import async_eventually as eventually

pytestmark = pytest.mark.timeout(120)


class Peer:
    """A link manager with a relay service (no scores of its own)."""

    def __init__(self) -> None:
        self.identity = NodeIdentity.generate()
        self.record: PeerRecord = record_of(self.identity)

        async def echo(ctx: CallContext, body: Any) -> Any:
            return body

        handlers: dict[str, Handler] = {"qmp.ping": echo}
        self.links = LinkManager(
            self.identity, lambda: self.record, handlers, config=manager(), events=EventBus()
        )
        self.relay = RelayService(self.links, None)
        handlers.update(self.relay.handlers())

    @property
    def digest(self) -> bytes:
        return self.identity.node_id.digest


def relay_node(config: RelayConfig) -> Node:
    return make_node(compute=ComputeConfig(worker=False, warm_up=False), relay=config)


def trail(r: Node, peer: Peer) -> list[dict]:
    assert r.compute is not None
    return r.compute.scores.explain(peer.digest, trail=32)["trail"]


def reasons_shown(r: Node, peer: Peer) -> list[str]:
    """The reasons R's peer list (``qiz peers``) shows for ``peer``."""
    rows = {view.node_id: view for view in r.api.peer_views()}
    return list(rows[str(peer.identity.node_id)].reasons)


async def open_circuit(to_r: RpcEndpoint, target: Peer) -> CircuitTransport:
    """Ask R for a circuit to ``target`` (and never run a handshake over it)."""
    transport = CircuitTransport(to_r.streams)
    sid = transport.open()
    await to_r.call("relay.connect", {"to": target.digest, "sid": sid}, timeout=10)
    return transport


def test_a_peer_over_the_relay_s_limits_is_charged_and_one_refused_for_fullness_is_not() -> None:
    async def scenario() -> None:
        r = relay_node(RelayConfig(max_reservations=1, max_circuits=3))
        a, b, c = Peer(), Peer(), Peer()
        await r.start()
        for peer in (a, b, c):
            await peer.links.start(f"{HOST}:0")
        try:
            r_id = r.node_id
            await b.relay.reserve(await b.links.connect(r.address, r_id))
            # the relay holds its one reservation: C is refused, and is not to blame
            to_r_c = await c.links.connect(r.address, r_id)
            with pytest.raises(RpcError, match=REFUSE_RESERVATIONS):
                await c.relay.reserve(to_r_c)

            # A: two circuits to B are allowed (a link and its replacement); asking for a third
            # is refused, and asking again after that refusal is abuse
            to_r_a = await a.links.connect(r.address, r_id)
            circuits = [await open_circuit(to_r_a, b) for _ in range(2)]
            with pytest.raises(RpcError, match=REFUSE_PAIR):
                await open_circuit(to_r_a, b)
            assert ("relay_abuse", REFUSE_PAIR) not in [
                (e["reason"], e["detail"]) for e in trail(r, a)
            ]  # the first refusal is free: the relay may not have seen an old circuit close
            with pytest.raises(RpcError, match=REFUSE_PAIR):
                await open_circuit(to_r_a, b)
            # the relay's circuits are all taken now: C is refused, and is not to blame
            circuits.append(await open_circuit(to_r_c, b))
            with pytest.raises(RpcError, match=REFUSE_CIRCUITS):
                await open_circuit(to_r_c, b)
            # garbage on the relay protocol
            with pytest.raises(RpcError, match="bad-request"):
                await to_r_a.call("relay.connect", {"to": b"short", "sid": 1})

            charged = [(e["reason"], e["detail"]) for e in trail(r, a)]
            assert ("relay_abuse", REFUSE_PAIR) in charged
            assert any(
                reason == "relay_abuse" and detail.startswith("relay.connect: ")
                for reason, detail in charged
            ), charged
            assert "relay_abuse" in reasons_shown(r, a)
            assert trail(r, c) == [] and reasons_shown(r, c) == []
            assert trail(r, b) == [], "the target did nothing"
            for transport in circuits:
                transport.abort()
        finally:
            for peer in (a, b, c):
                await peer.links.close()
            await r.stop()

    run(scenario(), timeout=90)


def test_a_dialler_past_its_credit_is_charged_by_the_relay() -> None:
    async def scenario() -> None:
        r = relay_node(RelayConfig())
        a, b = Peer(), Peer()
        await r.start()
        for peer in (a, b):
            await peer.links.start(f"{HOST}:0")
        try:
            await b.relay.reserve(await b.links.connect(r.address, r.node_id))
            now = time.time()
            b.record = PeerRecord.create(
                b.identity,
                [],
                seq=int(now * 1000),
                now=now,
                relays=[RelayAddress(r.node_id, r.address)],
            )
            relayed = await a.links.connect_record(b.record)
            await eventually(lambda: a.identity.node_id in b.links.peers, what="B adopts A")
            b_end = b.links.peers[a.identity.node_id].link.transport
            assert b_end is not None
            b_end.pause_reading()  # B grants no more credit
            sid = relayed.link.transport.get_extra_info("stream_id")  # type: ignore[union-attr]
            to_r = a.links.peers[r.node_id].rpc
            # A sends past the window B granted: A's doing, not B's
            for _ in range(CIRCUIT_WINDOW // (64 * 1024) + 1):
                await to_r.link.send(wire.encode([4, sid, os.urandom(64 * 1024)]))
            await eventually(lambda: trail(r, a), what="R to charge A")
            ((reason, detail),) = [(e["reason"], e["detail"]) for e in trail(r, a)]
            assert (reason, detail) == ("relay_abuse", "stream data beyond the credit granted")
            assert trail(r, b) == []
        finally:
            for peer in (a, b):
                await peer.links.close()
            await r.stop()

    run(scenario(), timeout=90)
