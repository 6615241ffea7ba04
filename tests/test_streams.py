"""Stream flow control (docs/nat.md §4.1): the sans-IO credit account of qiz.qmp.circuit, and
the stream multiplexer of qiz.qmp.streams on real QMP links."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from qiz import wire
from qiz.events import EventBus
from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.circuit import (
    CIRCUIT_WINDOW,
    MAX_STREAM_CHUNK,
    StreamBufferFull,
    StreamEnd,
    StreamProtocolError,
)
from qiz.qmp.connection import Connection
from qiz.qmp.cookie import CookieAuthority
from qiz.qmp.manager import LinkManager
from qiz.qmp.rpc import CallContext, RpcEndpoint
from qiz.qmp.streams import MAX_STREAMS_PER_LINK, CircuitTransport, StreamError, StreamMux
from qiz.qmp.transport import Link
from qiz.tasks import TaskOwner

from .helpers import HOST, manager, qmp, record_of, run
from .helpers import async_eventually as eventually

# ------------------------------------------------------------------ the credit account


def test_a_writer_sends_one_window_then_waits_for_credit() -> None:
    end = StreamEnd()
    chunks = end.write(b"x" * (CIRCUIT_WINDOW + 1000))
    assert sum(map(len, chunks)) == CIRCUIT_WINDOW
    assert all(len(c) <= MAX_STREAM_CHUNK for c in chunks)
    assert end.buffered == 1000 and end.send_credit == 0
    assert end.write(b"y") == []
    more = end.on_credit(600)
    assert b"".join(more) == b"x" * 600
    assert end.buffered == 401


def test_data_beyond_the_credit_granted_is_a_protocol_error() -> None:
    end = StreamEnd()
    for _ in range(CIRCUIT_WINDOW // MAX_STREAM_CHUNK):
        end.on_data(MAX_STREAM_CHUNK)
    with pytest.raises(StreamProtocolError, match="beyond"):
        end.on_data(1)


@pytest.mark.parametrize("size", [0, -1, MAX_STREAM_CHUNK + 1])
def test_chunks_out_of_range_are_protocol_errors(size: int) -> None:
    with pytest.raises(StreamProtocolError):
        StreamEnd().on_data(size)


@pytest.mark.parametrize("credit", [0, -5, 2**31, True, "1"])
def test_bad_credit_is_a_protocol_error(credit: object) -> None:
    with pytest.raises(StreamProtocolError):
        StreamEnd().on_credit(credit)  # type: ignore[arg-type]


def test_credit_is_granted_once_half_a_window_is_consumed() -> None:
    end = StreamEnd()
    end.on_data(MAX_STREAM_CHUNK)
    assert end.consumed(MAX_STREAM_CHUNK) == 0
    end.on_data(MAX_STREAM_CHUNK)
    assert end.consumed(MAX_STREAM_CHUNK) == 2 * MAX_STREAM_CHUNK
    assert end.recv_allowance == CIRCUIT_WINDOW
    with pytest.raises(ValueError):
        end.consumed(1)  # nothing received is left unconsumed


def test_the_send_buffer_is_bounded() -> None:
    end = StreamEnd(max_buffer=10)
    end.write(b"a" * CIRCUIT_WINDOW)  # sent at once: the initial credit
    end.write(b"b" * 10)  # buffered
    with pytest.raises(StreamBufferFull):
        end.write(b"c")


def test_a_closed_end_sends_and_grants_nothing() -> None:
    end = StreamEnd()
    end.write(b"a" * (CIRCUIT_WINDOW + 5))
    end.close()
    assert end.buffered == 0
    assert end.write(b"more") == []
    end.on_data(10)
    assert end.consumed(10) == 0


@given(st.lists(st.integers(1, 300_000), max_size=20))
def test_chunks_reassemble_to_what_was_written(sizes: list[int]) -> None:
    end = StreamEnd(max_buffer=10**8)
    written, sent = bytearray(), bytearray()

    def take(chunks: list[bytes]) -> None:
        for chunk in chunks:
            assert 0 < len(chunk) <= MAX_STREAM_CHUNK
            sent.extend(chunk)

    for i, size in enumerate(sizes):
        data = bytes([i % 256]) * size
        written += data
        take(end.write(data))
    while end.buffered:  # the receiver consumes everything and grants it back
        take(end.on_credit(CIRCUIT_WINDOW - end.send_credit))
    assert bytes(sent) == bytes(written)


def test_credit_beyond_the_window_is_a_protocol_error() -> None:
    end = StreamEnd()
    end.write(b"a" * 1000)
    end.on_credit(1000)  # back to a full window
    with pytest.raises(StreamProtocolError, match="beyond the window"):
        end.on_credit(1)


class TwoEnds(RuleBasedStateMachine):
    """Two honest ends joined by two in-order pipes: whatever they write, read and credit, no
    end ever sees data beyond what it granted, buffers stay bounded, and bytes arrive intact
    and in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ends = [
            StreamEnd(max_buffer=4 * CIRCUIT_WINDOW),
            StreamEnd(max_buffer=4 * CIRCUIT_WINDOW),
        ]
        # messages in flight towards end i: ("data", bytes) or ("credit", n)
        self.pipes: list[deque[tuple[str, object]]] = [deque(), deque()]
        self.written = [bytearray(), bytearray()]  # by end i
        self.received = [bytearray(), bytearray()]  # delivered to end i, not yet consumed
        self.read = [bytearray(), bytearray()]  # consumed by end i
        self.counter = 0

    def _send(self, sender: int, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.pipes[1 - sender].append(("data", chunk))

    @rule(sender=st.integers(0, 1), size=st.integers(1, 200_000))
    def write(self, sender: int, size: int) -> None:
        end = self.ends[sender]
        if end.buffered + size - end.send_credit > end.max_buffer:
            with pytest.raises(StreamBufferFull):
                end.write(b"z" * size)
            return
        self.counter += 1
        data = bytes([self.counter % 256]) * size
        self.written[sender] += data
        self._send(sender, end.write(data))

    @precondition(lambda self: self.pipes[0] or self.pipes[1])
    @rule(to=st.integers(0, 1))
    def deliver(self, to: int) -> None:
        if not self.pipes[to]:
            return
        kind, value = self.pipes[to].popleft()
        end = self.ends[to]
        if kind == "data":
            assert isinstance(value, bytes)
            end.on_data(len(value))  # an honest peer never raises here
            self.received[to] += value
        else:
            assert isinstance(value, int)
            self._send(to, end.on_credit(value))

    @rule(reader=st.integers(0, 1), size=st.integers(0, 200_000))
    def consume(self, reader: int, size: int) -> None:
        size = min(size, len(self.received[reader]))
        self.read[reader] += self.received[reader][:size]
        del self.received[reader][:size]
        grant = self.ends[reader].consumed(size)
        if grant:
            self.pipes[1 - reader].append(("credit", grant))

    @invariant()
    def within_credit(self) -> None:
        for i in (0, 1):
            in_flight = sum(len(v) for k, v in self.pipes[i] if k == "data")  # type: ignore[arg-type]
            end = self.ends[i]
            assert in_flight <= end.recv_allowance
            assert end.unconsumed + in_flight <= CIRCUIT_WINDOW
            assert end.buffered <= end.max_buffer

    @invariant()
    def in_order(self) -> None:
        for i in (0, 1):
            got = bytes(self.read[1 - i] + self.received[1 - i])
            assert bytes(self.written[i]).startswith(got)


TestTwoEnds = TwoEnds.TestCase
TestTwoEnds.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# ------------------------------------------------------------------ streams on real links


def bare_manager() -> LinkManager:
    identity = NodeIdentity.generate()
    record = record_of(identity)

    async def echo(ctx: CallContext, body: Any) -> Any:
        return body

    return LinkManager(
        identity, lambda: record, {"qmp.ping": echo}, config=manager(), events=EventBus()
    )


async def linked_pair() -> tuple[LinkManager, LinkManager, RpcEndpoint, RpcEndpoint]:
    a, b = bare_manager(), bare_manager()
    await a.start(f"{HOST}:0")
    await b.start(f"{HOST}:0")
    rpc_a = await a.connect(b.listener.address, b.identity.node_id)
    await eventually(lambda: a.identity.node_id in b.peers, what="B takes the link in")
    return a, b, rpc_a, b.peers[a.identity.node_id].rpc


def qmp_over(transport: CircuitTransport, conn: Connection) -> Link:
    link = Link(conn)
    link.remote_address = "relay:test"
    transport.set_protocol(link)
    link.connection_made(transport)
    return link


async def inner_link_pair(
    rpc_a: RpcEndpoint, rpc_b: RpcEndpoint
) -> tuple[Link, Link, CircuitTransport, CircuitTransport]:
    """A QMP link between two fresh identities over one stream of the A-B link."""
    c, d = NodeIdentity.generate(), NodeIdentity.generate()
    d_record: PeerRecord = record_of(d)
    t_a, t_b = CircuitTransport(rpc_a.streams), CircuitTransport(rpc_b.streams)
    t_b.accept(t_a.open())
    now = rpc_a.link.clock()
    responder = Connection.responder(
        d,
        d_record,
        cookies=CookieAuthority(d.xwing_public.raw, now=now),
        peer_address="",
        now=now,
        config=qmp(),
    )
    link_d = qmp_over(t_b, responder)
    initiator = Connection.initiator(c, record_of(c), expected=d_record, now=now, config=qmp())
    link_c = qmp_over(t_a, initiator)
    await link_c.wait_established(10)
    await link_d.wait_established(10)
    return link_c, link_d, t_a, t_b


def test_a_qmp_link_runs_over_a_stream_and_carries_8_mib_intact() -> None:
    async def scenario() -> None:
        a, b, rpc_a, rpc_b = await linked_pair()
        try:
            link_c, link_d, t_a, _t_b = await inner_link_pair(rpc_a, rpc_b)
            assert link_c.remote_address == "relay:test"
            assert link_c.transport is t_a and t_a.get_extra_info("peername") is None
            await link_c.ping()
            blob = os.urandom(8 * 1024 * 1024)
            piece = 200 * 1024

            async def send() -> None:
                for i in range(0, len(blob), piece):
                    await link_c.send(blob[i : i + piece])

            async def receive() -> bytes:
                got = bytearray()
                while len(got) < len(blob):
                    got += await link_d.recv()
                return bytes(got)

            _, got = await asyncio.gather(send(), receive())
            assert got == blob
            # credit bounded what waited on the outer links
            assert rpc_a.streams.peak_queued <= 2 * CIRCUIT_WINDOW + 4096
            # closing the inner link closes the stream; the outer link stays
            link_c.close()
            await asyncio.wait_for(link_d.wait_closed(), 10)
            assert not rpc_a.streams.streams and not rpc_b.streams.streams
            assert rpc_a.link.is_open
            assert await rpc_a.call("qmp.ping", 7) == 7
        finally:
            await a.close()
            await b.close()

    run(scenario(), timeout=60)


def test_protocol_errors_close_the_stream_never_the_link() -> None:
    async def scenario() -> None:
        a, b, rpc_a, rpc_b = await linked_pair()
        try:
            link_c, link_d, t_a, t_b = await inner_link_pair(rpc_a, rpc_b)
            sid = t_a.sid
            assert sid is not None
            # B's side (as if malicious) sends data beyond the credit A granted; A's reader
            # is paused, so the junk is held, not parsed
            t_a.pause_reading()
            for _ in range(CIRCUIT_WINDOW // MAX_STREAM_CHUNK + 1):
                await rpc_b.link.send(wire.encode([4, sid, b"x" * MAX_STREAM_CHUNK]))
            await asyncio.wait_for(link_c.wait_closed(), 10)
            assert t_a.close_code == "protocol"
            await asyncio.wait_for(link_d.wait_closed(), 10)
            assert t_b.close_code == "protocol"
            # stray and malformed stream messages: refused or dropped, the link carries on
            for message in (
                [4, 999, b"data"],
                [5, 999, 10],
                [6, 999, "normal", ""],
                [4, 2, b""],
                [5, 2, 0],
                [6, 2, 5, None],
            ):
                await rpc_b.link.send(wire.encode(message))
            assert await rpc_a.call("qmp.ping", "still") == "still"
            assert await rpc_b.call("qmp.ping", "up") == "up"
            assert rpc_a.link.is_open and rpc_b.link.is_open
        finally:
            await a.close()
            await b.close()

    run(scenario(), timeout=60)


def test_streams_per_link_are_bounded_and_ids_have_the_opener_parity() -> None:
    async def scenario() -> None:
        a, b, rpc_a, rpc_b = await linked_pair()
        try:
            opened = [CircuitTransport(rpc_a.streams).open() for _ in range(MAX_STREAMS_PER_LINK)]
            assert all(sid % 2 == 0 for sid in opened)  # A dialled: A is the QMP initiator
            with pytest.raises(StreamError, match="already open"):
                CircuitTransport(rpc_a.streams).open()
            with pytest.raises(StreamError, match="not the peer's"):
                CircuitTransport(rpc_b.streams).accept(1)
            t = CircuitTransport(rpc_b.streams)
            t.accept(0)
            assert t.open() % 2 == 1
            with pytest.raises(StreamError, match="already open"):
                CircuitTransport(rpc_b.streams).accept(0)
            # the link closing ends every stream
            rpc_a.link.close()
            assert not rpc_a.streams.streams
        finally:
            await a.close()
            await b.close()

    run(scenario(), timeout=60)


# ------------------------------------------------------------------ hostile stream messages


class FakeConn:
    is_initiator = True


class FakeLink:
    """Just what a StreamMux uses of a link: it takes every message at once."""

    def __init__(self) -> None:
        self.conn = FakeConn()
        self.is_open = True
        self.sent: list[list] = []

    def add_close_listener(self, listener: object) -> None:
        pass

    def send_nowait(self, data: bytes) -> bool:
        self.sent.append(wire.decode(data))
        return True


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


values = st.one_of(
    st.binary(max_size=70_000),
    st.integers(-(2**40), 2**40),
    st.text(max_size=300),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
messages = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([4, 5]), st.integers(-3, 8), values).map(list),
        st.tuples(st.just(6), st.integers(-3, 8), values, values).map(list),
        st.tuples(st.integers(4, 6), st.integers(-3, 8)).map(list),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(messages)
def test_any_stream_messages_close_streams_at_worst(batch: list[list]) -> None:
    """Whatever a peer sends: no exception, only STREAM_CLOSE replies, streams only ever end
    (none appears that we did not open or accept), and each transport's received bytes stay
    within the window it granted."""

    async def scenario() -> None:
        link = FakeLink()
        mux = StreamMux(link, TaskOwner("test", logging.getLogger("test")))  # type: ignore[arg-type]
        sinks = {}
        for sid in (1, 3, 5):  # streams the peer opened
            transport = CircuitTransport(mux)
            transport.accept(sid)
            sink = Sink()
            transport.set_protocol(sink)
            sinks[sid] = (transport, sink)
        CircuitTransport(mux).open()  # one of ours: sid 0
        opened = set(mux.streams)
        for message in batch:
            mux.on_message(message)
            assert set(mux.streams) <= opened
        assert all(m[0] == 6 or m[0] == 5 for m in link.sent)
        for transport, sink in sinks.values():
            assert len(sink.data) <= transport.end.bytes_received
            assert transport.end.unconsumed <= CIRCUIT_WINDOW  # held, never beyond the grant
        await asyncio.sleep(0)  # connection_lost callbacks run

    asyncio.run(scenario())
