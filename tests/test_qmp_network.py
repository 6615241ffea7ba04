"""QMP over real loopback TCP (127.0.0.1 only): nodes, dials, RPC, hostile sockets, bulk data,
rekeying under traffic, redial, and simultaneous dial.

pytest-asyncio is not used: each test is a plain function that runs one coroutine with
:func:`run`, which also fails the test if the event loop reported an unhandled error (a task
that crashed, a callback that raised) while it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from qiz.events import Event, EventBus, EventKind
from qiz.identity import NodeIdentity, PeerRecord
from qiz.node import Node
from qiz.qmp.channel import ChannelConfig
from qiz.qmp.connection import Connection
from qiz.qmp.errors import ErrorCode
from qiz.qmp.frames import MAX_BODY, FrameDecoder, FrameKind, encode_frame
from qiz.qmp.manager import LinkManager
from qiz.qmp.rpc import CallContext, RpcEndpoint, RpcError
from qiz.qmp.transport import Link, LinkError, Listener, dial

from .helpers import (
    HOST,
    client,
    make_node,
    manager,
    qmp,
    read_until_closed,
    record_of,
    run,
    running,
)
from .helpers import async_eventually as eventually

pytestmark = pytest.mark.timeout(60)

CLIENTS = 50


# ------------------------------------------------------------------------------ helpers


def record_events(node: Node) -> list[Event]:
    """Every link event the node's manager pushes from now on, in order."""
    seen: list[Event] = []

    def keep(event: Event) -> None:
        if event.kind in (EventKind.PEER_LINKED, EventKind.PEER_UNLINKED):
            seen.append(event)

    node.links.events.subscribe(keep)
    return seen


def link_peers(node: Node) -> set[str]:
    return {link["node_id"] for link in node.status()["links"]}


@pytest.fixture(scope="module")
def client_identities() -> list[NodeIdentity]:
    return [NodeIdentity.generate() for _ in range(CLIENTS)]


@pytest.fixture
def frames_sent(monkeypatch: pytest.MonkeyPatch) -> dict[Connection, list[FrameKind]]:
    """Every frame kind each Connection puts on the wire, in order (a spy on data_to_send)."""
    log: dict[Connection, list[FrameKind]] = {}
    decoders: dict[Connection, FrameDecoder] = {}
    original = Connection.data_to_send

    def spy(self: Connection) -> bytes:
        data = original(self)
        decoder = decoders.setdefault(self, FrameDecoder(MAX_BODY))
        log.setdefault(self, []).extend(frame.kind for frame in decoder.feed(data))
        return data

    monkeypatch.setattr(Connection, "data_to_send", spy)
    return log


# ------------------------------------------------------------------------------ two nodes


def test_two_nodes_link_and_call() -> None:
    async def scenario() -> None:
        async with running(make_node(), make_node()) as (a, b):
            rpc = await a.connect(b.address)
            assert rpc.link.peer_id == b.node_id
            body = {"n": 7, "blob": bytes(range(256)), "text": "qubit"}
            assert await rpc.call("qmp.ping", body) == body
            info = await rpc.call("node.info")
            assert info["node_id"] == str(b.node_id)
            assert info["address"] == b.address
            # the callee answers over the same link too
            back = await b.connect(a.address, a.node_id)
            assert back.link is b.links.peers[a.node_id].link
            assert (await back.call("node.info"))["node_id"] == str(a.node_id)

            await eventually(lambda: link_peers(a) == {str(b.node_id)}, what="A lists B")
            await eventually(lambda: link_peers(b) == {str(a.node_id)}, what="B lists A")
            (out,) = a.status()["links"]
            (inn,) = b.status()["links"]
            assert (out["direction"], inn["direction"]) == ("out", "in")
            assert out["state"] == inn["state"] == "online"
            assert out["address"] == b.address
            await eventually(lambda: a.status()["links"][0]["rtt_ms"] is not None, what="RTT")
            assert a.status()["handshakes_failed"] == b.status()["handshakes_failed"] == 0

    run(scenario())


def nagle_off(link: Link) -> bool:
    assert link.transport is not None
    sock = link.transport.get_extra_info("socket")
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_both_ends_of_a_link_send_without_nagle() -> None:
    """Nagle's algorithm is off on the dialling end too (asyncio turns it off only on sockets
    made with proto IPPROTO_TCP): with it, a message written behind an unacknowledged one
    waited for the peer's delayed ACK, 40 ms on Linux."""

    async def scenario() -> None:
        async with running(make_node(), make_node()) as (a, b):
            rpc = await a.connect(b.address)
            await eventually(lambda: a.node_id in b.links.peers, what="B sees A")
            assert nagle_off(rpc.link)
            assert nagle_off(b.links.peers[a.node_id].link)

    run(scenario())


def test_dial_expectations(frames_sent: dict[Connection, list[FrameKind]]) -> None:
    me = NodeIdentity.generate()
    mine = record_of(me)

    async def scenario() -> None:
        async with running(make_node(), make_node()) as (b, c):
            # Wrong expected id: B answers, authenticates, and is refused.
            with pytest.raises(LinkError) as wrong:
                await dial(b.address, me, mine, expected=c.node_id, config=qmp())
            assert wrong.value.code is ErrorCode.UNEXPECTED_PEER

            # Expected id: HELLO fetches the record first (two round trips).
            link = await dial(b.address, me, mine, expected=b.node_id, config=qmp())
            assert link.peer_id == b.node_id
            assert frames_sent[link.conn][:2] == [FrameKind.HELLO, FrameKind.INIT]
            link.close()

            # Full record: INIT at once, one round trip, no HELLO and no RECORD.
            frames_sent.clear()
            link = await dial(b.address, me, mine, expected=b.record(), config=qmp())
            assert link.peer_id == b.node_id
            mine_sent = frames_sent[link.conn]
            assert mine_sent[:2] == [FrameKind.INIT, FrameKind.DATA]  # INIT, key confirmation
            assert FrameKind.HELLO not in mine_sent
            await RpcEndpoint(link, {}).call("qmp.ping", 1)  # let B's side settle
            (responder,) = [
                conn
                for conn in frames_sent
                if not conn.is_initiator and conn.handshake_hash == link.conn.handshake_hash
            ]
            assert frames_sent[responder][0] is FrameKind.RESPONSE
            assert FrameKind.RECORD not in frames_sent[responder]
            link.close()

            # B's record sent to C's address: mac1 is for B's key, C refuses before any KEM work.
            with pytest.raises(LinkError) as impostor:
                await dial(c.address, me, mine, expected=b.record(), config=qmp())
            assert impostor.value.code is ErrorCode.AUTHENTICATION_FAILED
            await eventually(lambda: c.status()["handshakes_failed"] == 1, what="C counts it")

            # ... and C keeps serving everyone else.
            link, rpc = await client(c.address, expected=c.record())
            assert await rpc.call("qmp.ping", b"still here") == b"still here"
            link.close()
            other = await b.connect(c.address, c.node_id)
            assert (await other.call("node.info"))["node_id"] == str(c.node_id)

    run(scenario())


# ------------------------------------------------------------------------------ hostile sockets


def refusal_code(data: bytes) -> ErrorCode | None:
    """The code of the ERROR frame the node sent before closing, if any arrived."""
    if not data:
        return None
    (frame, *_) = FrameDecoder(MAX_BODY).feed(data)
    assert frame.kind is FrameKind.ERROR, frame.kind
    return ErrorCode(int.from_bytes(frame.body[:2], "big"))


def test_hostile_connections_are_closed_while_a_good_peer_keeps_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handshake_timeout = 1.5
    bound = 20.0  # a hang guard only: what is asserted is why each connection closed
    config = manager(qmp=qmp(handshake_timeout=handshake_timeout))
    answered: list[int] = []  # the good peer's calls, in the order they were answered

    async def garbage(address: str) -> ErrorCode | None:
        reader, writer = await asyncio.open_connection(*address.split(":"))
        noise = random.Random(1).randbytes(4096)
        writer.write(b"\xee" + noise)  # 0xEE is no frame kind
        data, _ = await read_until_closed(reader, bound)
        writer.close()
        return refusal_code(data)

    async def truncated_init(address: str) -> ErrorCode | None:
        reader, writer = await asyncio.open_connection(*address.split(":"))
        writer.write(encode_frame(FrameKind.INIT, bytes(3000))[:104])  # header + 100 of 3000
        data, _ = await read_until_closed(reader, bound)  # ... and then silence
        writer.close()
        return refusal_code(data)

    async def huge_length(address: str) -> ErrorCode | None:
        reader, writer = await asyncio.open_connection(*address.split(":"))
        writer.write(bytes([FrameKind.INIT]) + (0xFFFFFF).to_bytes(3, "big") + bytes(64))
        data, _ = await read_until_closed(reader, bound)
        writer.close()
        return refusal_code(data)

    async def slow_loris(address: str) -> ErrorCode | None:
        reader, writer = await asyncio.open_connection(*address.split(":"))
        closed = asyncio.ensure_future(read_until_closed(reader, bound))
        frame = encode_frame(FrameKind.INIT, bytes(2400))
        for byte in frame:
            if closed.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait({closed}, timeout=0.3)
        else:
            raise AssertionError("the node read the whole slow INIT")
        data, _ = await closed
        writer.close()
        return refusal_code(data)

    async def hello_flood(address: str) -> None:
        """Ask for the record 100,000 times and never read: each 6-byte HELLO would make the
        node buffer a 5 KB RECORD. The node cuts it off (BUFFER_LIMIT, checked below)."""
        reader, writer = await asyncio.open_connection(*address.split(":"))
        hello = encode_frame(FrameKind.HELLO, (1).to_bytes(2, "big"))
        with contextlib.suppress(ConnectionError):
            for _ in range(10):
                writer.write(hello * 10_000)
                await writer.drain()
                await asyncio.sleep(0.01)
        await read_until_closed(reader, bound)
        writer.close()

    async def counted(attack: Coroutine[Any, Any, Any]) -> tuple[Any, int]:
        """The attack's result, and how many good calls were answered when it ended."""
        result = await attack
        return result, len(answered)

    async def scenario() -> None:
        async with running(make_node(config=config), make_node()) as (node, good):
            rpc = await good.connect(node.address)
            stop = asyncio.Event()

            async def keep_calling() -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    assert await rpc.call("qmp.ping", i) == i
                    answered.append(i)
                    await asyncio.sleep(0.02)

            async def watch_buffers() -> None:
                while not stop.is_set():
                    for link in node.links.listener.links:
                        if link.transport is not None:
                            held = link.transport.get_write_buffer_size()
                            buffered.append(held + link.conn.outbound_buffered)
                    await asyncio.sleep(0.005)

            buffered: list[int] = [0]
            caller = asyncio.ensure_future(keep_calling())
            watcher = asyncio.ensure_future(watch_buffers())
            caplog.set_level("INFO", logger="qiz.qmp")
            outcomes = await asyncio.gather(
                counted(garbage(node.address)),
                counted(truncated_init(node.address)),
                counted(huge_length(node.address)),
                counted(slow_loris(node.address)),
                counted(hello_flood(node.address)),
            )
            stop.set()
            await caller  # re-raises any failed call
            await watcher
            codes = [code for code, _ in outcomes[:4]]
            # Each refusal says why, when its ERROR frame arrived before the close.
            assert codes[0] in (None, ErrorCode.PROTOCOL_ERROR)
            assert codes[1] in (None, ErrorCode.HANDSHAKE_TIMEOUT)
            assert codes[2] in (None, ErrorCode.FRAME_TOO_LARGE)
            assert codes[3] in (None, ErrorCode.HANDSHAKE_TIMEOUT)
            # ... and the node's log says it for every one, the silent ones by their timer.
            closed = [r.getMessage() for r in caplog.records if "closed:" in r.getMessage()]
            for code, times in (("PROTOCOL_ERROR", 1), ("FRAME_TOO_LARGE", 1)):
                assert sum(line.endswith(f"({code})") for line in closed) >= times, closed
            assert sum("did not finish in time" in line for line in closed) == 2, closed
            # The HELLO flood is cut off by a protocol rule (one HELLO per connection) or by
            # what it made the node buffer, not by waiting for the handshake timeout.
            assert any(
                "a second HELLO" in line or line.endswith("(BUFFER_LIMIT)") for line in closed
            ), closed
            assert max(buffered) < 1024 * 1024
            # The good peer was served during the attack, not just before or after: calls
            # were answered between the first hostile close and the last one.
            served_at = sorted(count for _, count in outcomes)
            assert served_at[-1] > served_at[0]

            # No hostile connection is left behind; the node still takes new links.
            await eventually(lambda: len(node.links.listener.links) == 1, what="pruned links")
            assert node.status()["handshakes_failed"] >= 4
            link, fresh = await client(node.address, expected=node.node_id)
            assert await fresh.call("qmp.ping", b"after") == b"after"
            link.close()
            assert await rpc.call("qmp.ping", "last") == "last"

    run(scenario())


# ------------------------------------------------------------------------------ many links


@pytest.mark.parametrize("cookie_threshold", [64, 4], ids=["no-cookies", "cookies"])
def test_fifty_concurrent_links(
    client_identities: list[NodeIdentity], cookie_threshold: int
) -> None:
    async def scenario() -> None:
        server = make_node(config=manager(cookie_threshold=cookie_threshold))
        async with running(server):
            target = server.record()

            async def one(identity: NodeIdentity) -> tuple[Link, str]:
                link, rpc = await client(server.address, identity, expected=target, timeout=20.0)
                info = await rpc.call("node.info", timeout=20.0)
                echoed = await rpc.call("qmp.ping", str(identity.node_id), timeout=20.0)
                assert echoed == str(identity.node_id)
                return link, info["node_id"]

            results = await asyncio.gather(*(one(i) for i in client_identities))
            try:
                assert {node_id for _, node_id in results} == {str(server.node_id)}
                await eventually(lambda: len(server.status()["links"]) == CLIENTS, what="links")
                assert link_peers(server) == {str(i.node_id) for i in client_identities}
                assert server.status()["handshakes_failed"] == 0
                cookies = server.links.listener.cookies.cookies_sent
                assert (cookies > 0) == (cookie_threshold < CLIENTS)
            finally:
                for link, _ in results:
                    link.close()
            await eventually(lambda: not server.status()["links"], what="links closed")

    run(scenario())


# ------------------------------------------------------------------------------ RPC limits


def test_rpc_unknown_method_timeout_and_busy() -> None:
    async def scenario() -> None:
        node = make_node()
        handler_cancelled = asyncio.Event()
        handler_started = asyncio.Event()
        release = asyncio.Event()
        blocked: list[int] = []

        async def slow(ctx: CallContext, body: Any) -> Any:
            handler_started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                handler_cancelled.set()
                raise
            return body

        async def gate(ctx: CallContext, body: Any) -> Any:
            blocked.append(body)
            await release.wait()
            return body

        node.handlers["test.slow"] = slow
        node.handlers["test.gate"] = gate
        async with running(node):
            link, rpc = await client(node.address, max_inflight_out=200)
            try:
                with pytest.raises(RpcError) as unknown:
                    await rpc.call("no.such.method", 1)
                assert unknown.value.code == "unknown-method"

                with pytest.raises(RpcError) as late:
                    await rpc.call("test.slow", 1, timeout=0.3)
                assert late.value.code == "timeout"
                assert handler_started.is_set()
                await asyncio.wait_for(handler_cancelled.wait(), 2.0)  # the CANCEL got there
                served = node.links.peers[link.conn.identity.node_id].rpc
                await eventually(lambda: not served._running, what="handler gone")

                # Over the in-flight cap: the surplus is answered "busy" without running.
                cap = served.max_inflight_in
                calls = [
                    asyncio.ensure_future(rpc.call("test.gate", i, timeout=10.0))
                    for i in range(cap + 16)
                ]
                await eventually(lambda: sum(c.done() for c in calls) == 16, what="busy replies")
                assert len(blocked) == cap
                release.set()
                results = await asyncio.gather(*calls, return_exceptions=True)
                busy = [r for r in results if isinstance(r, RpcError)]
                assert len(busy) == 16 and {e.code for e in busy} == {"busy"}
                assert sorted(r for r in results if not isinstance(r, RpcError)) == blocked
                assert await rpc.call("test.gate", "again") == "again"  # capacity is back
                assert not rpc._pending

                # The node drops the link mid-call: the caller hears at once, not at timeout.
                handler_cancelled.clear()
                pending = asyncio.ensure_future(rpc.call("test.slow", 2, timeout=20.0))
                await eventually(lambda: bool(served._running), what="slow call running")
                served.link.close()
                with pytest.raises(RpcError) as dropped:
                    await pending
                assert dropped.value.code == "link-closed"  # at once: at its timeout, "timeout"
                await asyncio.wait_for(handler_cancelled.wait(), 5.0)
            finally:
                link.close()

    run(scenario())


async def served_by(node: Node, link: Link) -> RpcEndpoint:
    """The node's RPC endpoint for the client ``link``, once the node has registered it."""
    peer = link.conn.identity.node_id
    await eventually(lambda: peer in node.links.peers, what="link registered")
    return node.links.peers[peer].rpc


def test_requests_in_flight_are_bounded_in_bytes_as_well_as_in_number() -> None:
    """Messages may be 1 MiB: a peer keeping large requests running on a slow handler holds
    at most MAX_INFLIGHT_BYTES_IN of them on the node (64 such requests would be 64 MiB); the
    surplus is answered ``busy`` without running, and the budget comes back as they end."""
    from qiz.qmp.rpc import MAX_INFLIGHT_BYTES_IN

    body = bytes(900 * 1024)

    async def scenario() -> None:
        node = make_node()
        release = asyncio.Event()
        blocked: list[int] = []

        async def gate(ctx: CallContext, body: Any) -> Any:
            blocked.append(len(body))
            await release.wait()
            return len(body)

        node.handlers["test.gate"] = gate
        async with running(node):
            link, rpc = await client(node.address)
            try:
                served = await served_by(node, link)
                fits = MAX_INFLIGHT_BYTES_IN // (len(body) + 32)  # the envelope is under 32
                assert fits < served.max_inflight_in  # the byte budget binds first
                calls = [
                    asyncio.ensure_future(rpc.call("test.gate", body, timeout=20.0))
                    for _ in range(fits + 3)
                ]
                await eventually(lambda: sum(c.done() for c in calls) == 3, what="refusals")
                assert len(blocked) == fits
                assert 0 < served._held_bytes <= MAX_INFLIGHT_BYTES_IN
                refused = [c.exception() for c in calls if c.done()]
                assert all(isinstance(e, RpcError) and e.code == "busy" for e in refused)
                assert all("bytes" in e.message for e in refused)  # type: ignore[union-attr]
                release.set()
                results = await asyncio.gather(*calls, return_exceptions=True)
                assert [r for r in results if not isinstance(r, RpcError)] == [len(body)] * fits
                await eventually(lambda: served._held_bytes == 0, what="budget back")
                assert await rpc.call("test.gate", body) == len(body)  # capacity is back
            finally:
                link.close()

    run(scenario(), timeout=45)


def test_replies_a_peer_does_not_read_count_against_its_byte_budget() -> None:
    """A peer that asks for large answers (a holder's 1 MiB ``store.read``) and does not read
    them makes the node park each reply until the link takes it: those replies count against
    MAX_INFLIGHT_BYTES_IN, so the node holds about 16 MiB of them, not 64 MiB-sized answers
    (one per request slot); further requests are refused ``busy``, and everything settles
    once the peer reads again."""
    from qiz.qmp.rpc import MAX_INFLIGHT_BYTES_IN

    answer = bytes(900 * 1024)
    asks = 60  # under the 64 request slots: only the byte budget can refuse

    async def scenario() -> None:
        node = make_node()
        node.handlers["test.big"] = lambda ctx, body: answer  # plain: answered inline
        async with running(node):
            link, rpc = await client(node.address)
            try:
                served = await served_by(node, link)
                assert link.transport is not None
                link.transport.pause_reading()  # this peer stops reading its answers
                calls = [
                    asyncio.ensure_future(rpc.call("test.big", i, timeout=30.0))
                    for i in range(asks)
                ]
                await eventually(lambda: bool(served._running), what="replies parked")
                await asyncio.sleep(0.5)  # every request has arrived and been answered or not
                parked = len(served._running)
                assert parked * len(answer) <= MAX_INFLIGHT_BYTES_IN + len(answer)
                assert served._held_bytes <= MAX_INFLIGHT_BYTES_IN + len(answer) + 64
                link.transport.resume_reading()
                results = await asyncio.gather(*calls, return_exceptions=True)
                busy = [r for r in results if isinstance(r, RpcError)]
                assert busy and {e.code for e in busy} == {"busy"}
                assert all(r == answer for r in results if not isinstance(r, RpcError))
                await eventually(lambda: served._held_bytes == 0, what="budget back")
                assert await rpc.call("test.big", "again") == answer
            finally:
                link.close()

    run(scenario(), timeout=60)


def test_a_link_whose_reader_lags_pauses_at_its_byte_budget() -> None:
    """An application that does not take its messages holds at most ``max_queued_bytes`` of
    them (plus what one socket read brought) before the link stops reading the peer; every
    message arrives, in order, once it reads again."""
    big = 1024 * 1024 - 64
    count = 40  # 40 MiB, well past the 16 MiB budget and under 256 messages

    async def scenario() -> None:
        server_id, me = NodeIdentity.generate(), NodeIdentity.generate()
        record = record_of(server_id)
        accepted: asyncio.Future[Link] = asyncio.get_running_loop().create_future()

        async def hold(link: Link) -> None:
            accepted.set_result(link)

        listener = Listener(server_id, lambda: record, on_link=hold, config=qmp())
        await listener.start(f"{HOST}:0")
        try:
            link = await dial(listener.address, me, record_of(me), expected=record, config=qmp())
            served = await asyncio.wait_for(accepted, 10)
            sent = [bytes([i]) * big for i in range(count)]
            sending = asyncio.ensure_future(asyncio.gather(*(link.send(m) for m in sent)))
            await eventually(lambda: "inbox" in served._paused_for, what="reading paused")
            await asyncio.sleep(0.2)  # nothing more comes in while paused
            assert len(served._inbox) < count
            assert served._inbox_bytes <= served.max_queued_bytes + 2 * big
            got = [await served.recv() for _ in range(count)]
            await sending
            assert got == sent
            assert served._inbox_bytes == 0
            link.close()
        finally:
            await listener.close()

    run(scenario(), timeout=45)


def test_plain_handlers_answer_inline_with_the_same_errors_as_async_ones() -> None:
    """A plain-function handler is answered in the receive path (no task): its result, its
    RpcError, a body it cannot use and its own failure reach the caller exactly as an async
    handler's would; a result too large for one message is an ``internal`` error; the node
    calling itself (rpc.invoke) takes both kinds."""
    from qiz.qmp.rpc import invoke

    async def scenario() -> None:
        node = make_node()
        tasks_seen: list[object] = []

        def plain(ctx: CallContext, body: Any) -> Any:
            tasks_seen.append(asyncio.current_task())
            if body == "refuse":
                raise RpcError("rate-limited", "not now")
            if body == "bad":
                raise ValueError("a body this handler cannot use")
            if body == "crash":
                raise ZeroDivisionError
            if body == "huge":
                return b"x" * (node.links.config.max_payload + 1)
            return {"echo": body, "peer": ctx.peer_id.digest}

        async def awaiting(ctx: CallContext, body: Any) -> Any:
            tasks_seen.append(asyncio.current_task())
            return plain(ctx, body)

        node.handlers["test.plain"] = plain
        node.handlers["test.async"] = awaiting
        async with running(node):
            link, rpc = await client(node.address)
            try:
                me = link.conn.identity.node_id.digest
                for method in ("test.plain", "test.async"):
                    tasks_seen.clear()
                    assert await rpc.call(method, 7) == {"echo": 7, "peer": me}
                    for body, code in (
                        ("refuse", "rate-limited"),
                        ("bad", "bad-request"),
                        ("crash", "internal"),
                        ("huge", "internal"),
                    ):
                        with pytest.raises(RpcError) as info:
                            await rpc.call(method, body)
                        assert info.value.code == code, (method, body)
                    # inline: no task ran the plain handler; the async one had its own
                    assert (tasks_seen[0] is None) == (method == "test.plain")
                served = node.links.peers[link.conn.identity.node_id].rpc
                await eventually(lambda: not served._running, what="no request left in flight")
                assert await rpc.call("test.plain", "still") == {"echo": "still", "peer": me}
                own = CallContext(node.node_id, None)  # type: ignore[arg-type]
                for handler in (plain, awaiting):
                    answer = await invoke(handler, own, 1)
                    assert answer == {"echo": 1, "peer": node.node_id.digest}
            finally:
                link.close()

    run(scenario())


def test_a_request_and_the_close_in_one_read_are_answered_without_a_loop_error() -> None:
    """The peer's last request and its close arrive in one read: the connection is closed
    while the request is still being dispatched, and the plain handler's inline answer finds
    a closed link. That is a closed link (the answer is dropped), not an exception out of
    ``data_received`` (which asyncio reports as a fatal protocol error): ``run`` fails on
    anything the loop reports."""
    from qiz import wire

    async def scenario() -> None:
        node = make_node()
        ran: list[int] = []

        def plain(ctx: CallContext, body: Any) -> Any:
            ran.append(body)
            return body

        node.handlers["test.plain"] = plain
        async with running(node):
            for attempt in range(3):
                link, rpc = await client(node.address)
                assert await rpc.call("qmp.ping", 0) == 0  # the node has taken the link in
                link.conn.send(wire.encode([0, 99, "test.plain", attempt]), link.clock())
                link.conn.close(ErrorCode.NORMAL_CLOSE, "done", link.clock())
                link._flush()  # request and close leave in one write
                await eventually(lambda a=attempt: a in ran, what="the last request ran")
                await eventually(lambda: not node.links.peers, what="the node saw the close")
                link.close()

    run(scenario())


def test_a_reused_call_id_keeps_its_in_flight_slot_after_a_cancel() -> None:
    """The peer cancels call 5 and sends a new call 5 while the first handler is still
    cleaning up: the first one's end must not free the new one's slot (it would then run
    untracked: outside the in-flight cap, out of reach of a cancel and of the link's close)."""
    from qiz import wire

    async def scenario() -> None:
        node = make_node()
        release = asyncio.Event()
        started: list[int] = []

        async def slow_cleanup(ctx: CallContext, body: Any) -> Any:
            started.append(body)
            try:
                await release.wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # a handler that takes a while to clean up
                raise
            return body

        node.handlers["test.slow_cleanup"] = slow_cleanup
        async with running(node):
            link, rpc = await client(node.address)
            try:
                assert await rpc.call("qmp.ping", 0) == 0  # the node has taken the link in
                served = node.links.peers[link.conn.identity.node_id].rpc
                link.send_nowait(wire.encode([0, 5, "test.slow_cleanup", 1]))
                await eventually(lambda: started == [1], what="first call running")
                first = served._running[5]
                link.send_nowait(wire.encode([3, 5]))  # cancel it
                await eventually(lambda: 5 not in served._running, what="first call freed")
                link.send_nowait(wire.encode([0, 5, "test.slow_cleanup", 2]))  # the id again
                await eventually(lambda: started == [1, 2], what="second call running")
                second = served._running[5]
                await eventually(first.done, what="first call ended")
                assert served._running.get(5) is second  # still tracked
                release.set()
                await eventually(lambda: not served._running, what="second call answered")

                # A handler that raises CancelledError itself (it awaited something another
                # task cancelled), with no CANCEL from the peer: its slot is freed all the same.
                ran: list[int] = []

                async def self_cancelling(ctx: CallContext, body: Any) -> Any:
                    ran.append(body)
                    raise asyncio.CancelledError

                node.handlers["test.self_cancelling"] = self_cancelling
                link.send_nowait(wire.encode([0, 7, "test.self_cancelling", 7]))
                await eventually(lambda: ran == [7], what="the self-cancelling call ran")
                await eventually(lambda: 7 not in served._running, what="its slot freed")
            finally:
                link.close()

    run(scenario())


# ------------------------------------------------------------------------------ bulk data

BULK = 20 * 1024 * 1024
CHUNK = 64 * 1024


@pytest.mark.parametrize("rekey_bytes", [None, 256 * 1024], ids=["plain", "rekey-under-traffic"])
def test_bulk_transfer_in_order(rekey_bytes: int | None) -> None:
    channel = ChannelConfig() if rekey_bytes is None else ChannelConfig(rekey_bytes=rekey_bytes)
    config = qmp(channel=channel)
    data = random.Random(rekey_bytes or 0).randbytes(BULK)
    messages = BULK // CHUNK

    async def scenario() -> None:
        server_id, me = NodeIdentity.generate(), NodeIdentity.generate()
        server_record: list[PeerRecord] = []
        done: asyncio.Future[tuple[Link, str, int]] = asyncio.get_running_loop().create_future()

        async def drain(link: Link) -> None:
            """Count and hash every message, echo each one back, then report."""
            digest, count = hashlib.sha256(), 0
            while count < messages:
                message = await link.recv()
                digest.update(message)
                count += 1
                await link.send(message)
            await link.send(digest.digest())
            done.set_result((link, digest.hexdigest(), count))

        def provider() -> PeerRecord:
            if not server_record:
                server_record.append(record_of(server_id))
            return server_record[0]

        listener = Listener(server_id, provider, on_link=drain, config=config)
        await listener.start(f"{HOST}:0")
        try:
            link = await dial(
                listener.address, me, record_of(me), expected=provider(), config=config
            )
            echoed = hashlib.sha256()

            async def receive_echo() -> bytes:
                for _ in range(messages):
                    echoed.update(await link.recv())
                return await link.recv()

            receiver = asyncio.ensure_future(receive_echo())
            for offset in range(0, BULK, CHUNK):
                await link.send(data[offset : offset + CHUNK])
            server_digest = await receiver
            served, hexdigest, count = await done

            expected = hashlib.sha256(data)
            assert count == messages
            assert hexdigest == expected.hexdigest()
            assert server_digest == expected.digest()
            assert echoed.hexdigest() == expected.hexdigest()
            mine, theirs = link.conn._channel, served.conn._channel
            assert mine is not None and theirs is not None
            assert link.conn.frames_dropped == served.conn.frames_dropped == 0
            if rekey_bytes is None:
                assert mine.send_epoch == theirs.send_epoch == 0
            else:
                assert mine.send_epoch > 10 and theirs.send_epoch > 10
                # each receiver followed every epoch of its sender
                assert theirs.recv_epoch == mine.send_epoch
                assert mine.recv_epoch == theirs.send_epoch
            link.close()
        finally:
            await listener.close()

    run(scenario(), timeout=45)


# ------------------------------------------------------------------------------ link manager


def test_pinned_peer_is_redialled_when_it_comes_back() -> None:
    b_identity = NodeIdentity.generate()

    async def scenario() -> None:
        b = make_node(b_identity)
        await b.start()
        address = b.address
        a = make_node(peers=[address])
        b_again = make_node(b_identity, listen=address)
        try:
            await a.start()
            await eventually(lambda: link_peers(a) == {str(b.node_id)}, what="first link")
            first = a.links.peers[b.node_id].link

            await b.stop()
            await eventually(lambda: not first.is_open, what="A notices B left")
            await eventually(lambda: not a.status()["links"], what="A drops the link")
            failed = a.links.counters_snapshot()["handshakes_failed"]
            await eventually(
                lambda: a.links.counters_snapshot()["handshakes_failed"] >= failed + 2,
                what="a few failed redials with backoff",
            )

            await b_again.start()
            assert b_again.address == address
            await eventually(lambda: link_peers(a) == {str(b.node_id)}, what="redial")
            second = a.links.peers[b.node_id].link
            assert second is not first and second.conn.is_initiator
            rpc = await a.connect(address, b.node_id)
            assert rpc.link is second
            assert (await rpc.call("node.info"))["node_id"] == str(b.node_id)
        finally:
            await a.stop()
            await b.stop()
            await b_again.stop()

    run(scenario())


def test_a_node_does_not_link_to_itself() -> None:
    async def scenario() -> None:
        async with running(make_node()) as (node,):
            with pytest.raises(LinkError) as own:
                await node.connect(node.address)
            assert own.value.code is ErrorCode.UNEXPECTED_PEER
            await eventually(lambda: not node.links.listener.links, what="both ends closed")
            assert node.status()["links"] == []
            other = make_node()
            async with running(other):  # and it still links to others
                rpc = await other.connect(node.address, node.node_id)
                assert await rpc.call("qmp.ping", 0) == 0
        # run() fails the test if the refused inbound end raised into the event loop

    run(scenario())


def test_simultaneous_dial_settles_on_one_link() -> None:
    async def scenario() -> None:
        async with running(make_node(), make_node()) as (a, b):
            seen_a, seen_b = record_events(a), record_events(b)
            await asyncio.gather(a.connect(b.address), b.connect(a.address))
            await eventually(
                lambda: len(a.links.listener.links) + len(b.links.listener.links) == 1,
                what="the duplicate closed",
            )
            kept_a = a.links.peers[b.node_id].link
            kept_b = b.links.peers[a.node_id].link
            assert kept_a.is_open and kept_b.is_open
            # two ends of one TCP connection: same handshake, opposite roles
            assert kept_a.conn.handshake_hash == kept_b.conn.handshake_hash
            assert kept_a.conn.is_initiator != kept_b.conn.is_initiator
            smaller = min(a.node_id, b.node_id, key=lambda n: n.digest)
            initiator = a if kept_a.conn.is_initiator else b
            assert initiator.node_id == smaller
            assert len(a.status()["links"]) == len(b.status()["links"]) == 1

            # both sides now reuse that link
            rpc_a = await a.connect(b.address, b.node_id)
            rpc_b = await b.connect(a.address, a.node_id)
            assert rpc_a.link is kept_a and rpc_b.link is kept_b
            assert await rpc_a.call("qmp.ping", "ab") == "ab"
            assert await rpc_b.call("qmp.ping", "ba") == "ba"
            # Both ends kept the same TCP connection (same handshake hash, checked above), so
            # the delayed close each scheduled hits the other one. Resolving the duplicate was
            # no transition: one "linked" each, no "unlinked" flicker.
            assert [e.kind for e in seen_a] == [EventKind.PEER_LINKED]
            assert [e.kind for e in seen_b] == [EventKind.PEER_LINKED]
            assert kept_a.is_open and kept_b.is_open

    run(scenario())


def test_a_later_link_does_not_displace_a_working_one() -> None:
    """A short-lived client with B's identity (as ``qiz ping`` from B's home) dials A while A
    and B are linked: A keeps the old link as primary, and nothing breaks when it goes away."""

    async def scenario() -> None:
        # duplicate_grace=0: any second link is "later", none a simultaneous dial
        async with running(make_node(config=manager(duplicate_grace=0.0)), make_node()) as (a, b):
            seen = record_events(a)
            rpc = await b.connect(a.address, a.node_id)
            primary = a.links.peers[b.node_id].link
            ping_link, ping_rpc = await client(a.address, b.identity, expected=a.node_id)
            assert await ping_rpc.call("qmp.ping", 1) == 1
            assert a.links.peers[b.node_id].link is primary
            ping_link.close()
            await eventually(lambda: not a.links.spares, what="the spare forgotten")
            assert a.links.peers[b.node_id].link is primary and primary.is_open
            assert await rpc.call("qmp.ping", 2) == 2
            assert [e.kind for e in seen] == [EventKind.PEER_LINKED]  # the spare changed nothing

    run(scenario())


def test_a_dead_primary_is_replaced_by_the_newer_link() -> None:
    """B restarts (its old link dies silently); its new link takes over at once at A."""

    async def scenario() -> None:
        async with running(make_node(config=manager(duplicate_grace=0.0)), make_node()) as (a, b):
            seen = record_events(a)
            await b.connect(a.address, a.node_id)
            old = a.links.peers[b.node_id].link
            # Silence the old link without closing it: A's pings there go unanswered.
            b_side = b.links.peers[a.node_id].link
            assert b_side.transport is not None
            b_side.transport.pause_reading()
            new_link, new_rpc = await client(a.address, b.identity, expected=a.node_id)
            await eventually(lambda: not old.is_open, timeout=5, what="the dead primary closed")
            assert a.links.peers[b.node_id].link.peer_id == b.node_id
            assert a.links.peers[b.node_id].link is not old
            assert await new_rpc.call("qmp.ping", 3) == 3
            assert [e.kind for e in seen] == [EventKind.PEER_LINKED]  # a takeover, no flicker
            new_link.close()
            await eventually(lambda: b.node_id not in a.links.peers, what="B unlinked")
            assert [e.kind for e in seen] == [EventKind.PEER_LINKED, EventKind.PEER_UNLINKED]

    run(scenario())


# ------------------------------------------------------------------------------ link timers


class FakeClock:
    """A clock the test moves by hand; the event loop's own timers still run in real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def count_ticks(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The ``now`` of every Connection.tick call from here on (a spy)."""
    calls: list[float] = []
    original = Connection.tick

    def spy(self: Connection, now: float) -> list:
        calls.append(now)
        return original(self, now)

    monkeypatch.setattr(Connection, "tick", spy)
    return calls


def test_handshake_timeout_is_enforced_by_the_links_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A silent connection is closed when its deadline is reached in the link's clock: not
    before (the clock stands still, the timer fires and re-arms), and then with the reason."""
    clock = FakeClock()
    ticks = count_ticks(monkeypatch)

    async def scenario() -> None:
        identity = NodeIdentity.generate()
        listener = Listener(
            identity,
            lambda: record_of(identity),
            on_link=lambda link: None,
            config=qmp(handshake_timeout=0.2),
            clock=clock,
        )
        await listener.start(f"{HOST}:0")
        try:
            reader, writer = await asyncio.open_connection(*listener.address.split(":"))
            await eventually(lambda: len(listener.links) == 1, what="the link")
            (link,) = listener.links
            assert link.timer_deadline == link.conn.started_at + 0.2 == clock.now + 0.2
            await eventually(lambda: len(ticks) >= 2, what="the timer firing")
            assert link.is_open and link.timer_deadline == clock.now + 0.2  # re-armed, same
            clock.now += 0.2
            data, _ = await read_until_closed(reader, 10.0)
            assert refusal_code(data) is ErrorCode.HANDSHAKE_TIMEOUT
            assert link.timer_deadline is None
            writer.close()
        finally:
            await listener.close()

    run(scenario())


def test_the_idle_timer_is_not_rearmed_per_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traffic pushes the idle deadline back without touching the armed timer; when the timer
    fires early it re-arms at the new deadline; once the clock passes it, the link closes."""
    clock = FakeClock()
    ticks = count_ticks(monkeypatch)
    config = qmp(idle_timeout=1.0)  # the dialler's; the echo server's is long, so it is the
    # dialler's timer that closes the link

    async def scenario() -> None:
        server = NodeIdentity.generate()
        record = record_of(server)

        async def echo(link: Link) -> None:
            while True:
                await link.send(await link.recv())

        listener = Listener(
            server, lambda: record, on_link=echo, config=qmp(idle_timeout=600), clock=clock
        )
        await listener.start(f"{HOST}:0")
        try:
            me = NodeIdentity.generate()
            link = await dial(
                listener.address, me, record_of(me), expected=record, config=config, clock=clock
            )
            armed = link.timer_deadline
            assert armed is not None and armed == link.conn.next_deadline()
            for i in range(5):
                clock.now += 0.04  # frames arrive later and later...
                await link.send(bytes([i]))
                assert await link.recv() == bytes([i])
            # ... the deadline moved with them, the timer did not.
            assert link.conn.next_deadline() == pytest.approx(armed + 0.2)
            assert link.timer_deadline == armed
            await eventually(lambda: link.timer_deadline != armed, what="the early wake-up")
            assert link.is_open and link.timer_deadline == link.conn.next_deadline()
            assert ticks  # it woke, found nothing due, and re-armed
            clock.now += 1.0
            code, reason, by_peer = await asyncio.wait_for(link.closed, 10.0)
            assert (code, by_peer) == (ErrorCode.IDLE_TIMEOUT, False), reason
            assert link.timer_deadline is None
        finally:
            await listener.close()

    run(scenario())


# ------------------------------------------------------------------------------ link events


def bare_manager(bus: EventBus, **config: Any) -> LinkManager:
    """A LinkManager without a Node: its own identity, record and one echo method."""
    identity = NodeIdentity.generate()
    record: list[PeerRecord] = []

    def provider() -> PeerRecord:
        if not record:
            record.append(record_of(identity))
        return record[0]

    async def echo(ctx: CallContext, body: Any) -> Any:
        return body

    return LinkManager(identity, provider, {"qmp.ping": echo}, config=manager(**config), events=bus)


def test_link_events_are_pushed_once_per_transition() -> None:
    async def scenario() -> None:
        bus_a, bus_b = EventBus(), EventBus()
        seen_a: list[Event] = []
        seen_b: list[Event] = []
        bus_a.subscribe(seen_a.append)
        bus_b.subscribe(seen_b.append)
        a, b = bare_manager(bus_a), bare_manager(bus_b)
        await a.start(f"{HOST}:0")
        await b.start(f"{HOST}:0")
        try:
            a_id, b_id = str(a.identity.node_id), str(b.identity.node_id)
            rpc = await a.connect(b.listener.address, b.identity.node_id)
            await eventually(lambda: len(seen_b) == 1, what="B hears of A")
            (linked_a,) = seen_a
            assert linked_a.kind is EventKind.PEER_LINKED
            assert linked_a.data == {
                "peer": b_id,
                "address": b.listener.address,
                "direction": "out",
            }
            assert seen_b[0].kind is EventKind.PEER_LINKED
            assert seen_b[0].data["peer"] == a_id and seen_b[0].data["direction"] == "in"
            # More use of the link and a second connect: no event.
            assert await rpc.call("qmp.ping", 1) == 1
            assert (await a.connect(b.listener.address, b.identity.node_id)) is rpc

            rpc.link.close(ErrorCode.NORMAL_CLOSE, "done with B")
            # A's event is emitted by the time close() returns; B's when its end notices.
            assert seen_a[-1].kind is EventKind.PEER_UNLINKED
            assert seen_a[-1].data == {"peer": b_id, "reason": "done with B"}
            await eventually(lambda: len(seen_b) == 2, what="B hears A left")
            assert seen_b[-1].kind is EventKind.PEER_UNLINKED and seen_b[-1].data["peer"] == a_id

            # Linked again, then A stops: every "unlinked" is out when close() returns.
            await a.connect(b.listener.address, b.identity.node_id)
            await eventually(lambda: len(seen_b) == 3, what="B hears of A again")
            await a.close()
            assert [e.kind for e in seen_a] == [
                EventKind.PEER_LINKED,
                EventKind.PEER_UNLINKED,
                EventKind.PEER_LINKED,
                EventKind.PEER_UNLINKED,
            ]
            assert seen_a[-1].data["reason"] == "node shutting down"
            await eventually(lambda: len(seen_b) == 4, what="B hears A stopped")
            assert seen_b[-1].kind is EventKind.PEER_UNLINKED
            assert [e.seq for e in seen_a] == sorted(e.seq for e in seen_a)
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_closing_the_manager_leaves_no_task_running() -> None:
    """A handler mid-call with clean-up to do, a redial loop to a dead address, a dial in
    progress and the keepalive: when close() returns, all of them have ended."""

    async def scenario(dead: str) -> None:
        a, b = bare_manager(EventBus()), bare_manager(EventBus())
        started, cleaned = asyncio.Event(), asyncio.Event()

        async def slow(ctx: CallContext, body: Any) -> Any:
            started.set()
            try:
                await asyncio.sleep(60)
            finally:
                await asyncio.sleep(0.01)  # clean-up that itself awaits
                cleaned.set()

        a.handlers["test.slow"] = slow
        await a.start(f"{HOST}:0")
        await b.start(f"{HOST}:0")
        try:
            a.pin(dead)
            rpc = await b.connect(a.listener.address, a.identity.node_id)
            call = asyncio.ensure_future(rpc.call("test.slow", 1, timeout=30))
            await asyncio.wait_for(started.wait(), 10)
            silent = await asyncio.start_server(lambda r, w: None, HOST, 0)
            port = silent.sockets[0].getsockname()[1]
            dialing = asyncio.ensure_future(a.connect(f"{HOST}:{port}"))  # never answered
            await eventually(lambda: len(a.tasks) >= 4, what="A's tasks")
            await a.close()
            assert len(a.tasks) == 0 and len(a.listener.tasks) == 0
            assert cleaned.is_set()  # the handler's clean-up ran before close() returned
            with pytest.raises(LinkError) as stopped:
                await dialing
            assert stopped.value.code is ErrorCode.SHUTDOWN
            with pytest.raises(RpcError) as info:
                await call
            assert info.value.code == "link-closed"
            with pytest.raises(LinkError) as refused:
                await a.connect(b.listener.address)
            assert refused.value.code is ErrorCode.SHUTDOWN
            silent.close()
        finally:
            await a.close()
            await b.close()
        owners = ("links", "rpc", "qmp.listener")
        left = [t for t in asyncio.all_tasks() if t.get_name().split(":")[0] in owners]
        assert not left

    with refusing_address() as dead:
        run(scenario(dead))


@contextlib.contextmanager
def refusing_address() -> Iterator[str]:
    """An address where connections are refused: a port bound (port 0) and held, but not
    listening, so no other process can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield f"{HOST}:{sock.getsockname()[1]}"
