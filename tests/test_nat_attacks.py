"""Regression tests for the attacks an independent review found on NAT traversal (issue 18,
docs/nat.md; fixed in 14c7ade): one test per attack, each the reviewer's reproducer turned
round to assert the fixed behaviour, with real nodes on 127.0.0.1 where the attack needs a
network. Each one fails on the code before the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import qiz.node as qnode
import qiz.qmp.autonat as autonat
from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity, PeerRecord
from qiz.node import Node
from qiz.qmp.autonat import NatConfig, NatService
from qiz.qmp.errors import ErrorCode
from qiz.qmp.observed import NatState
from qiz.qmp.rpc import RpcError
from qiz.qmp.transport import LinkError
from qiz.resolve.errors import Unreachable
from qiz.resolve.reach import PeerCaller
from tests.helpers import async_eventually, client, make_node, run, running

# The limits the fixed code enforces (qiz/qmp/punch.py, qiz/qmp/relay.py), spelled out here so
# that this file imports on the code before the fix too (where each test must fail, not error).
MAX_PUNCH_ATTEMPTS = 3  # punches answered per peer per PUNCH_RETRY_AFTER
MAX_CIRCUITS_PER_PAIR = 2  # circuits one dialler may hold to one target at a relay


def _nat_node() -> Node:
    """A node whose reachability check runs only when a test asks."""
    return make_node(nat=NatConfig(check_every=3600))


def _count_publishes(node: Node) -> list[int]:
    """Wrap ``node.dht.publish_self``: the returned list grows by one per call."""
    calls: list[int] = []
    original = node.dht.publish_self

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await original(*args, **kwargs)

    node.dht.publish_self = counting  # type: ignore[method-assign]
    return calls


@contextlib.contextmanager
def _sockets(count: int, host: str, *, listen: bool) -> Iterator[list[socket.socket]]:
    """``count`` TCP sockets bound on ``host`` (listening, or bound only: a dial is refused)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.bind((host, 0))
            if listen:
                sock.listen(16)
                sock.setblocking(False)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


async def _private_behind_relay(relay: Node, hidden: Node) -> None:
    """``hidden`` (bootstrapped on ``relay``) told it is private: it reserves on ``relay``."""
    await hidden.joined.wait()
    hidden.nat.state.forced = "private"
    hidden._nat_changed()
    await async_eventually(lambda: relay.node_id in hidden.relays.held, what="a reservation")


# ------------------------------------------------------------------ observations (nat.observed)


def test_one_peer_cannot_flush_the_others_observations() -> None:
    """64 reports from one peer used to evict every honest report, and then its word alone
    decided the public addresses; now each peer holds one report, and one observer among
    several decides nothing."""

    async def body() -> None:
        victim = _nat_node()
        async with running(victim):
            for _ in range(2):  # two honest observers agree
                _, rpc = await client(victim.address)
                await rpc.call("nat.observed", {"seen": "203.0.113.5:7000"})
            assert victim.nat.state.public_addresses() == ["203.0.113.5:7000"]
            _, liar = await client(victim.address)
            for _ in range(64):
                await liar.call("nat.observed", {"seen": "198.51.100.66:4444"})
            assert victim.nat.state.public_addresses() == ["203.0.113.5:7000"]
            assert victim.nat.state.snapshot()["observers"] == 3

    run(body())


def test_one_liar_does_not_decide_the_mapping() -> None:
    """One observer saying our port changed used to mark the NAT port-changing (and so
    disable punching); the mapping is now the majority of observers."""
    state = NatState(["192.168.1.2:7000"])
    for i, who in enumerate([b"a" * 32, b"b" * 32, b"c" * 32]):
        state.observe(f"203.0.113.5:5100{i}", who, local=f"192.168.1.2:5100{i}", now=i)
    assert state.mapping == "port-preserving"
    state.observe("203.0.113.5:1", b"d" * 32, local="192.168.1.2:51009", now=9)
    assert state.mapping == "port-preserving"


def test_a_new_ephemeral_port_is_not_a_change() -> None:
    """Behind a NAT each outbound link is seen at a new port; each used to count as a change
    of the public addresses (a re-signed record, a publish and a dial-back check per link).
    Only a change of the public IPs is one now."""
    state = NatState(["192.168.1.2:7000"])
    changes = 0
    for i in range(20):
        changes += state.observe(
            f"198.51.100.7:{40000 + i}", bytes([i]) * 32, local=f"192.168.1.2:{40000 + i}", now=i
        )
    assert changes == 1  # the first report: the IP became known
    assert state.public_ips() == frozenset({"198.51.100.7"})


def test_a_flood_of_observed_addresses_does_not_republish_the_record() -> None:
    """300 nat.observed from one peer, each at a new IP, used to re-sign the record and
    publish it to the DHT 300 times; one peer among several changes nothing now."""

    async def body() -> None:
        helper, victim = _nat_node(), _nat_node()
        async with running(helper):
            victim.bootstrap = [(helper.address, helper.node_id)]
            async with running(victim):
                await victim.joined.wait()
                await async_eventually(lambda: victim.nat.state.observations, what="a report")
                seq = victim.record().seq
                calls = _count_publishes(victim)
                _, rpc = await client(victim.address)
                for i in range(300):
                    await rpc.call("nat.observed", {"seen": f"198.51.{i // 250}.{i % 250}:4444"})
                assert victim.record().seq == seq  # not re-signed
                assert calls == []

    run(body())


def test_each_outbound_link_does_not_republish_the_record() -> None:
    """Six outbound links, each seen at a new ephemeral port, used to re-sign and publish the
    record six times; the public IP did not change, so neither does the record now."""

    async def body() -> None:
        boot = _nat_node()
        others = [_nat_node() for _ in range(6)]
        node = _nat_node()
        async with running(boot, *others):
            node.bootstrap = [(boot.address, boot.node_id)]
            async with running(node):
                await node.joined.wait()
                await async_eventually(lambda: node.nat.state.observations, what="a report")
                seq = node.record().seq
                calls = _count_publishes(node)
                for other in others:
                    await node.links.connect(other.address, other.node_id)
                await async_eventually(
                    lambda: len(node.nat.state.observations) >= 7, what="7 observers' reports"
                )
                assert node.record().seq == seq
                assert calls == []

    run(body(), timeout=60)


# ------------------------------------------------------------------ reachability (nat.dialback)


def _dialback_helper(me: NodeId, seen_me_at: str) -> Any:
    """A real NatService answering nat.dialback for ``me``, which it sees at ``seen_me_at``."""
    service = NatService(SimpleNamespace(peers={}))  # type: ignore[arg-type]

    async def call(method: str, body: Any, timeout: float | None = None) -> Any:
        ctx = SimpleNamespace(peer_id=me, link=SimpleNamespace(remote_address=seen_me_at))
        return await service._rpc_dialback(ctx, body)  # type: ignore[arg-type]

    return call


def _peer(remote: str, call: Any) -> SimpleNamespace:
    return SimpleNamespace(
        link=SimpleNamespace(is_open=True, remote_address=remote), rpc=SimpleNamespace(call=call)
    )


def test_a_lan_neighbour_does_not_outvote_the_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind one NAT with a LAN neighbour and a bootstrap on the internet: the neighbour
    reaches our LAN address, the bootstrap cannot reach us. 1-1 used to make the node public
    (publishing its LAN address, no relay); the peer that sees us from outside decides now."""

    async def fake_fetch(address: str, expected: Any, *, timeout: float) -> None:
        if address == "192.168.1.2:7000":
            return None  # the LAN neighbour gets our record
        raise TimeoutError

    monkeypatch.setattr(autonat, "fetch_record", fake_fetch)
    me = NodeId(b"m" * 32)
    peers = {
        NodeId(b"b" * 32): _peer(  # the bootstrap, on the internet
            "203.0.113.1:7000", _dialback_helper(me, "198.51.100.7:40000")
        ),
        NodeId(b"l" * 32): _peer(  # a LAN neighbour
            "192.168.1.3:7000", _dialback_helper(me, "192.168.1.2:40001")
        ),
    }
    service = NatService(SimpleNamespace(peers=peers))  # type: ignore[arg-type]
    service.state.set_listen(["192.168.1.2:7000"])
    service.state.observe("198.51.100.7:40000", b"b" * 32, now=1)
    service.state.observe("192.168.1.2:40001", b"l" * 32, now=1)
    assert run(service.check()) == "private"
    assert service.state.reachability == "private"


def test_stale_dialback_answers_expire() -> None:
    """A laptop that five helpers reached at the office moves home behind a NAT; the three
    helpers it asks there all fail. Their 5-3 used to keep it public for ever: a check now
    forgets answers older than DIALBACK_MIN_AGE, and it turns private."""
    now = [0.0]
    failing = {
        NodeId(bytes([i]) * 32): _peer(
            f"203.0.{i}.1:7000", lambda *a, **k: _answer({"reached": None, "error": "timeout"})
        )
        for i in (10, 11, 12)
    }
    service = NatService(
        SimpleNamespace(peers=failing),  # type: ignore[arg-type]
        clock=lambda: now[0],
    )
    service.state.set_listen(["192.168.1.2:7000"])
    for i in range(5):  # the office, in the morning
        service.state.dialback(bytes([i]) * 32, True, now=i)
    assert service.state.reachability == "public"
    now[0] = 86400.0  # home, a day later
    for _ in range(3):
        assert run(service.check()) == "private"
        now[0] += 300


async def _answer(value: Any) -> Any:
    return value


# ------------------------------------------------------------------ hole punching


def test_a_punch_offer_to_a_third_party_is_refused_and_syncs_are_bounded() -> None:
    """nat.punch named any addresses and every nat.sync dialled them from our listen port,
    unbounded: a peer could make a node connect anywhere. Now a punch dials only the IP the
    relay saw the peer come from, one at a time, MAX_PUNCH_ATTEMPTS per 10 minutes."""

    async def body() -> None:
        node = _nat_node()
        with (
            _sockets(8, "127.0.0.2", listen=True) as victims,
            _sockets(1, "127.0.0.3", listen=False) as own,
        ):
            third_party = [f"127.0.0.2:{_port(v)}" for v in victims]
            peer_at = f"127.0.0.3:{_port(own[0])}"  # where the relay saw the peer: dial refused
            async with running(node):
                punch = node.punch
                relay = NodeIdentity.generate().node_id
                peer = NodeIdentity.generate().node_id
                ctx = SimpleNamespace(peer_id=peer, link=SimpleNamespace(remote_address="relay:ab"))

                with pytest.raises(RpcError, match="no relay told where this peer comes from"):
                    await punch._rpc_punch(ctx, {"addrs": third_party[:4]})
                punch.note_incoming(relay, peer, "127.0.0.3:40000")
                with pytest.raises(RpcError, match=r"no offered address is at 127\.0\.0\.3"):
                    await punch._rpc_punch(ctx, {"addrs": third_party[:4]})
                with pytest.raises(RpcError, match="no punch arranged"):
                    await punch._rpc_sync(ctx, {})

                async def punch_and_sync() -> str:
                    answer = await punch._rpc_punch(ctx, {"addrs": [peer_at, *third_party[4:7]]})
                    assert isinstance(answer, dict) and isinstance(answer["addrs"], list)
                    try:
                        await punch._rpc_sync(ctx, {})
                    except RpcError as exc:
                        assert exc.code == "punch-refused"
                        return exc.message
                    return "accepted"

                assert await punch_and_sync() == "accepted"  # the legitimate offer
                assert await punch_and_sync() == "busy with punches"  # one at a time
                outcomes = []
                for _ in range(4):
                    await async_eventually(
                        lambda: peer.digest not in getattr(punch, "_answering", set()),
                        what="the punch answered",
                    )
                    outcomes.append(await punch_and_sync())
                assert outcomes[: MAX_PUNCH_ATTEMPTS - 1] == ["accepted"] * (MAX_PUNCH_ATTEMPTS - 1)
                assert set(outcomes[MAX_PUNCH_ATTEMPTS - 1 :]) == {
                    "too many punches lately; try again later"
                }
            for victim in victims:  # nobody at the third party's IP was dialled
                with pytest.raises(BlockingIOError):
                    victim.accept()

    run(body())


# ------------------------------------------------------------------ relays


def test_a_node_public_again_lets_its_reservations_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node that held reservations while private and is then judged public used to keep
    them and, its record naming no relay, re-sign and republish it every RELAY_CHECK_S; now
    it releases them and its record settles (its address, no relay)."""
    monkeypatch.setattr(qnode, "RELAY_CHECK_S", 0.2)  # the same logic, faster

    async def body() -> None:
        relay, hidden = _nat_node(), _nat_node()
        async with running(relay):
            hidden.bootstrap = [(relay.address, relay.node_id)]
            async with running(hidden):
                await _private_behind_relay(relay, hidden)
                hidden.nat.state.forced = "public"  # e.g. new dial-back answers
                hidden._nat_changed()  # what NatService.check does on a change
                await async_eventually(lambda: not hidden.relays.held, what="released")
                record = hidden.record()
                assert record.addresses and not record.relays
                calls = _count_publishes(hidden)
                seq = record.seq
                for _ in range(3):  # what the periodic check does, three times
                    await hidden._keep_relays()
                assert hidden.record().seq == seq
                assert calls == []

    run(body())


def test_one_dialler_cannot_take_a_targets_circuits() -> None:
    """One identity opening 8 relayed links to a private node used to fill the relay's
    max_circuits_per_peer slots to it (the target kept them as spares): every other dialler
    was refused. Now the target keeps one relayed link per peer, the relay at most
    MAX_CIRCUITS_PER_PAIR per dialler and target, and an honest dialler gets through."""

    async def body() -> None:
        relay, hidden, attacker, honest = (_nat_node() for _ in range(4))
        async with running(relay):
            hidden.bootstrap = [(relay.address, relay.node_id)]
            async with running(hidden, attacker, honest):
                await _private_behind_relay(relay, hidden)
                hidden._record = None
                record = hidden.record()
                assert record.relays and not record.addresses

                async def no_punch(link: Any) -> None:  # the attacker never punches
                    return None

                attacker._punch = no_punch  # type: ignore[method-assign]
                # the attacker sits behind a NAT: its record names no address, and only its
                # relay is reachable from it (so no direct link replaces the relayed ones)
                attacker.nat.state.forced = "private"
                attacker._record = None
                real_connect = attacker.links.connect

                async def nat_connect(address: str, *args: Any, **kwargs: Any) -> Any:
                    if address != relay.address:
                        raise LinkError(ErrorCode.PROTOCOL_ERROR, "behind a NAT")
                    return await real_connect(address, *args, **kwargs)

                attacker.links.connect = nat_connect  # type: ignore[method-assign]
                via = record.relays[0]
                first = await attacker.relays.dial_via(via, record, 5.0)
                attacker.links.adopt(first, relay=relay.node_id)
                await asyncio.sleep(0.4)  # past the duplicate grace: a later link is a spare
                # one after the other: the target keeps one relayed link per peer
                for _ in range(3):
                    link = await attacker.relays.dial_via(via, record, 5.0)
                    if link.is_open:
                        with contextlib.suppress(LinkError):  # closed while taken in
                            attacker.links.adopt(link, relay=relay.node_id)
                    try:
                        _, reason, _ = await asyncio.wait_for(asyncio.shield(link.closed), 5.0)
                    except TimeoutError:
                        pytest.fail("the target kept a second relayed link from one peer")
                    assert reason == "already linked through a relay"
                assert first.is_open
                # all at once (within the burst of relay.connect allowed per dialler): the
                # relay lets one dialler hold MAX_CIRCUITS_PER_PAIR circuits to one target
                burst = await asyncio.gather(
                    *(attacker.relays.dial_via(via, record, 5.0) for _ in range(4)),
                    return_exceptions=True,
                )
                refused = [str(r) for r in burst if isinstance(r, LinkError)]
                assert len(refused) >= 4 - (MAX_CIRCUITS_PER_PAIR - 1), burst
                for text in refused:
                    assert "a circuit from this peer to this target is already open" in text
                # and more than CONNECT_BURST at once: refused for asking too often
                flood = await asyncio.gather(
                    *(attacker.relays.dial_via(via, record, 5.0) for _ in range(10)),
                    return_exceptions=True,
                )
                assert any("too many circuits asked for lately" in str(r) for r in flood), flood
                await honest.links.connect_record(record, timeout=5.0)  # not refused
                assert hidden.node_id in honest.links.peers
                relayed_at_hidden = [
                    link
                    for link, via in hidden.links.relayed.items()
                    if link.peer_id == attacker.node_id and link.is_open
                ]
                assert len(relayed_at_hidden) <= 1
                pair = sum(
                    1
                    for circuit in relay.relays.core.circuits.values()
                    if circuit.dialler == attacker.node_id and circuit.target == hidden.node_id
                )
                assert pair <= MAX_CIRCUITS_PER_PAIR

    run(body(), timeout=60)


# ------------------------------------------------------------------ reaching a peer


def test_a_peer_callers_timeout_bounds_every_dial() -> None:
    """PeerCaller.call(timeout=1) used to try each of a record's 16 silent addresses with the
    full timeout (16 s and more); one deadline now covers the lookup and every dial."""

    async def body() -> None:
        node = _nat_node()
        with _sockets(16, "127.0.0.1", listen=True) as silent:
            async with running(node):
                ident = NodeIdentity.generate()
                record = PeerRecord.create(
                    ident, [f"127.0.0.1:{_port(s)}" for s in silent], seq=1, now=time.time()
                )

                async def resolve_peer(node_id: Any, **kwargs: Any) -> PeerRecord:
                    return record

                node.dht.resolve_peer = resolve_peer  # type: ignore[method-assign]
                caller = PeerCaller(node.identity, node.links, node.dht, node.handlers)
                with pytest.raises(Unreachable) as caught:
                    await caller.call(ident.node_id.digest, "qmp.ping", b"x", timeout=1.0)
                # the deadline ended it: the old code went through all 16 addresses and said
                # "cannot reach ..." with each one's failure
                assert "cannot reach" not in str(caught.value), caught.value

    run(body(), timeout=60)
