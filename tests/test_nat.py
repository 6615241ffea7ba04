"""Observed addresses and reachability (docs/nat.md §1-§2): the sans-IO NatState on its own,
then real nodes on loopback telling each other where they see each other and dialling each
other back."""

from __future__ import annotations

import errno
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.qmp.autonat import DIALBACK_PER_PEER, NatConfig, NatConfigError
from qiz.qmp.interfaces import listen_addresses
from qiz.qmp.observed import MAX_OBSERVATIONS, NatState
from qiz.qmp.rpc import RpcError

from .helpers import async_eventually, make_node, run, running

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_one_observer_never_decides_an_address_when_there_are_several() -> None:
    state = NatState(["192.168.1.2:7000"])
    state.observe("203.0.113.5:7000", A, now=1)
    assert state.public_addresses() == ["203.0.113.5:7000"]  # the only observer so far
    state.observe("198.51.100.9:4444", B, now=2)  # a second observer disagrees
    assert state.public_addresses() == []
    state.observe("203.0.113.5:7000", C, now=3)
    assert state.public_addresses() == ["203.0.113.5:7000"]


def test_mapping_from_dialled_connections() -> None:
    state = NatState(["192.168.1.2:7000"])
    assert state.mapping == "unknown"
    state.observe("203.0.113.5:7000", A, local="192.168.1.2:7000", now=1)
    assert state.mapping == "port-preserving"
    state.observe("203.0.113.5:51000", B, local="192.168.1.2:7000", now=2)
    assert state.mapping == "unknown"  # one against one: no verdict
    state.observe("203.0.113.5:52000", C, local="192.168.1.2:7001", now=3)
    assert state.mapping == "port-changing"  # most observers saw another port
    for _ in range(100):  # one peer reporting again and again still holds one vote
        state.observe("203.0.113.5:7000", A, local="192.168.1.2:7000", now=4)
    assert state.mapping == "port-changing" and len(state.observations) == 3
    direct = NatState(["10.77.0.2:7000"])
    direct.observe("10.77.0.2:40000", A, local="10.77.0.2:40000", now=1)
    assert direct.mapping == "none"


def test_reachability_is_a_vote_of_the_peers_latest_answers() -> None:
    state = NatState()
    assert state.reachability == "unknown"
    state.dialback(A, False, now=1)
    assert state.reachability == "private"  # the only helper could not reach us
    state.dialback(B, True, now=2)
    assert state.reachability == "public"  # a tie goes to what a dial proved possible
    state.dialback(C, False, now=3)
    assert state.reachability == "private"  # one reached, two failed: one liar outvoted
    state.dialback(A, True, now=4)  # a peer's newest answer replaces its older one
    assert state.reachability == "public"
    assert len(state.dialbacks) == 3


@given(st.lists(st.tuples(st.text(max_size=30), st.binary(min_size=1, max_size=4)), max_size=200))
def test_garbage_observations_are_ignored_and_memory_is_bounded(reports) -> None:
    state = NatState()
    for seen, who in reports:
        state.observe(seen, who, now=0)
    assert len(state.observations) <= MAX_OBSERVATIONS
    snapshot = state.snapshot()
    assert snapshot["reachability"] == "unknown"
    for address in snapshot["public_addresses"]:
        assert ":" in address


def test_wildcard_listen_publishes_interface_addresses() -> None:
    addresses = listen_addresses("0.0.0.0:7450")
    assert addresses and all(a.endswith(":7450") and not a.startswith("0.0.0.0") for a in addresses)
    assert listen_addresses("127.0.0.1:7450") == ["127.0.0.1:7450"]


def test_linked_nodes_learn_where_they_are_seen_and_are_dialled_back() -> None:
    async def body() -> None:
        nodes = [make_node(nat=NatConfig(check_every=3600)) for _ in range(3)]
        async with running(*nodes):
            first = nodes[0]
            for other in nodes[1:]:
                await other.connect(first.address)
            # each link made both sides tell the other where they see it
            await async_eventually(lambda: len(first.nat.state.observations) >= 2)
            await async_eventually(lambda: all(n.nat.state.observations for n in nodes[1:]))
            dialler = nodes[1]
            seen = next(iter(dialler.nat.state.observations.values()))
            assert seen.seen.startswith("127.0.0.1:") and seen.local == seen.seen
            assert dialler.nat.state.mapping == "none"  # no NAT between loopback peers
            answer = await first.api.netcheck()
            assert answer["reachability"] == "public"
            assert answer["published"] == [first.address]
            status = first.status()
            assert status["nat"]["reachability"] == "public"
            assert status["nat"]["links_direct"] == 2

    run(body())


def test_a_node_nobody_can_dial_turns_private_and_publishes_no_address() -> None:
    async def body() -> None:
        nodes = [make_node(nat=NatConfig(check_every=3600)) for _ in range(3)]
        async with running(*nodes):
            lonely = nodes[0]
            for other in nodes[1:]:
                await lonely.connect(other.address)
            await async_eventually(lambda: len(lonely.links.peers) == 2)
            # pretend it listens where nothing answers: a port bound but never listened on
            with socket.socket() as dead:
                dead.bind(("127.0.0.1", 0))
                port = dead.getsockname()[1]
                lonely.nat.state.set_listen([f"127.0.0.1:{port}"])
                assert await lonely.nat.check() == "private"
            assert lonely.record().addresses == ()
            assert lonely.status()["nat"]["published"] == []

    run(body())


def test_dialback_never_dials_a_third_party_and_is_rate_limited() -> None:
    async def body() -> None:
        asker, helper = (
            make_node(nat=NatConfig(autonat=False)),
            make_node(nat=NatConfig(autonat=False)),
        )
        async with running(asker, helper):
            rpc = await asker.connect(helper.address)
            answer = await rpc.call("nat.dialback", {"addrs": ["192.0.2.1:80"]})
            assert answer == {
                "reached": None,
                "error": "no address at the IP this node sees you at",
            }
            with pytest.raises(RpcError, match="bad-request"):
                await rpc.call("nat.dialback", {"addrs": ["a"] * 5})
            # a listener that is another node does not count as reaching the asker
            answer = await rpc.call("nat.dialback", {"addrs": [helper.address]})
            assert answer["reached"] is None and "expected" in answer["error"]
            for _ in range(DIALBACK_PER_PEER - 2):
                await rpc.call("nat.dialback", {"addrs": [asker.address]})
            with pytest.raises(RpcError, match="dialback-refused: too many"):
                await rpc.call("nat.dialback", {"addrs": [asker.address]})

    run(body())


def test_nat_config_table_is_checked_key_by_key() -> None:
    assert NatConfig.from_table({}) == NatConfig()
    assert NatConfig.from_table({"autonat": False, "check_every": 60}).check_every == 60.0
    assert NatConfig.from_table({"reachability": "private"}).reachability == "private"
    for table, reason in (
        ({"autonat": "yes"}, "nat.autonat must be true or false"),
        ({"check_every": 1}, "nat.check_every must be a number of seconds from 10"),
        ({"check_every": True}, "nat.check_every"),
        ({"chek_every": 60}, "has no key 'chek_every'"),
        ({"reachability": "behind-nat"}, "nat.reachability must be"),
        ([], r"\[nat\] must be a table"),
    ):
        with pytest.raises(NatConfigError, match=reason):
            NatConfig.from_table(table)


def test_a_second_node_on_a_taken_port_is_refused_despite_reuse_port() -> None:
    async def body() -> None:
        first = make_node(nat=NatConfig(autonat=False))
        async with running(first):
            port = int(first.address.rsplit(":", 1)[1])
            second = make_node(nat=NatConfig(autonat=False), listen=f"127.0.0.1:{port}")
            with pytest.raises(OSError) as caught:
                await second.start()
            assert caught.value.errno == errno.EADDRINUSE

    run(body())


def test_nodes_link_over_ipv6_and_a_wildcard_listener_publishes_real_addresses() -> None:
    async def body() -> None:
        six = make_node(nat=NatConfig(autonat=False), listen="[::1]:0")
        wild = make_node(nat=NatConfig(autonat=False), listen="[::]:0")
        async with running(six, wild):
            assert six.address.startswith("[::1]:")
            published = wild.record().addresses
            assert published and not any(a.startswith("[::]") for a in published)
            port = wild.address.rsplit(":", 1)[1]
            rpc = await six.connect(f"[::1]:{port}")
            assert await rpc.call("qmp.ping", b"v6") == b"v6"
            assert rpc.link.remote_address == f"[::1]:{port}"

    run(body())
