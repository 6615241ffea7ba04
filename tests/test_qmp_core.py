"""The sans-IO QMP core: handshake vector, authentication failures, tampering, replay, rekey,
cookies, limits and timeouts -- no sockets, time passed in by hand."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.channel import Channel, ChannelConfig, InnerType
from qiz.qmp.connection import (
    Connection,
    ConnectionClosed,
    ConnectionStateError,
    FrameDropped,
    HandshakeComplete,
    MessageReceived,
    PongReceived,
    QmpConfig,
    State,
)
from qiz.qmp.cookie import CookieAuthority
from qiz.qmp.errors import ErrorCode, QmpError
from qiz.qmp.frames import FrameDecoder, FrameKind, encode_frame

from .qmp_vector import NOW, VECTOR, transcript

ADDR = "127.0.0.1:40000"


class Party:
    def __init__(self) -> None:
        self.identity = NodeIdentity.generate()
        self.record = PeerRecord.create(self.identity, ["127.0.0.1:1"], seq=1, now=NOW)
        # The clock here stands still, so no KEM bucket would ever refill: a budget that
        # outlasts every handshake of the module (the budget has tests of its own).
        self.cookies = CookieAuthority(self.identity.xwing_public.raw, now=NOW, kem_burst=1_000_000)

    def responder(self, config: QmpConfig | None = None) -> Connection:
        return Connection.responder(
            self.identity,
            self.record,
            cookies=self.cookies,
            peer_address=ADDR,
            now=NOW,
            config=config,
        )


@pytest.fixture(scope="module")
def alice() -> Party:
    return Party()


@pytest.fixture(scope="module")
def bob() -> Party:
    return Party()


def pump(a: Connection, b: Connection, now: float = NOW, rounds: int = 6) -> tuple[list, list]:
    """Carry bytes both ways until quiet; return the events each side saw."""
    ea: list = []
    eb: list = []
    for _ in range(rounds):
        out_a = a.data_to_send()
        if out_a:
            eb += b.receive_data(out_a, now)
        out_b = b.data_to_send()
        if out_b:
            ea += a.receive_data(out_b, now)
        if not out_a and not out_b:
            break
    return ea, eb


def linked(
    alice: Party, bob: Party, config: QmpConfig | None = None
) -> tuple[Connection, Connection]:
    a = Connection.initiator(
        alice.identity, alice.record, expected=bob.record, now=NOW, config=config
    )
    b = bob.responder(config)
    a.start(NOW)
    pump(a, b)
    assert a.established and b.established
    return a, b


# ------------------------------------------------------------------ the transcript vector


def test_transcript_vector_reproduces() -> None:
    vector = json.loads(VECTOR.read_text())
    again = transcript(
        bytes.fromhex(vector["initiator_record"]), bytes.fromhex(vector["responder_record"])
    )
    assert again == vector["transcript"]


# ------------------------------------------------------------------ handshakes that succeed


@pytest.mark.parametrize("knows", ["record", "id", "nothing"])
def test_handshake_modes(alice: Party, bob: Party, knows: str) -> None:
    expected = {"record": bob.record, "id": bob.identity.node_id, "nothing": None}[knows]
    a = Connection.initiator(alice.identity, alice.record, expected=expected, now=NOW)
    b = bob.responder()
    a.start(NOW)
    first = a.data_to_send()
    assert first[0] == (FrameKind.INIT if knows == "record" else FrameKind.HELLO)
    ea, eb = b.receive_data(first, NOW), []
    ea, eb2 = pump(a, b)
    events_a = [e for e in ea if isinstance(e, HandshakeComplete)]
    events_b = [e for e in eb + eb2 if isinstance(e, HandshakeComplete)]
    assert events_a[0].peer.node_id == bob.identity.node_id
    assert events_b[0].peer.node_id == alice.identity.node_id
    assert events_a[0].handshake_hash == events_b[0].handshake_hash


def test_messages_pings_and_close(alice: Party, bob: Party) -> None:
    a, b = linked(alice, bob)
    a.send(b"job spec", NOW)
    b.send(b"result", NOW)
    a.ping(b"t1", NOW)
    ea, eb = pump(a, b)
    assert MessageReceived(b"job spec") in eb
    assert MessageReceived(b"result") in ea
    assert PongReceived(b"t1") in ea
    a.close(ErrorCode.NORMAL_CLOSE, "bye", NOW)
    _, eb = pump(a, b)
    assert eb == [ConnectionClosed(ErrorCode.NORMAL_CLOSE, "bye", by_peer=True)]
    assert b.closed and a.closed
    with pytest.raises(ConnectionStateError):
        a.send(b"late", NOW)


def test_responder_waits_for_key_confirmation(alice: Party, bob: Party) -> None:
    """R holds keys after INIT but calls I authenticated only after I's first valid frame."""
    a = Connection.initiator(alice.identity, alice.record, expected=bob.record, now=NOW)
    b = bob.responder()
    a.start(NOW)
    b.receive_data(a.data_to_send(), NOW)
    assert b.state is State.AWAIT_CONFIRM
    with pytest.raises(ConnectionStateError):
        b.send(b"too early", NOW)
    a.receive_data(b.data_to_send(), NOW)
    events = b.receive_data(a.data_to_send(), NOW)
    assert isinstance(events[0], HandshakeComplete) and b.established


# ------------------------------------------------------------------ who is on the other end


def test_wrong_expected_id_fails(alice: Party, bob: Party) -> None:
    carol = Party()
    a = Connection.initiator(alice.identity, alice.record, expected=carol.identity.node_id, now=NOW)
    b = bob.responder()
    a.start(NOW)
    ea, _ = pump(a, b)
    closed = [e for e in ea if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].code is ErrorCode.UNEXPECTED_PEER
    assert not a.established


def test_wrong_responder_key_fails(alice: Party, bob: Party) -> None:
    """Alice holds Bob's record but Carol answers at that address: Carol cannot derive keys."""
    carol = Party()
    a = Connection.initiator(alice.identity, alice.record, expected=bob.record, now=NOW)
    c = carol.responder()
    a.start(NOW)
    ea, ec = pump(a, c)
    assert any(
        isinstance(e, ConnectionClosed) and e.code is ErrorCode.AUTHENTICATION_FAILED for e in ec
    )
    assert any(isinstance(e, ConnectionClosed) and e.by_peer for e in ea)
    assert not a.established and not c.established


def test_impostor_with_stolen_record_cannot_finish(alice: Party, bob: Party) -> None:
    """Mallory presents Alice's (public) record as her own: she cannot decapsulate ct3, so
    Bob never accepts her as Alice."""
    mallory = NodeIdentity.generate()
    a = Connection.initiator(mallory, alice.record, expected=bob.record, now=NOW)
    b = bob.responder()
    a.start(NOW)
    _ea, eb = pump(a, b)
    assert not a.established
    assert not any(isinstance(e, HandshakeComplete) for e in eb)
    assert not b.established


def test_relay_can_neither_read_nor_alter(alice: Party, bob: Party) -> None:
    a, b = linked(alice, bob)
    secret = b"the secret QAOA angles 0.3927 0.1963"
    a.send(secret, NOW)
    wire_bytes = a.data_to_send()
    assert secret not in wire_bytes and secret[:8] not in wire_bytes
    tampered = bytearray(wire_bytes)
    tampered[-5] ^= 0x40
    events = b.receive_data(bytes(tampered), NOW)
    assert not any(isinstance(e, MessageReceived) for e in events)
    assert isinstance(events[-1], ConnectionClosed)
    assert events[-1].code is ErrorCode.AUTHENTICATION_FAILED


# ------------------------------------------------------------------ bit flips (hypothesis)


def handshake_messages(alice: Party, bob: Party, knows_record: bool) -> list[bytes]:
    """The raw bytes of every handshake message, in order, from one clean run."""
    a = Connection.initiator(
        alice.identity, alice.record, expected=bob.record if knows_record else None, now=NOW
    )
    b = bob.responder()
    a.start(NOW)
    messages = []
    for _ in range(4):
        out = a.data_to_send()
        if out:
            messages.append(("a", out))
            b.receive_data(out, NOW)
        out = b.data_to_send()
        if out:
            messages.append(("b", out))
            a.receive_data(out, NOW)
    return messages


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_every_bit_flip_in_the_handshake_is_detected(alice: Party, bob: Party, data) -> None:
    knows_record = data.draw(st.booleans())
    messages = handshake_messages(alice, bob, knows_record)
    target = data.draw(st.integers(0, len(messages) - 1))
    bit = data.draw(st.integers(0, len(messages[target][1]) * 8 - 1))
    a = Connection.initiator(
        alice.identity, alice.record, expected=bob.record if knows_record else None, now=NOW
    )
    b = bob.responder()
    a.start(NOW)
    sent = 0
    events = {"a": [], "b": []}
    for _ in range(4):
        for side, conn, other in (("a", a, b), ("b", b, a)):
            out = conn.data_to_send()
            if not out:
                continue
            if sent == target:
                flipped = bytearray(out)
                flipped[bit // 8] ^= 1 << (bit % 8)
                out = bytes(flipped)
            sent += 1
            events["b" if side == "a" else "a"] += other.receive_data(out, NOW)
    # Whatever was flipped, no link comes up on either side -- after the timeout at the latest.
    later = NOW + 60
    events["a"] += a.tick(later)
    events["b"] += b.tick(later)
    assert not (a.established and b.established)
    assert a.closed or b.closed


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_every_bit_flip_in_a_data_frame_is_detected(alice: Party, bob: Party, data) -> None:
    a, b = linked(alice, bob)
    payload = data.draw(st.binary(min_size=0, max_size=64))
    a.send(payload, NOW)
    frame = bytearray(a.data_to_send())
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    events = b.receive_data(bytes(frame), NOW) + b.tick(NOW + 1000)
    assert not any(isinstance(e, MessageReceived) for e in events)
    assert any(isinstance(e, ConnectionClosed | FrameDropped) for e in events)


# ------------------------------------------------------------------ replay and reordering


def test_replayed_frame_is_dropped(alice: Party, bob: Party) -> None:
    a, b = linked(alice, bob)
    a.send(b"pay 1 credit", NOW)
    frame = a.data_to_send()
    assert b.receive_data(frame, NOW) == [MessageReceived(b"pay 1 credit")]
    assert b.receive_data(frame, NOW) == [FrameDropped("replayed or too old")]
    a.send(b"next", NOW)
    assert b.receive_data(a.data_to_send(), NOW) == [MessageReceived(b"next")]


def test_channel_accepts_reordering_within_the_window() -> None:
    config = ChannelConfig(replay_window=64)
    tx = Channel(b"\x01" * 32, b"\x02" * 32, now=NOW, config=config)
    rx = Channel(b"\x02" * 32, b"\x01" * 32, now=NOW, config=config)
    frames = [tx.seal(InnerType.APP, bytes([i]), NOW) for i in range(100)]
    order = list(range(30, 100)) + list(range(60, 70)) + list(range(29, -1, -1))
    got = [rx.open(frames[i], NOW) for i in order]
    delivered = [g[1][0] for g in got if g is not None]
    assert delivered == list(range(30, 100))  # duplicates and too-old frames dropped
    assert rx.replays_dropped == 10 + 30


# ------------------------------------------------------------------ rekeying


def test_rekey_by_time_and_volume_without_loss(alice: Party, bob: Party) -> None:
    config = QmpConfig(
        channel=ChannelConfig(rekey_interval=120, rekey_bytes=4096, reject_after=180)
    )
    a, b = linked(alice, bob, config)
    received = []
    now = NOW
    for i in range(500):
        now += 5.0  # 2500 s in all: many time-based rekeys as well as volume-based ones
        a.send(i.to_bytes(4, "big") * 64, now)
        b.send(i.to_bytes(4, "big"), now)
        _ea, eb = pump(a, b, now)
        received += [e.payload for e in eb if isinstance(e, MessageReceived)]
    assert received == [i.to_bytes(4, "big") * 64 for i in range(500)]
    assert a._channel.send_epoch >= 25  # type: ignore[union-attr]
    assert b._channel.recv_epoch == a._channel.send_epoch  # type: ignore[union-attr]


def test_key_used_past_its_lifetime_is_refused() -> None:
    lazy = ChannelConfig(rekey_interval=10**9, reject_after=180)
    strict = ChannelConfig(rekey_interval=120, reject_after=180)
    tx = Channel(b"\x01" * 32, b"\x02" * 32, now=NOW, config=lazy)
    rx = Channel(b"\x02" * 32, b"\x01" * 32, now=NOW, config=strict)
    assert rx.open(tx.seal(InnerType.APP, b"ok", NOW + 100), NOW + 100) == (InnerType.APP, b"ok")
    with pytest.raises(QmpError) as info:
        rx.open(tx.seal(InnerType.APP, b"stale", NOW + 200), NOW + 200)
    assert info.value.code is ErrorCode.KEY_EXPIRED


def test_old_epoch_keys_are_forgotten() -> None:
    config = ChannelConfig(rekey_interval=100, previous_key_grace=5)
    tx = Channel(b"\x01" * 32, b"\x02" * 32, now=NOW, config=config)
    rx = Channel(b"\x02" * 32, b"\x01" * 32, now=NOW, config=config)
    old = tx.seal(InnerType.APP, b"epoch 0", NOW + 1)
    assert rx.open(tx.seal(InnerType.APP, b"epoch 1", NOW + 101), NOW + 101) is not None
    assert rx.open(old, NOW + 102) == (InnerType.APP, b"epoch 0")  # in flight: still accepted
    late = tx.seal(InnerType.APP, b"x", NOW + 103)
    assert rx.open(late, NOW + 103) is not None
    with pytest.raises(QmpError):  # epoch 0 key erased after the grace period
        rx.open(b"\x00" * 4 + (10**6).to_bytes(8, "big") + old[12:], NOW + 200)


# ------------------------------------------------------------------ cookies under load


@pytest.fixture
def loaded_bob(bob: Party):
    """Bob with his cookie authority under load (restored afterwards)."""
    bob.cookies.under_load = True
    yield bob
    bob.cookies.under_load = False


def first_init(alice: Party, bob: Party) -> tuple[Connection, bytes]:
    a = Connection.initiator(alice.identity, alice.record, expected=bob.record, now=NOW)
    a.start(NOW)
    return a, a.data_to_send()


def test_flood_of_inits_costs_no_kem_work_under_load(alice: Party, loaded_bob: Party) -> None:
    inits = [first_init(alice, loaded_bob)[1] for _ in range(3)]
    total_kem = 0
    for i in range(100):
        b = loaded_bob.responder()
        assert b.receive_data(inits[i % 3], NOW) == []
        total_kem += b.kem_operations
        assert b.data_to_send()[0] == FrameKind.COOKIE
    assert total_kem == 0
    assert loaded_bob.cookies.cookies_sent >= 100


def test_cookie_round_trip_completes_the_handshake(alice: Party, loaded_bob: Party) -> None:
    a, init = first_init(alice, loaded_bob)
    b = loaded_bob.responder()
    b.receive_data(init, NOW)
    cookie_frame = b.data_to_send()
    assert cookie_frame[0] == FrameKind.COOKIE
    assert b.kem_operations == 0
    a.receive_data(cookie_frame, NOW)
    pump(a, b)
    assert a.established and b.established and b.kem_operations == 1


def test_cookie_is_bound_to_the_address(alice: Party, loaded_bob: Party) -> None:
    a, init = first_init(alice, loaded_bob)
    b = loaded_bob.responder()
    b.receive_data(init, NOW)
    a.receive_data(b.data_to_send(), NOW)
    retry = a.data_to_send()
    elsewhere = Connection.responder(
        loaded_bob.identity,
        loaded_bob.record,
        cookies=loaded_bob.cookies,
        peer_address="10.9.9.9:1",
        now=NOW,
    )
    elsewhere.receive_data(retry, NOW)
    assert elsewhere.data_to_send()[0] == FrameKind.COOKIE
    assert elsewhere.kem_operations == 0


# ------------------------------------------------------------------ limits, garbage, timeouts


def test_frame_decoder_limits() -> None:
    decoder = FrameDecoder(max_body=1000)
    with pytest.raises(QmpError) as info:
        decoder.feed(bytes([FrameKind.DATA]) + (5000).to_bytes(3, "big"))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(QmpError) as info:
        FrameDecoder(1000).feed(b"\x99\x00\x00\x01x")
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    decoder = FrameDecoder(1000)
    frame = encode_frame(FrameKind.HELLO, b"\x00\x01")
    assert decoder.feed(frame[:3]) == []
    assert [f.body for f in decoder.feed(frame[3:] + frame)] == [b"\x00\x01", b"\x00\x01"]


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=6))
def test_arbitrary_bytes_never_raise(bob: Party, chunks: list[bytes]) -> None:
    """Whatever arrives, the state machine answers with events, never an exception."""
    b = bob.responder()
    for chunk in chunks:
        for event in b.receive_data(chunk, NOW):
            assert isinstance(event, ConnectionClosed | FrameDropped)
        b.data_to_send()
    assert not b.established


def test_handshake_timeout(alice: Party, bob: Party) -> None:
    b = bob.responder(QmpConfig(handshake_timeout=5))
    b.receive_data(b"\x03\x00", NOW)  # two bytes of an INIT header, then silence
    assert b.tick(NOW + 4) == []
    events = b.tick(NOW + 6)
    assert events[0].code is ErrorCode.HANDSHAKE_TIMEOUT and b.closed


def test_idle_timeout(alice: Party, bob: Party) -> None:
    a, _b = linked(alice, bob, QmpConfig(idle_timeout=30))
    assert a.tick(NOW + 20) == []
    assert a.tick(NOW + 31)[0].code is ErrorCode.IDLE_TIMEOUT


def test_send_limits(alice: Party, bob: Party) -> None:
    config = QmpConfig(max_frame_body=2000, max_outbound_buffer=5000)
    a, _ = linked(alice, bob, config)
    with pytest.raises(ValueError, match="frame limit"):
        a.send(b"x" * 2000, NOW)
    a.send(b"x" * 1900, NOW)
    a.send(b"x" * 1900, NOW)
    with pytest.raises(BufferError):
        a.send(b"x" * 1900, NOW)
    a.data_to_send()
    a.send(b"x" * 1900, NOW)


def test_unsupported_version_is_refused(bob: Party) -> None:
    b = bob.responder()
    events = b.receive_data(encode_frame(FrameKind.HELLO, b"\x00\x09"), NOW)
    assert events[0].code is ErrorCode.UNSUPPORTED_VERSION
    assert b.data_to_send()[0] == FrameKind.ERROR


def test_only_one_hello_is_answered(bob: Party) -> None:
    """A HELLO flood cannot make the responder repeat its 6.7 KB record."""
    b = bob.responder()
    events = b.receive_data(encode_frame(FrameKind.HELLO, b"\x00\x01") * 1000, NOW)
    assert events[-1].code is ErrorCode.PROTOCOL_ERROR
    assert len(b.data_to_send()) < 2 * len(bob.record.raw)


def test_ping_flood_without_reading_is_cut_off(alice: Party, bob: Party) -> None:
    config = QmpConfig(max_outbound_buffer=64 * 1024)
    a, b = linked(alice, bob, config)
    pings = b""
    for _ in range(40):
        a.ping(b"p" * 4000, NOW)
        pings += a.data_to_send()
    events = b.receive_data(pings, NOW)  # b never drains its output
    assert events[-1].code is ErrorCode.BUFFER_LIMIT


# ------------------------------------------------------------------ timers: next_deadline / tick


def test_next_deadline_follows_the_link_through_its_life(alice: Party, bob: Party) -> None:
    config = QmpConfig(handshake_timeout=7, idle_timeout=30)
    b = bob.responder(config)
    assert b.next_deadline() == NOW + 7  # the handshake, counted from the link's start
    b.receive_data(b"\x03\x00", NOW + 3)  # handshake bytes do not push it back
    assert b.next_deadline() == NOW + 7
    a, b = linked(alice, bob, config)
    assert a.next_deadline() == b.next_deadline() == NOW + 30  # idle, from the last bytes
    a.ping(b"p", NOW + 10)
    assert a.next_deadline() == NOW + 30  # sending does not move it
    b.receive_data(a.data_to_send(), NOW + 10)
    assert b.next_deadline() == NOW + 40  # receiving moves it later
    b.close(now=NOW + 11)
    assert b.next_deadline() is None and b.tick(NOW + 10**6) == []


def test_tick_at_the_deadline_does_what_it_was_for(alice: Party, bob: Party) -> None:
    b = bob.responder(QmpConfig(handshake_timeout=0.1))
    deadline = b.next_deadline()
    assert deadline is not None
    assert b.tick(deadline - 1e-6) == [] and not b.closed
    (event,) = b.tick(deadline)  # at, not only after: a timer armed there must not re-arm
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.HANDSHAKE_TIMEOUT


def test_previous_receive_key_is_erased_when_its_grace_ends() -> None:
    config = ChannelConfig(rekey_interval=100, previous_key_grace=5)
    tx = Channel(b"\x01" * 32, b"\x02" * 32, now=NOW, config=config)
    rx = Channel(b"\x02" * 32, b"\x01" * 32, now=NOW, config=config)
    assert rx.next_deadline() is None
    old = tx.seal(InnerType.APP, b"epoch 0", NOW + 1)
    assert rx.open(tx.seal(InnerType.APP, b"epoch 1", NOW + 101), NOW + 101) is not None
    assert rx.holds_previous_key and rx.next_deadline() == NOW + 106
    rx.tick(NOW + 105.5)
    assert rx.holds_previous_key
    assert rx.open(old, NOW + 105.5) == (InnerType.APP, b"epoch 0")  # still in its grace
    rx.tick(NOW + 106)
    assert not rx.holds_previous_key and rx.next_deadline() is None
    with pytest.raises(QmpError) as info:
        rx.open(old, NOW + 106)
    assert info.value.code is ErrorCode.KEY_EXPIRED


def test_a_rekey_moves_the_connection_deadline_earlier(alice: Party, bob: Party) -> None:
    config = QmpConfig(
        idle_timeout=60, channel=ChannelConfig(rekey_interval=10, previous_key_grace=5)
    )
    a, b = linked(alice, bob, config)
    a.send(b"new epoch", NOW + 20)
    b.receive_data(a.data_to_send(), NOW + 20)
    assert b.next_deadline() == NOW + 25  # the old key's end, before the idle timeout (NOW + 80)
    assert b.tick(NOW + 25) == [] and not b.closed
    assert b.next_deadline() == NOW + 80


@settings(max_examples=60, deadline=None)
@given(
    handshake_timeout=st.floats(0.5, 50),
    idle_timeout=st.floats(0.5, 50),
    grace=st.floats(0.1, 20),
    steps=st.lists(
        st.tuples(st.floats(0, 30), st.sampled_from(["tick", "send", "ping", "half-init"])),
        max_size=25,
    ),
)
def test_tick_before_the_deadline_never_times_out(
    alice: Party,
    bob: Party,
    handshake_timeout: float,
    idle_timeout: float,
    grace: float,
    steps: list[tuple[float, str]],
) -> None:
    """Whatever happens in between, ``tick`` before ``next_deadline()`` changes nothing and
    ``tick`` at or after it does what the deadline was for; sending never moves it earlier."""
    config = QmpConfig(
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
        channel=ChannelConfig(rekey_interval=4, previous_key_grace=grace),
    )
    fresh = bob.responder(config)  # one link stuck in its handshake...
    a, b = linked(alice, bob, config)  # ... and one established link, ticked at B
    now = NOW
    for dt, action in steps:
        now += dt
        if action == "half-init" and not fresh.closed:
            fresh.receive_data(b"\x03", now)  # a trickled handshake byte
        elif action in ("send", "ping") and not a.closed and not b.closed:
            before = a.next_deadline()
            (a.send if action == "send" else a.ping)(b"x", now)
            assert a.next_deadline() == before
            b.receive_data(a.data_to_send(), now)
        for conn in (fresh, b):
            deadline = conn.next_deadline()
            if deadline is None:
                assert conn.closed
                continue
            if now < deadline:
                assert conn.tick(now) == [] and not conn.closed
                assert conn.next_deadline() == deadline
                continue
            events = conn.tick(now)
            if conn is fresh:
                assert [e.code for e in events] == [ErrorCode.HANDSHAKE_TIMEOUT]
            elif now >= conn.last_received + idle_timeout:
                assert [e.code for e in events] == [ErrorCode.IDLE_TIMEOUT]
            else:  # only the previous key's grace ended: erased, the link stays up
                assert deadline < conn.last_received + idle_timeout
                assert events == [] and not conn.closed
                assert conn._channel is not None and not conn._channel.holds_previous_key
                later = conn.next_deadline()
                assert later is not None and later > deadline
