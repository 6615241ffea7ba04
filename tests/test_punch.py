"""Hole punching's parts (docs/nat.md §5) on loopback: which addresses a node offers, when a
pair is tried again, and TCP simultaneous open from two listening ports. The punch through real
NATs is in tests/test_netns_nat.py."""

from __future__ import annotations

import asyncio
import socket

import pytest

from qiz.qmp.observed import NatState
from qiz.qmp.punch import (
    MAX_PUNCH_ADDRESSES,
    PUNCH_RETRY_AFTER,
    PunchBook,
    PunchOutcome,
    _checked_addresses,
    punch_addresses,
    simultaneous_connect,
)

from .helpers import run

A, B = b"a" * 32, b"b" * 32


def test_offered_addresses_are_public_ips_at_the_listen_port_unless_ports_change() -> None:
    state = NatState(["192.168.1.2:7000"])
    state.observe("203.0.113.5:51234", A, local="192.168.1.2:51234", now=1)
    assert state.mapping == "port-preserving"
    assert punch_addresses(state, ["192.168.1.2:7000"]) == ["203.0.113.5:7000"]
    state.observe("203.0.113.5:60000", B, local="192.168.1.2:51235", now=2)
    state.observe("203.0.113.5:60001", b"c" * 32, local="192.168.1.2:51236", now=3)
    assert state.mapping == "port-changing"
    assert punch_addresses(state, ["192.168.1.2:7000"]) == []  # a symmetric NAT: no punch


def test_a_failed_pair_waits_before_it_is_tried_again() -> None:
    book = PunchBook()
    assert book.should_try(A, 0)
    book.start(A)
    assert not book.should_try(A, 0)  # one punch at a time per peer
    book.finish(A, PunchOutcome(False, 0, "timeout"))
    assert not book.should_try(A, PUNCH_RETRY_AFTER - 1)
    assert book.should_try(A, PUNCH_RETRY_AFTER)
    assert book.counters == {"punch_attempts": 1, "punch_direct": 0, "punch_failed": 1}


def test_offers_from_a_peer_are_checked() -> None:
    for bad in (None, "1.2.3.4:5", ["1.2.3.4:5"] * (MAX_PUNCH_ADDRESSES + 1), [5], ["x:1"]):
        with pytest.raises(ValueError):
            _checked_addresses(bad)


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_punch_is_dialled_from_the_listen_port_while_it_listens() -> None:
    """What a NAT maps for a punch is the listen port: the dialling socket shares it with the
    listener (SO_REUSEPORT). On one host the other side's listener answers the SYN at once, so
    this is an ordinary connect; the simultaneous open through two NATs is proven in
    tests/test_netns_topology.py and tests/test_netns_nat.py."""

    async def body() -> None:
        left, right = _listener(), _listener()
        try:
            left_at = f"127.0.0.1:{left.getsockname()[1]}"
            right_at = f"127.0.0.1:{right.getsockname()[1]}"
            one = await simultaneous_connect(["[::1]:9", right_at], left_at, timeout=5)
            try:
                assert one.getsockname() == left.getsockname()  # from the listen port
                assert one.getpeername() == right.getsockname()
                # asyncio turns Nagle off on the link's transport only for a TCP-typed socket
                assert one.proto == socket.IPPROTO_TCP
                accepted, _ = right.accept()
                with accepted:
                    loop = asyncio.get_running_loop()
                    await loop.sock_sendall(one, b"hello")
                    assert accepted.recv(5) == b"hello"
            finally:
                one.close()
        finally:
            left.close()
            right.close()

    run(body())


def test_a_punch_to_nowhere_fails_with_the_reason() -> None:
    async def body() -> None:
        mine = _listener()
        with socket.socket() as dead:
            dead.bind(("127.0.0.1", 0))
            target = f"127.0.0.1:{dead.getsockname()[1]}"
            try:
                with pytest.raises(OSError):
                    await simultaneous_connect(
                        [target], f"127.0.0.1:{mine.getsockname()[1]}", timeout=2
                    )
            finally:
                mine.close()

    run(body())
