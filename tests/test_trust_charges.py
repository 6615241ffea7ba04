"""Failed handshakes are charged to a peer's score only when they prove who is to blame
(``qiz.qmp.manager.handshake_blame``): a node dialled at an address its own signed record names
that cannot prove the record's key, or a proven peer that then breaks the link protocol; never
the id an unproven INIT claims, a dial by id alone, or a node that is merely down.

Real nodes on 127.0.0.1 (the dialler a whole :class:`~qiz.node.Node` with its scores), real
handshakes; the pure rule is checked on its own too."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from qiz.compute.service import ComputeConfig
from qiz.identity import NodeIdentity, PeerRecord
from qiz.node import Node
from qiz.qmp.errors import ErrorCode
from qiz.qmp.manager import handshake_blame
from qiz.qmp.transport import LinkError, dial

from .helpers import HOST, client, make_node, record_of, run
from .helpers import async_eventually as eventually

pytestmark = pytest.mark.timeout(120)


def scored_node(**kwargs: Any) -> Node:
    """A node that keeps peer scores (its compute service, without worker processes)."""
    return make_node(compute=ComputeConfig(worker=False, warm_up=False), **kwargs)


def record_at(identity: NodeIdentity, *addresses: str) -> PeerRecord:
    now = time.time()
    return PeerRecord.create(identity, list(addresses), seq=int(now * 1000), now=now)


def charges(node: Node, identity: NodeIdentity) -> list[dict]:
    """The trail of ``identity``'s handshake_failed events at ``node``."""
    assert node.compute is not None
    trail = node.compute.scores.explain(identity.node_id.digest, trail=32)["trail"]
    return [event for event in trail if event["reason"] == "handshake_failed"]


def free_address() -> str:
    """An address nothing listens on (a port just released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return f"{HOST}:{sock.getsockname()[1]}"


# ----------------------------------------------------------------------------- the rule


def test_only_a_dial_to_a_signed_record_at_an_address_it_names_can_be_charged() -> None:
    x = NodeIdentity.generate()
    address = "93.184.216.34:4000"  # a global address (a pure function: nothing is dialled)
    lan = ("10.0.0.7:4000", "192.168.1.7:4000", "172.17.0.1:4000", "[fe80::1]:4000")
    record = record_at(x, address, "127.0.0.1:4000", *lan)
    wrong_key = (ErrorCode.AUTHENTICATION_FAILED, "INIT mac1 is wrong", True)
    failed = LinkError(ErrorCode.AUTHENTICATION_FAILED, "link closed")
    assert handshake_blame(address, record, wrong_key, failed) is not None
    assert handshake_blame("127.0.0.1:4000", record, wrong_key, failed) is not None
    # addresses a stranger may hold on the dialler's own network are never charged
    for private in lan:
        assert handshake_blame(private, record, wrong_key, failed) is None
    # the same failure, but the address or the id came from someone else
    assert handshake_blame("93.184.216.35:4000", record, wrong_key, failed) is None
    assert handshake_blame(address, x.node_id, wrong_key, failed) is None
    assert handshake_blame(address, None, wrong_key, failed) is None
    # what we found wrong in its bytes is charged; what an honest node says or does is not
    for code in (
        ErrorCode.PROTOCOL_ERROR,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
    ):
        assert handshake_blame(address, record, (code, "bad", False), failed) is not None
    for code in (
        ErrorCode.BUSY,
        ErrorCode.REFUSED,
        ErrorCode.SHUTDOWN,
        ErrorCode.HANDSHAKE_TIMEOUT,
        ErrorCode.NORMAL_CLOSE,
        ErrorCode.BUFFER_LIMIT,
    ):
        for by_peer in (False, True):
            assert handshake_blame(address, record, (code, "x", by_peer), failed) is None
    # it complaining about our record is not its fault
    said = (ErrorCode.BAD_PEER_RECORD, "initiator's record: expired", True)
    assert handshake_blame(address, record, said, failed) is None
    # no connection: down or unreachable is never charged; a key its record names that our
    # side cannot use is its signer's doing
    unreachable = LinkError(ErrorCode.PROTOCOL_ERROR, "cannot reach: connection refused")
    assert handshake_blame(address, record, None, unreachable) is None
    bad_key = LinkError(ErrorCode.AUTHENTICATION_FAILED, "cannot dial: unusable X-Wing key")
    assert handshake_blame(address, record, None, bad_key) is not None


# ----------------------------------------------------------------------------- dials


def test_a_record_whose_address_answers_as_another_node_costs_its_signer_only() -> None:
    async def scenario() -> None:
        a, y = scored_node(), make_node()
        x = NodeIdentity.generate()  # signs a record naming y's address; x runs nowhere
        await a.start()
        await y.start()
        try:
            lying = record_at(x, y.address)
            with pytest.raises(LinkError, match="mac1"):
                await a.links.connect_record(lying, timeout=5.0)
            (charge,) = charges(a, x)
            assert y.address in charge["detail"] and "authentication" in charge["detail"]
            assert charges(a, y.identity) == [], "the node that answered did nothing wrong"
            assert a.compute is not None
            assert a.compute.scores.explain(x.node_id.digest)["reasons"]["handshake_failed"]

            # by id alone: the address is not x's word, whoever answers there proves nothing
            with pytest.raises(LinkError, match="expected"):
                await a.links.connect(y.address, x.node_id, timeout=5.0)
            # x's record, but an address it does not name (someone else's hint)
            elsewhere = record_at(x, free_address())
            with pytest.raises(LinkError):
                await a.links.connect(y.address, elsewhere, timeout=5.0)
            # an address its record names where nothing listens: down, not lying
            down = NodeIdentity.generate()
            with pytest.raises(LinkError, match="cannot reach"):
                await a.links.connect_record(record_at(down, free_address()), timeout=5.0)
            assert len(charges(a, x)) == 1 and charges(a, down) == []
            assert charges(a, y.identity) == []

            # y's own record: the link comes up, nobody is charged
            endpoint = await a.links.connect_record(y.record(), timeout=5.0)
            assert endpoint.link.peer_id == y.node_id
            assert charges(a, y.identity) == []
        finally:
            await y.stop()
            await a.stop()

    run(scenario(), timeout=60)


# ----------------------------------------------------------------------------- inbound


def test_an_inbound_handshake_claiming_someone_s_record_does_not_cost_them() -> None:
    async def scenario() -> None:
        n = scored_node()
        await n.start()
        try:
            x = NodeIdentity.generate()  # innocent: its public record is all the forger has
            forger = NodeIdentity.generate()
            before = n.links.listener.handshakes_failed
            for _ in range(3):
                # n checks x's record's signature (it is x's), answers to x's key, and the
                # forger, without it, cannot finish: the claim was never proven
                with pytest.raises(LinkError):
                    await dial(n.address, forger, record_of(x), expected=n.record(), timeout=5.0)
            await eventually(
                lambda: n.links.listener.handshakes_failed >= before + 3,
                what="n to count the failed handshakes",
            )
            assert charges(n, x) == [] and charges(n, forger) == []
            assert n.compute is not None
            assert n.compute.scores.explain(x.node_id.digest)["reasons"] == {}
            assert x.node_id not in n.links.peers

            # a peer that proved its id and then breaks the link protocol is charged
            peer = NodeIdentity.generate()
            link, _rpc = await client(n.address, peer, expected=n.record())
            await eventually(lambda: peer.node_id in n.links.peers, what="n to take the link")
            assert link.transport is not None
            link.transport.write(b"\xff\x00\x00\x08" + bytes(8))  # no QMP frame kind 255
            await eventually(lambda: charges(n, peer), what="n to charge the peer")
            (charge,) = charges(n, peer)
            assert "broke the link protocol" in charge["detail"], charge
            link.close()
        finally:
            await n.stop()

    run(scenario(), timeout=60)
