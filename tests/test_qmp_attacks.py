"""Attacks on the link layer from issue 13, replayed by clients written here.

Where the attack is on the wire it runs against a real ``qiz node start`` process, from raw
asyncio sockets with hand-built frames; what is asserted is the node's own counters (read over
its control socket, as ``qiz node status`` does) and what it sent back, never how long anything
took. Attackers bind source addresses in other /24s of 127.0.0.0/8 (127.0.1.1, ...), so that
"another network" is a real, distinct prefix to the node.

* item 5: unauthenticated connections cannot take every inbound slot (pending handshakes have a
  cap of their own, per prefix, and a deadline; a newcomer still links);
* item 6: a replayed INIT costs one decapsulation however it is altered; an INIT flood from one
  prefix is held to that prefix's KEM budget;
* item 10: a zero-length frame is refused with an ERROR frame, never a traceback.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.admission import PendingTable, address_prefix
from qiz.qmp.connection import CONFIRM_TIMEOUT, Connection, ConnectionClosed, FrameDropped, State
from qiz.qmp.cookie import KEM_BURST_PER_PREFIX, KEM_RATE_PER_PREFIX, CookieAuthority, compute_mac1
from qiz.qmp.errors import ErrorCode, QmpError
from qiz.qmp.frames import MAX_BODY, FrameDecoder, FrameKind, encode_frame
from qiz.qmp.handshake import VERSION, InitiatorHandshake
from qiz.qmp.manager import ManagerConfig
from qiz.qmp.transport import (
    COOKIE_THRESHOLD,
    MAX_INBOUND_PER_PREFIX,
    MAX_PENDING,
    MAX_PENDING_PER_PREFIX,
)
from qiz.ratelimit import KeyedRateLimiter

from .helpers import (
    NodeProcess,
    async_eventually,
    client,
    eventually,
    make_node,
    manager,
    node_processes,
    qiz,
    qmp,
    read_until_closed,
    run,
    running,
)

NOW = 1_800_000_000.0
HANG_GUARD = 30.0  # seconds: only so that a broken node fails the test instead of hanging it


def party() -> tuple[NodeIdentity, PeerRecord]:
    identity = NodeIdentity.generate()
    return identity, PeerRecord.create(identity, ["127.0.0.1:1"], seq=1, now=NOW)


def responder(
    identity: NodeIdentity, record: PeerRecord, cookies: CookieAuthority, address: str
) -> Connection:
    return Connection.responder(identity, record, cookies=cookies, peer_address=address, now=NOW)


def altered(init_body: bytes, responder_record: PeerRecord) -> bytes:
    """The same INIT (same KEM ciphertext) with its last payload byte changed and a valid mac1
    recomputed: what anyone holding the responder's public record can make from a seen INIT."""
    message = bytearray(init_body[:-32])
    message[-1] ^= 0x01
    mac1 = compute_mac1(responder_record.xwing_key.raw, bytes(message))
    return bytes(message) + mac1 + bytes(16)


# ------------------------------------------------------------------ item 10: empty frames


@pytest.mark.parametrize("kind", list(FrameKind), ids=lambda k: k.name)
def test_a_zero_length_frame_is_refused_with_an_error_frame(kind: FrameKind) -> None:
    identity, record = party()
    conn = responder(identity, record, CookieAuthority(identity.xwing_public.raw), "x:1")
    events = conn.receive_data(bytes([kind]) + b"\x00\x00\x00", NOW)
    assert events == [ConnectionClosed(ErrorCode.PROTOCOL_ERROR, f"empty {kind.name} frame", False)]
    (frame,) = FrameDecoder(MAX_BODY).feed(conn.data_to_send())
    assert frame.kind is FrameKind.ERROR
    assert int.from_bytes(frame.body[:2], "big") == ErrorCode.PROTOCOL_ERROR


_RESPONDER = party()  # one identity for every example: key generation is not what is tested


def fresh_responder() -> Connection:
    identity, record = _RESPONDER
    return responder(identity, record, CookieAuthority(identity.xwing_public.raw), "10.0.0.1:1")


frame_headers = st.builds(
    lambda kind, length, body: bytes([kind]) + length.to_bytes(3, "big") + body,
    st.sampled_from([int(k) for k in FrameKind] + [0, 255]),
    st.sampled_from([0, 0, 1, 2, 44, 4000]),  # zero-length twice as often as the others
    st.binary(max_size=64),
)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.one_of(frame_headers, st.binary(max_size=64)), max_size=8),
    cut=st.integers(1, 64),
)
def test_arbitrary_bytes_with_empty_frames_never_raise(pieces: list[bytes], cut: int) -> None:
    """Frames of every kind, zero-length ones often, and noise, fed whole or in slices: the
    decoder raises only QmpError and the connection only returns events."""
    stream = b"".join(pieces)
    decoder = FrameDecoder(1000)
    try:
        for start in range(0, len(stream), cut):
            decoder.feed(stream[start : start + cut])
    except QmpError:
        pass
    conn = fresh_responder()
    for start in range(0, len(stream), cut):
        for event in conn.receive_data(stream[start : start + cut], NOW):
            assert isinstance(event, ConnectionClosed | FrameDropped)
        conn.data_to_send()
    assert not conn.established


# ------------------------------------------------------------------ item 6: sans-IO


def test_an_altered_replay_of_an_init_costs_no_decapsulation() -> None:
    (ia, ra), (ib, rb) = party(), party()
    cookies = CookieAuthority(ib.xwing_public.raw, now=NOW)
    a = Connection.initiator(ia, ra, expected=rb, now=NOW)
    a.start(NOW)
    frame = a.data_to_send()
    first = responder(ib, rb, cookies, "10.0.0.1:1")
    first.receive_data(frame, NOW)
    assert first.kem_operations == 1
    body = FrameDecoder(MAX_BODY).feed(frame)[0].body
    again = responder(ib, rb, cookies, "10.0.0.2:1")
    events = again.receive_data(encode_frame(FrameKind.INIT, altered(body, rb)), NOW)
    assert events[0].code is ErrorCode.AUTHENTICATION_FAILED and "replayed" in events[0].reason
    assert again.kem_operations == 0
    assert cookies.kem_operations == 1 and cookies.replays_refused == 1


def test_kem_work_is_budgeted_per_prefix() -> None:
    (ia, ra), (ib, rb) = party(), party()
    cookies = CookieAuthority(ib.xwing_public.raw, now=NOW, kem_rate=1.0, kem_burst=3)

    def init_from(address: str, now: float = NOW) -> tuple[Connection, Connection]:
        a = Connection.initiator(ia, ra, expected=rb, now=now)
        a.start(now)
        b = Connection.responder(ib, rb, cookies=cookies, peer_address=address, now=now)
        b.receive_data(a.data_to_send(), now)
        return a, b

    processed = [init_from(f"192.0.2.{i}:4000")[1].kem_operations for i in range(3)]
    assert processed == [1, 1, 1]
    # The /24's budget is spent: a fourth INIT gets a COOKIE, and its retry with a valid mac2
    # a refusal; neither is decapsulated.
    a, b = init_from("192.0.2.200:4000")
    assert b.kem_operations == 0 and cookies.cookies_sent == 1
    a.receive_data(b.data_to_send(), NOW)  # the COOKIE: a resends INIT with mac2
    events = b.receive_data(a.data_to_send(), NOW)
    assert events[0].code is ErrorCode.BUSY and b.kem_operations == 0
    assert cookies.kem_limited == 2 and cookies.kem_operations == 3
    # Another /24 has its own budget, and the spent one refills with time.
    assert init_from("192.0.3.1:4000")[1].kem_operations == 1
    assert init_from("192.0.2.9:4000", now=NOW + 1.0)[1].kem_operations == 1


def test_prefixes_and_the_pending_table() -> None:
    assert address_prefix("192.0.2.77:4000") == "192.0.2.0/24"
    assert address_prefix("[2001:db8:1:2:3:4:5:6]:4000") == "2001:db8:1:2::/64"
    assert address_prefix("[::ffff:192.0.2.5]:1") == "192.0.2.0/24"
    assert address_prefix("127.0.0.1:9") == address_prefix("127.0.0.200:1") == "127.0.0.0/24"
    assert address_prefix("") != address_prefix("127.0.0.1:1")
    table: PendingTable[str] = PendingTable(total=4, per_prefix=3)
    for key, prefix in (("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A")):
        table.add(key, prefix)
    assert table.full and table.prefix_full("A") and not table.prefix_full("B")
    assert table.victim(lambda key: True) == "a1"  # oldest of the prefix holding the most
    assert table.victim(lambda key: key != "a1") == "a2"
    assert table.victim(lambda key: key == "b1") == "b1"
    assert table.victim(lambda key: False) is None
    table.discard("a1")
    assert len(table) == 3 and table.count("A") == 2 and "a1" not in table
    buckets = KeyedRateLimiter(rate=0.0, burst=2, max_keys=2)
    assert [buckets.allow("A", NOW) for _ in range(3)] == [True, True, False]
    buckets.allow("B", NOW)
    buckets.allow("C", NOW)  # A, used least recently, is forgotten: it comes back full
    assert len(buckets) == 2 and buckets.allow("A", NOW)


# ------------------------------------------------------------------ on the wire: a node process


@pytest.fixture
def target(tmp_path: Path) -> Any:
    qiz(tmp_path, "--home", "target", "init")
    with node_processes(tmp_path) as start:
        yield start("target")


def counters(node: NodeProcess) -> dict[str, int]:
    """The node's link counters, over its control socket."""
    return node.request("status")["result"]["link_counters"]


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def open_from(address: str, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*host_port(address), local_addr=(source, 0))


async def first_frame(reader: asyncio.StreamReader) -> tuple[FrameKind, bytes]:
    """The first whole frame the node sends (or raises if it closes first)."""
    decoder = FrameDecoder(MAX_BODY)
    while True:
        data = await asyncio.wait_for(reader.read(65536), HANG_GUARD)
        if not data:
            raise AssertionError("the node closed without a frame")
        frames = decoder.feed(data)
        if frames:
            return frames[0].kind, bytes(frames[0].body)


async def node_record(address: str) -> PeerRecord:
    """HELLO on a raw socket: the node hands out its peer record (public, as in the protocol)."""
    reader, writer = await asyncio.open_connection(*host_port(address))
    writer.write(encode_frame(FrameKind.HELLO, VERSION.to_bytes(2, "big")))
    kind, body = await first_frame(reader)
    writer.close()
    assert kind is FrameKind.RECORD
    return PeerRecord.verify(body, now=time.time())


async def send_init(address: str, body: bytes, source: str) -> tuple[FrameKind, bytes]:
    """One INIT on a new connection from ``source``; the node's answer; then hang up."""
    reader, writer = await open_from(address, source)
    try:
        writer.write(encode_frame(FrameKind.INIT, body))
        return await first_frame(reader)
    finally:
        writer.close()


def fresh_inits(server: PeerRecord, count: int) -> list[bytes]:
    """``count`` valid INITs from one throwaway identity, each with a fresh KEM ciphertext."""
    identity = NodeIdentity.generate()
    record = PeerRecord.create(identity, [], seq=1, now=time.time())
    return [InitiatorHandshake(identity, record, server).init_message() for _ in range(count)]


def test_zero_length_frame_on_the_wire_gets_an_error_frame_not_a_traceback(
    target: NodeProcess,
) -> None:
    async def attack() -> list[bytes]:
        answers = []
        for kind in (FrameKind.INIT, FrameKind.HELLO, FrameKind.DATA, FrameKind.ERROR):
            reader, writer = await asyncio.open_connection(*host_port(target.address))
            writer.write(bytes([kind]) + b"\x00\x00\x00")
            data, _ = await read_until_closed(reader, HANG_GUARD)
            writer.close()
            answers.append(data)
        return answers

    for data in run(attack(), timeout=60):
        (frame,) = FrameDecoder(MAX_BODY).feed(data)
        assert frame.kind is FrameKind.ERROR
        assert int.from_bytes(frame.body[:2], "big") == ErrorCode.PROTOCOL_ERROR
        assert b"empty" in bytes(frame.body)
    assert counters(target)["handshakes_failed"] == 4
    _, log = target.output()
    assert "Traceback" not in log and "IndexError" not in log
    assert target.alive()


def test_silent_connections_cannot_take_every_inbound_slot(target: NodeProcess) -> None:
    """More silent connections than the node has pending slots (and than it had inbound
    slots before), from five networks: a newcomer still links and answers, the silent ones are
    refused, dropped to make room, or closed at the pending deadline, and none is left."""
    others = [f"127.0.{net}.1" for net in range(2, 6)]
    per_other = MAX_PENDING_PER_PREFIX - 4
    silent_total = MAX_PENDING_PER_PREFIX + 8 + per_other * len(others)
    assert silent_total > MAX_PENDING and silent_total > 256  # 312: over the old inbound cap

    async def attack() -> list[ErrorCode]:
        # one network up to its cap, then 8 more from it (refused), then four more networks
        # (the node's total is reached: the oldest silent ones of the busiest network go)
        first = [
            await open_from(target.address, "127.0.1.1") for _ in range(MAX_PENDING_PER_PREFIX)
        ]
        over = [await open_from(target.address, "127.0.1.1") for _ in range(8)]
        rest = [await open_from(target.address, src) for src in others for _ in range(per_other)]
        streams = first + over + rest
        assert len(streams) == silent_total
        # The flood is in place; a legitimate peer from 127.0.0.1 links and is served.
        link, rpc = await client(target.address, timeout=HANG_GUARD)
        assert await rpc.call("qmp.ping", "still here") == "still here"
        link.close()
        codes = []
        for reader, writer in streams:
            data, _ = await read_until_closed(reader, HANG_GUARD)
            writer.close()
            (frame,) = FrameDecoder(MAX_BODY).feed(data)
            assert frame.kind is FrameKind.ERROR
            codes.append(ErrorCode(int.from_bytes(frame.body[:2], "big")))
        return codes

    codes = run(attack(), timeout=120)
    assert set(codes) <= {ErrorCode.BUSY, ErrorCode.HANDSHAKE_TIMEOUT}
    seen = eventually(
        lambda: (c := counters(target))["pending"] == 0 and c,
        timeout=HANG_GUARD,
        what="no handshake left in progress",
    )
    assert seen["pending_timed_out"] == codes.count(ErrorCode.HANDSHAKE_TIMEOUT) >= 1
    assert seen["pending_refused"] == 8 and seen["pending_evicted"] >= 1
    assert seen["pending_refused"] + seen["pending_evicted"] == codes.count(ErrorCode.BUSY)
    assert seen["handshakes_ok"] == 1 and seen["kem_decapsulations"] == 1


def test_one_init_replayed_many_times_costs_one_decapsulation(target: NodeProcess) -> None:
    async def attack() -> list[FrameKind]:
        server = await node_record(target.address)
        (init,) = fresh_inits(server, 1)
        answers = [(await send_init(target.address, init, "127.0.1.1"))[0]]
        for _ in range(10):  # byte for byte
            answers.append((await send_init(target.address, init, "127.0.1.1"))[0])
        for _ in range(10):  # payload altered, mac1 recomputed: same KEM ciphertext
            answers.append((await send_init(target.address, altered(init, server), "127.0.2.1"))[0])
        return answers

    answers = run(attack(), timeout=60)
    assert answers[0] is FrameKind.RESPONSE
    assert answers[1:] == [FrameKind.ERROR] * 20
    seen = counters(target)
    assert seen["kem_decapsulations"] == 1 and seen["init_replays_refused"] == 20


def test_an_init_flood_from_one_network_is_held_to_its_kem_budget(target: NodeProcess) -> None:
    sent = 400
    concurrency = 16  # well under the per-prefix pending cap and the cookie threshold

    async def attack() -> tuple[list[FrameKind], float]:
        server = await node_record(target.address)
        inits = fresh_inits(server, sent)  # made before the flood: only sending is timed
        queue = list(inits)
        answers: list[FrameKind] = []

        async def worker() -> None:
            while queue:
                answers.append((await send_init(target.address, queue.pop(), "127.0.1.1"))[0])

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
        # a peer from another network is not held back by the flood's budget
        link, rpc = await client(target.address, timeout=HANG_GUARD)
        assert await rpc.call("qmp.ping", 1) == 1
        link.close()
        return answers, elapsed

    answers, elapsed = run(attack(), timeout=120)
    seen = counters(target)
    flood_kem = seen["kem_decapsulations"] - 1  # the legitimate peer's handshake
    # every INIT was either decapsulated (and answered) or held back (a COOKIE), none both
    assert flood_kem + seen["kem_rate_limited"] == sent
    assert answers.count(FrameKind.RESPONSE) == flood_kem
    assert answers.count(FrameKind.COOKIE) == seen["kem_rate_limited"] == seen["cookies_sent"]
    # the bucket's own bound: its burst plus what it refilled while the flood lasted
    assert flood_kem <= KEM_BURST_PER_PREFIX + KEM_RATE_PER_PREFIX * elapsed + 1
    assert seen["kem_rate_limited"] > 0


def test_slots_kept_for_known_peers_survive_a_crowd_of_new_identities() -> None:
    """Fresh identities are cheap: once they hold every inbound slot but the reserved ones,
    the next new identity is closed (BUSY) after its handshake, while a peer the node dialled
    itself still links in."""

    async def scenario() -> None:
        node = make_node(config=manager(max_inbound=8, reserved_known=2))
        friend = make_node()
        async with running(node, friend):
            await node.connect(friend.address, friend.node_id)  # dialled by the node: known
            crowd = [await client(node.address) for _ in range(6)]  # 6 = 8 - 2 reserved
            for _link, rpc in crowd:
                assert await rpc.call("qmp.ping", 1) == 1
            late_link, _ = await client(node.address)
            await late_link.wait_closed()
            code, _reason, by_peer = late_link.closed.result()
            assert code is ErrorCode.BUSY and by_peer
            # the friend dials in with its own identity: a reserved slot takes it
            link, rpc = await client(node.address, friend.identity)
            assert await rpc.call("qmp.ping", "friend") == "friend"
            seen = node.links.counters_snapshot()
            assert seen["unknown_refused"] == 1 and seen["inbound_full"] == 0
            for other, _ in [*crowd, (link, rpc)]:
                other.close()

    run(scenario())


def test_links_settings_in_config_toml_reach_the_listener(tmp_path: Path) -> None:
    """``[links]`` in config.toml tunes the admission limits of a real node: with
    ``max_pending_per_prefix = 2`` a third silent connection from one network is refused
    with BUSY at once (the default would have taken 64)."""
    qiz(tmp_path, "--home", "tuned", "init")
    config = tmp_path / "tuned" / "config.toml"
    config.write_text(config.read_text() + "\n[links]\nmax_pending_per_prefix = 2\n")
    with node_processes(tmp_path) as start:
        node = start("tuned")

        async def attack() -> tuple[FrameKind, bytes]:
            held = [await open_from(node.address, "127.0.7.1") for _ in range(2)]
            try:
                reader, writer = await open_from(node.address, "127.0.7.1")
                try:
                    return await first_frame(reader)
                finally:
                    writer.close()
            finally:
                for _, writer in held:
                    writer.close()

        kind, body = run(attack(), timeout=60)
        assert kind is FrameKind.ERROR
        assert int.from_bytes(body[:2], "big") == ErrorCode.BUSY
        assert counters(node)["pending_refused"] == 1


# ------------------------------------------------------------------ review of items 5/6


def test_a_responder_waits_for_the_confirm_only_confirm_timeout() -> None:
    """An initiator that sends its INIT and never confirms holds the responder's pending slot
    (after one decapsulation) for CONFIRM_TIMEOUT, not for the whole handshake timeout."""
    (ia, ra), (ib, rb) = party(), party()
    initiator = Connection.initiator(ia, ra, expected=rb, now=NOW)
    initiator.start(NOW)
    conn = responder(ib, rb, CookieAuthority(ib.xwing_public.raw, now=NOW), "10.0.0.1:1")
    conn.receive_data(initiator.data_to_send(), NOW)
    assert conn.kem_operations == 1 and conn.state is State.AWAIT_CONFIRM
    assert conn.config.handshake_timeout > CONFIRM_TIMEOUT
    assert conn.next_deadline() == NOW + CONFIRM_TIMEOUT
    assert conn.tick(NOW + CONFIRM_TIMEOUT - 0.01) == []
    (closed,) = conn.tick(NOW + CONFIRM_TIMEOUT)
    assert isinstance(closed, ConnectionClosed) and closed.code is ErrorCode.HANDSHAKE_TIMEOUT


async def init_and_hold(
    address: str, server: PeerRecord, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A valid INIT from ``source``, its RESPONSE read, and no CONFIRM ever: the connection is
    left open, decapsulated and waiting."""
    (init,) = fresh_inits(server, 1)
    reader, writer = await open_from(address, source)
    writer.write(encode_frame(FrameKind.INIT, init))
    kind, _ = await first_frame(reader)
    assert kind is FrameKind.RESPONSE
    return reader, writer


def test_inits_never_confirmed_from_two_networks_cannot_lock_out_a_newcomer() -> None:
    """Two networks fill every pending slot with connections whose INIT was decapsulated and
    that never send their CONFIRM (the deadlines are set long, so only eviction can help): a
    newcomer from a third network still links, and the oldest of the busiest network's
    handshakes is dropped for it."""
    per_prefix, total = 4, 8
    config = manager(
        max_pending=total,
        max_pending_per_prefix=per_prefix,
        pending_timeout=120.0,
        cookie_threshold=1000,  # no cookies: every INIT is decapsulated
        qmp=qmp(handshake_timeout=120.0, confirm_timeout=120.0),
    )

    async def scenario() -> None:
        node = make_node(config=config)
        async with running(node):
            server = node.record()
            held = [
                await init_and_hold(node.address, server, src)
                for src in ("127.0.1.1", "127.0.2.1")
                for _ in range(per_prefix)
            ]
            seen = node.links.counters_snapshot()
            assert seen["pending"] == total and seen["kem_decapsulations"] == total
            link, rpc = await client(node.address, timeout=HANG_GUARD)
            assert await rpc.call("qmp.ping", "in") == "in"
            link.close()
            seen = node.links.counters_snapshot()
            assert seen["pending_evicted"] == 1 and seen["pending_refused"] == 0
            assert seen["handshakes_ok"] == 1
            # the one dropped is the oldest (127.0.1.1's first): the node hung up on it
            await read_until_closed(held[0][0], HANG_GUARD)
            assert node.links.counters_snapshot()["pending"] == total - 1
            for _, writer in held:
                writer.close()

    run(scenario(), timeout=120)


def test_one_network_of_new_identities_is_held_to_its_share_of_inbound_links() -> None:
    """Cheap identities from one /24 take at most ``max_inbound_per_prefix`` established
    inbound links, however many unreserved slots are free; a contact of the node's routing
    table (a known peer) from the same network still links in."""

    async def scenario() -> None:
        node = make_node(config=manager(max_inbound=16, reserved_known=4, max_inbound_per_prefix=3))
        friend = make_node()
        async with running(node, friend):
            crowd = [await client(node.address) for _ in range(3)]
            for _link, rpc in crowd:
                assert await rpc.call("qmp.ping", 1) == 1
            late_link, _ = await client(node.address)
            await late_link.wait_closed()
            code, _reason, by_peer = late_link.closed.result()
            assert code is ErrorCode.BUSY and by_peer
            assert node.links.listener.established_count == 3  # of 12 unreserved slots
            # the friend is in the node's routing table (not dialled, not pinned): known
            assert node.links.known_peer is not None
            assert not node.links.known_peer(friend.node_id)
            node.dht.table.add(friend.node_id.digest, friend.address, time.time())
            assert node.links.is_known(friend.node_id)
            link, rpc = await client(node.address, friend.identity)
            assert await rpc.call("qmp.ping", "friend") == "friend"
            seen = node.links.counters_snapshot()
            assert seen["prefix_inbound_full"] == 1 and seen["unknown_refused"] == 0
            for other, _ in [*crowd, (link, rpc)]:
                other.close()

    run(scenario())


def test_connections_refused_at_accept_do_not_count_as_established() -> None:
    """Every inbound slot taken: a connection accepted now is refused (BUSY) and lingers in
    the listener until its socket closes. It must not count as established, or a known peer
    arriving in that window (during a flood, a whole batch of them) finds no slot."""

    async def scenario() -> None:
        node = make_node(config=manager(max_inbound=4, reserved_known=1))
        friends = [make_node(), make_node()]
        async with running(node, *friends):
            for friend in friends:  # contacts of the node's routing table: known peers
                node.dht.table.add(friend.node_id.digest, friend.address, time.time())
            crowd = [await client(node.address) for _ in range(3)]  # the 3 unreserved slots
            first = await client(node.address, friends[0].identity)  # the reserved one
            listener = node.links.listener
            # a dialer is established a moment before the node has read its last message
            await async_eventually(lambda: listener.established_count == 4, what="4 links")
            # what the event loop does when the flood's next connections are accepted: each
            # is refused at once, and stays in the listener until its socket has closed
            refused = [listener._make_link() for _ in range(5)]
            assert all(r.conn.closed for r in refused)
            assert listener.counters["inbound_full"] == 5
            assert listener.established_count == 4
            crowd[0][0].close()
            while listener.established_count > 3:
                await asyncio.sleep(0.01)
            link, rpc = await client(node.address, friends[1].identity)
            assert await rpc.call("qmp.ping", "friend") == "friend"  # established on both sides
            assert listener.established_count == 4
            for other, _ in [*crowd[1:], first, (link, rpc)]:
                other.close()
            for r in refused:
                r.close()

    run(scenario())


def test_the_cookie_threshold_is_one_constant() -> None:
    assert ManagerConfig().cookie_threshold == COOKIE_THRESHOLD
    assert ManagerConfig().max_inbound_per_prefix == MAX_INBOUND_PER_PREFIX
