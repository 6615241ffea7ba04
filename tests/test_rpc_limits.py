"""Per-peer rate limits on every RPC method (qiz/qmp/rpc_limits.py): a bucket per (peer,
method), refilled with time; a request over it is answered ``busy`` without running, and
neither the peer's other methods nor other peers pay for it. Then over a real QMP link."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.qmp.rpc import RpcError
from qiz.qmp.rpc_limits import METHOD_RATES, RPC_BURST, RPC_RATE, RpcMeter

from .helpers import manager, run, stop_all

A, B = b"a" * 32, b"b" * 32


def test_a_burst_then_the_rate_per_peer_and_method() -> None:
    meter = RpcMeter()
    allowed = sum(meter.allow(A, "dht/1.find_node", 0.0) for _ in range(int(RPC_BURST) + 50))
    assert allowed == RPC_BURST and meter.refused == 50
    assert meter.allow(A, "job.offer", 0.0)  # another method: its own bucket
    assert meter.allow(B, "dht/1.find_node", 0.0)  # another peer: its own bucket
    assert not meter.allow(A, "dht/1.find_node", 0.0)
    assert meter.allow(A, "dht/1.find_node", 1.0 / RPC_RATE)  # refilled
    pieces = METHOD_RATES["store.put"][1]
    assert sum(meter.allow(A, "store.put", 5.0) for _ in range(int(pieces) + 9)) == pieces


@given(st.lists(st.floats(0, 0.002), min_size=1, max_size=900))
def test_exactly_a_token_bucket_per_peer_and_method(gaps: list[float]) -> None:
    """Against a reference bucket: allowed while it holds a token, refused otherwise."""
    meter, now, tokens, last = RpcMeter(), 0.0, RPC_BURST, 0.0
    for gap in gaps:
        now += gap
        tokens = min(RPC_BURST, tokens + (now - last) * RPC_RATE)
        last = now
        expected = tokens >= 1.0
        tokens -= expected
        assert meter.allow(A, "job.offer", now) == expected
    assert meter.allow(B, "job.offer", now)  # another peer's bucket is full


def test_a_peer_flooding_a_method_over_a_link_is_refused_and_others_go_on() -> None:
    async def scenario() -> None:
        a = Node(NodeIdentity.generate(), config=manager())
        b = Node(NodeIdentity.generate(), config=manager())
        await a.start()
        await b.start()
        try:
            rpc = await a.links.connect(b.address, b.node_id)
            b.links.rpc_clock = lambda: 1000.0  # time stands still: no refill during the test
            refused = 0
            for _ in range(int(RPC_BURST) + 40):
                try:
                    await rpc.call("node.info", {})
                except RpcError as exc:
                    assert exc.code == "busy", exc
                    assert "node.info requests/s from one peer" in exc.message
                    refused += 1
            assert refused == 40
            assert b.links.counters_snapshot()["rpc_rate_limited"] == refused
            assert await rpc.call("qmp.ping", 7) == 7  # another method still answers
        finally:
            await stop_all([a, b])

    run(scenario(), timeout=60)


@pytest.mark.parametrize("method", sorted(METHOD_RATES))
def test_special_rates_are_sane(method: str) -> None:
    rate, burst = METHOD_RATES[method]
    assert 0 < rate <= burst
