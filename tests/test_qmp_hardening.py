"""Regression tests for attacks an authenticated or unauthenticated peer can try: a counter
jump, pings or requests without reading, pipelined bursts, injected ERROR frames, replayed
INITs, oversized handshake frames, one host holding every slot, and dial races."""

from __future__ import annotations

import asyncio
import time

import pytest

from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.channel import Channel, ChannelConfig, InnerType
from qiz.qmp.connection import Connection, ConnectionClosed, MessageReceived
from qiz.qmp.cookie import CookieAuthority
from qiz.qmp.errors import ErrorCode
from qiz.qmp.frames import FrameKind, encode_frame
from qiz.qmp.rpc import REQUEST, RpcEndpoint
from qiz.qmp.transport import LinkError, Listener

from .helpers import (
    HOST,
    client,
    make_node,
    manager,
    read_until_closed,
    run,
    running,
)
from .helpers import async_eventually as eventually

NOW = 1_800_000_000.0


def party() -> tuple[NodeIdentity, PeerRecord]:
    identity = NodeIdentity.generate()
    return identity, PeerRecord.create(identity, ["127.0.0.1:1"], seq=1, now=NOW)


def test_a_counter_jump_costs_nothing() -> None:
    tx = Channel(b"\x01" * 32, b"\x02" * 32, now=NOW, config=ChannelConfig())
    rx = Channel(b"\x02" * 32, b"\x01" * 32, now=NOW, config=ChannelConfig())
    assert rx.open(tx.seal(InnerType.APP, b"a", NOW), NOW) == (InnerType.APP, b"a")
    tx._counter = 1 << 62
    assert rx.open(tx.seal(InnerType.APP, b"b", NOW), NOW) == (InnerType.APP, b"b")
    # one frame, not gigabytes of bitmap: the window never holds more than its size
    assert rx._window.highest == 1 << 62
    assert rx._window._bits.bit_length() <= rx._window.size
    assert rx.open(tx.seal(InnerType.APP, b"c", NOW), NOW) == (InnerType.APP, b"c")


def test_plaintext_error_cannot_close_an_established_link() -> None:
    (ia, ra), (ib, rb) = party(), party()
    a = Connection.initiator(ia, ra, expected=rb, now=NOW)
    b = Connection.responder(
        ib, rb, cookies=CookieAuthority(ib.xwing_public.raw), peer_address="x", now=NOW
    )
    a.start(NOW)
    b.receive_data(a.data_to_send(), NOW)
    a.receive_data(b.data_to_send(), NOW)
    b.receive_data(a.data_to_send(), NOW)
    assert a.established and b.established
    events = b.receive_data(encode_frame(FrameKind.ERROR, b"\x00\x0dnode stopping"), NOW)
    assert events == [ConnectionClosed(ErrorCode.PROTOCOL_ERROR, events[0].reason, False)]


def test_replayed_init_is_refused_before_any_kem_work() -> None:
    (ia, ra), (ib, rb) = party(), party()
    cookies = CookieAuthority(ib.xwing_public.raw)
    a = Connection.initiator(ia, ra, expected=rb, now=NOW)
    a.start(NOW)
    init = a.data_to_send()
    first = Connection.responder(ib, rb, cookies=cookies, peer_address="x", now=NOW)
    first.receive_data(init, NOW)
    assert first.kem_operations == 1
    again = Connection.responder(ib, rb, cookies=cookies, peer_address="y", now=NOW)
    events = again.receive_data(init, NOW)
    assert events[0].code is ErrorCode.AUTHENTICATION_FAILED and again.kem_operations == 0
    # Two minutes later the INIT is forgotten (and its record must still be valid).
    later = Connection.responder(ib, rb, cookies=cookies, peer_address="z", now=NOW + 200)
    later.receive_data(init, NOW + 200)
    assert later.kem_operations == 1


def test_handshake_frames_are_limited_to_32_kib() -> None:
    ib, rb = party()
    b = Connection.responder(
        ib, rb, cookies=CookieAuthority(ib.xwing_public.raw), peer_address="x", now=NOW
    )
    events = b.receive_data(bytes([FrameKind.INIT]) + (100_000).to_bytes(3, "big"), NOW)
    assert events[0].code is ErrorCode.FRAME_TOO_LARGE


async def raw_established(address: str, server_record: PeerRecord):
    """A hand-driven initiator over plain streams, so the test decides when to read."""
    identity, record = party()
    record = PeerRecord.create(identity, [], seq=1, now=time.time())
    conn = Connection.initiator(identity, record, expected=server_record, now=time.time())
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    conn.start(time.time())
    writer.write(conn.data_to_send())
    while not conn.established:
        conn.receive_data(await reader.read(65536), time.time())
        writer.write(conn.data_to_send())
    await writer.drain()
    return conn, reader, writer


async def node_caught_up(link, conn) -> None:
    """Wait until the node's end ``link`` has taken in every byte the raw client ``conn``
    sent, or has stopped reading it: the moment its buffers and tasks are at their worst."""
    await eventually(
        lambda: link.conn.bytes_received >= conn.bytes_sent or link.reading_paused,
        timeout=20.0,
        what="the node reading everything or pausing",
    )


async def write_until_refused(conn, writer, frames: int, queue_one) -> None:
    """Queue and write frames (never reading) until the node stops reading us."""
    for i in range(frames):
        queue_one(i)
        writer.write(conn.data_to_send())
        try:
            await asyncio.wait_for(writer.drain(), 0.05)
        except TimeoutError:
            return  # the node stopped reading us: that is the point


def test_pings_without_reading_do_not_grow_the_nodes_buffers() -> None:
    async def scenario() -> None:
        node = make_node()
        async with running(node):
            conn, _reader, writer = await raw_established(node.address, node.record())
            link = next(iter(node.links.listener.links))
            payload = b"p" * (256 * 1024)
            # 50 MiB of pings; we never read the pongs
            await write_until_refused(conn, writer, 200, lambda _i: conn.ping(payload, time.time()))
            await node_caught_up(link, conn)
            limit = node.links.config.qmp.max_outbound_buffer
            assert link.transport is not None
            assert link.transport.get_write_buffer_size() <= limit + 2 * len(payload)
            writer.close()

    run(scenario())


def test_requests_without_reading_are_held_to_the_in_flight_cap() -> None:
    async def scenario() -> None:
        node = make_node()
        async with running(node):
            conn, _reader, writer = await raw_established(node.address, node.record())
            from qiz import wire

            big = b"x" * 200_000
            await write_until_refused(
                conn,
                writer,
                400,
                lambda i: conn.send(wire.encode([REQUEST, i, "qmp.ping", big]), time.time()),
            )
            (peer,) = node.links.peers.values()
            await node_caught_up(peer.link, conn)
            assert len(peer.rpc._running) <= peer.rpc.max_inflight_in
            assert len(asyncio.all_tasks()) < 200
            writer.close()

    run(scenario())


def test_a_pipelined_burst_right_after_the_handshake_is_all_answered() -> None:
    async def scenario() -> None:
        node = make_node()
        async with running(node):
            conn, reader, writer = await raw_established(node.address, node.record())
            from qiz import wire

            for i in range(300):
                conn.send(wire.encode([REQUEST, i, "qmp.ping", i]), time.time())
            writer.write(conn.data_to_send())  # CONFIRM and 300 requests in one write
            answered: set[int] = set()
            deadline = time.monotonic() + 10
            while len(answered) < 300 and time.monotonic() < deadline:
                for event in conn.receive_data(await reader.read(1 << 20), time.time()):
                    if isinstance(event, MessageReceived):
                        message = wire.decode(event.payload)
                        if message[0] == 1 or (message[0] == 2 and message[2] == "busy"):
                            answered.add(message[1])
                writer.write(conn.data_to_send())
            assert len(answered) == 300
            writer.close()

    run(scenario())


def test_one_host_cannot_hold_every_handshake_slot() -> None:
    async def scenario() -> None:
        identity, _ = party()
        listener = Listener(
            identity,
            lambda: PeerRecord.create(identity, [], seq=1, now=time.time()),
            on_link=lambda link: None,
            max_pending_per_prefix=3,  # loopback is limited like any network now
        )
        await listener.start(f"{HOST}:0")
        try:
            streams = [
                await asyncio.open_connection(HOST, int(listener.address.rsplit(":", 1)[1]))
                for _ in range(5)
            ]
            refused = 0
            for reader, _writer in streams[3:]:
                data, _ = await read_until_closed(reader, 2.0)
                refused += data[:1] == bytes([FrameKind.ERROR]) and data[5:6] == bytes(
                    [ErrorCode.BUSY]
                )
            assert refused == 2
            for _, writer in streams:
                writer.close()
        finally:
            await listener.close()

    run(scenario())


def test_shared_dial_checks_each_callers_expected_id() -> None:
    async def scenario() -> None:
        async with running(make_node(), make_node()) as (a, b):
            stranger = NodeIdentity.generate().node_id
            results = await asyncio.gather(
                a.connect(b.address), a.connect(b.address, stranger), return_exceptions=True
            )
            assert isinstance(results[0], RpcEndpoint)
            assert (
                isinstance(results[1], LinkError) and results[1].code is ErrorCode.UNEXPECTED_PEER
            )

    run(scenario())


def test_a_stopped_manager_keeps_no_link() -> None:
    async def scenario() -> None:
        a, b = make_node(), make_node()
        async with running(b):
            await a.start()
            pending = asyncio.ensure_future(a.connect(b.address))
            await asyncio.sleep(0)
            await a.stop()
            with pytest.raises((LinkError, asyncio.CancelledError)):
                await pending
            assert not a.links.peers  # at once: stop() returned
            await eventually(lambda: not b.links.peers, what="B notices the link closed")

    run(scenario())


def test_idle_links_are_closed_and_inbound_links_capped() -> None:
    async def scenario() -> None:
        quiet = make_node(config=manager(keepalive_interval=0.2, idle_close=0.5))
        capped = make_node(config=manager(max_inbound=2))
        async with running(quiet, capped) as _:
            # A link nobody uses is closed after idle_close (it was not pinned).
            other = make_node()
            async with running(other):
                await other.connect(quiet.address, quiet.node_id)
                assert other.node_id in quiet.links.peers
                await eventually(
                    lambda: other.node_id not in quiet.links.peers, what="the idle link closed"
                )
            # The third inbound link is refused with BUSY; the first two keep working.
            clients = [await client(capped.address) for _ in range(2)]
            with pytest.raises(LinkError) as info:
                await client(capped.address)
            assert info.value.code is ErrorCode.BUSY
            for _link, rpc in clients:
                assert await rpc.call("qmp.ping", 1) == 1
            assert capped.links.listener.refused >= 1

    run(scenario())


def test_counters_snapshot_keeps_what_closed_links_counted() -> None:
    async def scenario() -> None:
        node = make_node()
        async with running(node):
            before = node.links.counters_snapshot()
            assert before == dict.fromkeys(before, 0)
            conn, _reader, writer = await raw_established(node.address, node.record())
            conn.send(b"\xff not cbor", time.time())  # a malformed RPC message
            frame = conn.data_to_send()
            writer.write(frame + frame)  # ... and the same frame replayed
            await eventually(
                lambda: node.links.counters_snapshot()["frames_dropped_replayed"] == 1,
                what="the replay dropped",
            )
            live = node.links.counters_snapshot()
            assert live["links"] == 1 and live["handshakes_ok"] == 1
            assert live["rpc_malformed"] == 1 and live["rpc_reply_unsent"] == 0
            writer.close()
            await eventually(lambda: not node.links.peers, what="the link closed")
            after = node.links.counters_snapshot()
            assert after == {**live, "links": 0}  # totals survive the link

    run(scenario())
