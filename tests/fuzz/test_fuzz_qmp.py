"""Fuzz targets of the wire and QMP layers: canonical CBOR, the frame decoder, both sides of the
handshake (HELLO, RECORD, INIT, COOKIE, RESPONSE, ERROR), and the channel's DATA frames.

A sans-IO :class:`~qiz.qmp.connection.Connection` promises that a protocol failure closes the
link and never raises out of ``receive_data``: that is the property here, checked on streams
of valid frames with mutations. Where an attacker can make a message authenticate (mac1 is
keyed by the responder's *public* key; an established peer holds the channel keys), the
fuzzer does too, so the mutation reaches the code behind the check.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time

from hypothesis import event, example, given
from hypothesis import strategies as st

from qiz import wire
from qiz.identity import PeerRecord
from qiz.qmp.channel import InnerType
from qiz.qmp.connection import HANDSHAKE_MAX_BODY, Connection, ConnectionClosed, State
from qiz.qmp.cookie import MAC_SIZE, CookieAuthority, compute_mac1
from qiz.qmp.errors import ErrorCode, QmpError
from qiz.qmp.frames import HEADER_SIZE, FrameDecoder, FrameKind, encode_frame
from qiz.qmp.handshake import VERSION, _start

from .strategies import (
    PLAIN,
    budget,
    bytes_from,
    cbor,
    identity,
    mutated_bytes,
    mutated_value,
    only,
)

KINDS = [int(k) for k in FrameKind]


def _record(name: str) -> PeerRecord:
    now = time.time()
    return PeerRecord.create(identity(name), ["127.0.0.1:4000"], seq=int(now * 1000), now=now)


@functools.cache
def records() -> tuple[PeerRecord, PeerRecord]:
    """(initiator's, responder's) records, made once."""
    return _record("initiator"), _record("responder")


def frame(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


CUTS = st.lists(st.integers(0, 1 << 16), max_size=4)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (modulo its length): a peer chooses how its bytes arrive."""
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# ----------------------------------------------------------------------------- CBOR


@given(bytes_from(PLAIN.map(cbor)))
@budget(2)
def test_wire_decode_returns_canonical_plain_data_or_wire_error(data: bytes) -> None:
    with only(wire.WireError):
        value = wire.decode(data)
        assert wire.encode(value) == data  # what it accepts is canonical and re-encodes


# ----------------------------------------------------------------------------- frames


FRAME_STREAMS = st.lists(
    st.tuples(st.sampled_from([*KINDS, 0, 7, 255]), st.binary(max_size=80)), max_size=5
).map(lambda frames: b"".join(frame(k, b) for k, b in frames))


@given(CUTS, bytes_from(FRAME_STREAMS), st.sampled_from([64, 1024, HANDSHAKE_MAX_BODY]))
@budget(2)
def test_frame_decoder_returns_frames_or_qmp_error_and_buffers_at_most_one_frame(
    cuts: list[int], stream: bytes, limit: int
) -> None:
    decoder = FrameDecoder(limit)
    with only(QmpError):
        for piece in chunks(stream, cuts):
            for got in decoder.feed(piece):
                assert isinstance(got.kind, FrameKind) and len(got.body) <= limit
            assert decoder.buffered < HEADER_SIZE + limit


# ----------------------------------------------------------------------------- responder


def init_message(payload: bytes, *, version: int = VERSION) -> bytes:
    """An INIT whose encrypted payload is ``payload`` (any bytes), with a valid mac1: what an
    attacker who read the responder's record can send. The KEM parts are real, so the
    responder decapsulates, decrypts and reaches the payload's decoder."""
    from qiz.crypto.xwing import XWingPrivateKey

    _, responder = records()
    state = _start(responder)
    e_pub = XWingPrivateKey.generate().public_key().raw
    head = version.to_bytes(2, "big")
    state.mix_hash(head)
    state.mix_hash(e_pub)
    ss1, ct1 = responder.xwing_key.encapsulate(None)
    state.mix_hash(ct1)
    state.mix_key(ss1)
    enc = state.encrypt_and_hash(payload)
    body = head + e_pub + ct1 + len(enc).to_bytes(2, "big") + enc
    return body + compute_mac1(responder.xwing_key.raw, body) + bytes(MAC_SIZE)


def remac(body: bytes) -> bytes:
    """``body`` with its mac1 recomputed over whatever its message part now holds."""
    _, responder = records()
    if len(body) < 2 * MAC_SIZE:
        return body
    message = body[: -2 * MAC_SIZE]
    return message + compute_mac1(responder.xwing_key.raw, message) + body[-MAC_SIZE:]


def _payloads() -> st.SearchStrategy[bytes]:
    initiator, _ = records()
    valid = {"rec": initiator.raw}
    return st.one_of(
        st.just(wire.encode(valid)),
        st.just(valid).flatmap(mutated_value).map(cbor),
        st.just(initiator.raw).flatmap(mutated_bytes).map(lambda r: wire.encode({"rec": r})),
        bytes_from(st.just(wire.encode(valid))),
        PLAIN.map(cbor),
    )


def responder_connection(*, under_load: bool = False) -> Connection:
    _, record = records()
    cookies = CookieAuthority(record.xwing_key.raw)
    cookies.under_load = under_load
    return Connection.responder(
        identity("responder"),
        record,
        cookies=cookies,
        peer_address="127.0.0.1:5555",
        now=time.time(),
    )


@st.composite
def responder_streams(draw: st.DrawFn) -> bytes:
    """HELLO, INIT (with a fuzzed payload, or a mutated INIT with its mac1 made valid again),
    and stray frames of other kinds."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        choice = draw(st.sampled_from(["hello", "init", "init", "init", "mutated-init", "other"]))
        if choice == "hello":
            body = draw(st.sampled_from([VERSION.to_bytes(2, "big"), b"", b"\x00\x02", b"\x01"]))
            parts.append(frame(FrameKind.HELLO, body))
        elif choice == "init":
            version = draw(st.sampled_from([VERSION, VERSION, VERSION, 0, 65535]))
            parts.append(frame(FrameKind.INIT, init_message(draw(_payloads()), version=version)))
        elif choice == "mutated-init":
            body = draw(mutated_bytes(init_message(wire.encode({"rec": records()[0].raw}))))
            parts.append(frame(FrameKind.INIT, remac(body)))
        else:
            kind = draw(st.sampled_from(KINDS))
            parts.append(frame(kind, draw(st.binary(max_size=64))))
    return b"".join(parts)


def outcome(conn: Connection) -> str:
    """How far an example got (``--hypothesis-show-statistics`` shows the spread)."""
    if conn.close_reason is not None:
        return f"closed: {conn.close_reason.code.name} {conn.close_reason.reason[:40]}"
    return conn.state.value


def _no_raise(conn: Connection, data: bytes) -> list:
    """``receive_data`` must not raise: failures come back as a ConnectionClosed event."""
    with only():
        return conn.receive_data(data, time.time())
    return []


@given(CUTS, responder_streams(), st.booleans())
@example([], b"VALID-INIT", False)
@budget(0.5)
def test_responder_survives_any_handshake_stream(
    cuts: list[int], stream: bytes, under_load: bool
) -> None:
    if stream == b"VALID-INIT":  # the explicit example: a whole, valid INIT
        stream = frame(FrameKind.INIT, init_message(wire.encode({"rec": records()[0].raw})))
    conn = responder_connection(under_load=under_load)
    for piece in chunks(stream, cuts):
        _no_raise(conn, piece)
    if conn.closed:
        assert isinstance(conn.close_reason, ConnectionClosed)
    event(outcome(conn))


# ----------------------------------------------------------------------------- initiator


def _initiator(expected_known: bool) -> Connection:
    initiator, responder = records()
    conn = Connection.initiator(
        identity("initiator"),
        initiator,
        expected=responder if expected_known else responder.node_id,
        now=time.time(),
    )
    conn.start(time.time())
    conn.data_to_send()
    return conn


@st.composite
def initiator_streams(draw: st.DrawFn) -> bytes:
    """What a responder (or someone on the path) answers: RECORD, COOKIE, RESPONSE, ERROR."""
    _, responder = records()
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(KINDS))
        if kind == FrameKind.RECORD:
            body = draw(bytes_from(st.just(responder.raw)))
        elif kind == FrameKind.ERROR:
            code = draw(st.sampled_from([*map(int, ErrorCode), 999]))
            body = code.to_bytes(2, "big") + draw(st.binary(max_size=300))
            body = body[: draw(st.integers(0, len(body)))]
        else:
            body = draw(st.binary(max_size=2 * 1120 + 64))
        parts.append(frame(kind, body))
    return b"".join(parts)


@given(CUTS, initiator_streams(), st.booleans())
@budget(0.5)
def test_initiator_survives_any_answer(cuts: list[int], stream: bytes, known: bool) -> None:
    conn = _initiator(known)
    for piece in chunks(stream, cuts):
        _no_raise(conn, piece)
    event(outcome(conn))


# ----------------------------------------------------------------------------- channel


def established() -> tuple[Connection, Connection]:
    """(initiator, responder) after a real in-memory handshake."""
    b = responder_connection()
    now = time.time()
    a = Connection.initiator(identity("initiator"), records()[0], expected=records()[1], now=now)
    a.start(now)
    b.receive_data(a.data_to_send(), now)
    a.receive_data(b.data_to_send(), now)
    b.receive_data(a.data_to_send(), now)
    assert a.state is State.ESTABLISHED and b.state is State.ESTABLISHED
    return a, b


@st.composite
def channel_frames(draw: st.DrawFn, peer: Connection) -> bytes:
    """DATA frames the authenticated peer seals (any inner type byte, any payload), some then
    mutated, plus plaintext frames that have no place on a channel."""
    assert peer._channel is not None
    out = []
    for _ in range(draw(st.integers(1, 4))):
        inner = draw(st.sampled_from([*map(int, InnerType), 5, 255]))
        if inner == InnerType.CLOSE:
            payload = draw(st.binary(max_size=4)) + draw(st.binary(max_size=300))
        else:
            payload = draw(st.binary(max_size=200))
        body = peer._channel.seal(inner, payload, time.time())  # type: ignore[arg-type]
        if draw(st.integers(0, 3)) == 0:
            body = draw(mutated_bytes(body))
        kind = FrameKind.DATA if draw(st.integers(0, 9)) else draw(st.sampled_from(KINDS))
        out.append(frame(kind, body))
    return b"".join(out)


@given(st.data(), CUTS)
@budget(0.5)
def test_an_established_link_survives_anything_its_peer_seals(
    data: st.DataObject, cuts: list[int]
) -> None:
    attacker, victim = established()
    stream = data.draw(channel_frames(attacker))
    for piece in chunks(stream, cuts):
        events = _no_raise(victim, piece)
        for got in events:
            if isinstance(got, ConnectionClosed):
                assert victim.closed
    event(outcome(victim))


# ----------------------------------------------------------------------------- regressions


@example(frame(FrameKind.HELLO, b""))
@given(st.sampled_from([frame(k, b"") for k in KINDS]))
def test_a_zero_length_frame_is_refused_with_a_qmp_error(stream: bytes) -> None:
    """Issue 13 item 10, found by the frame fuzzer: a frame whose length is 0 and that ends
    the input raised IndexError in FrameDecoder._take (qiz/qmp/frames.py) at d378dc9."""
    decoder = FrameDecoder(1024)
    with contextlib.suppress(QmpError):
        decoder.feed(stream)


def test_encode_frame_round_trips_through_the_decoder() -> None:
    """Sanity of the harness: what the fuzzers build is what a real peer sends."""
    decoder = FrameDecoder(HANDSHAKE_MAX_BODY)
    body = init_message(wire.encode({"rec": records()[0].raw}))
    assert decoder.feed(encode_frame(FrameKind.INIT, body))[0].body == body


def test_adversarial_wire_inputs_stay_within_bounded_memory() -> None:
    """What a 64 KiB message or a frame header can make the decoders allocate: heads that
    announce 2^64-byte strings, nesting thousands deep, 16,383 empty maps (the worst
    amplification: about 20x), a 16 MiB frame announced."""
    from .strategies import peak_bytes

    bound = 4 << 20  # 64x the largest message wire.decode takes
    cases = {
        "huge-length": b"\x5b" + b"\xff" * 8,
        "deep": b"\x81" * 60000 + b"\x00",
        "wide": b"\x9a\x00\x00\xff\xff" + b"\x00" * 60000,
        "many-maps": b"\x99\x3f\xff" + b"\xa0" * 16383,
    }
    for name, data in cases.items():
        assert peak_bytes(lambda data=data: wire.decode(data)) <= bound, name
    decoder = FrameDecoder(HANDSHAKE_MAX_BODY)
    with contextlib.suppress(QmpError):
        decoder.feed(frame(FrameKind.INIT, b"")[:1] + b"\xff\xff\xff")
    assert decoder.buffered <= HEADER_SIZE
