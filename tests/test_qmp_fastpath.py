"""The link fast path: ephemerals made ahead of time, INIT built during the TCP connect and
sent whole in the first write, and the dial's failure paths that this reordering touches.
Real sockets on 127.0.0.1, real crypto; no timing asserts."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
import warnings

import pytest

from qiz.crypto.xwing import X25519Ephemeral, XWingPrivateKey
from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.channel import DATA_OVERHEAD, OPEN_IN_PLACE_FROM
from qiz.qmp.connection import Connection, ConnectionClosed, MessageReceived
from qiz.qmp.cookie import CookieAuthority
from qiz.qmp.errors import ErrorCode
from qiz.qmp.frames import FrameDecoder, FrameKind
from qiz.qmp.handshake import EPHEMERAL_POOL, EphemeralPool, ResponderHandshake
from qiz.qmp.transport import LinkError, dial

from .helpers import HOST, run

pytestmark = pytest.mark.timeout(60)


def test_an_encapsulation_with_a_ready_ephemeral_decapsulates_to_the_same_secret() -> None:
    recipient = XWingPrivateKey.generate()
    ephemeral = X25519Ephemeral.generate()
    secret, ciphertext = recipient.public_key().encapsulate(ephemeral=ephemeral)
    assert ciphertext[-32:] == ephemeral.public  # the X25519 half is the one given
    assert recipient.decapsulate(ciphertext) == secret


def test_the_pool_hands_each_key_out_once_and_makes_one_when_empty() -> None:
    pool = EphemeralPool(size=2, x25519_size=3)
    assert not pool.full
    pool.refill()
    assert pool.full
    xwing = [pool.take() for _ in range(3)]  # the third is made on the spot
    x25519 = [pool.take_x25519() for _ in range(4)]
    assert len({k.seed for k in xwing}) == 3
    assert len({e.public for e in x25519}) == 4
    pool.refill()
    pool.clear()
    assert not pool.full


def _identities() -> tuple[NodeIdentity, PeerRecord, NodeIdentity, PeerRecord]:
    now = time.time()
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    a_rec = PeerRecord.create(a, [f"{HOST}:1"], seq=1, now=now)
    b_rec = PeerRecord.create(b, [f"{HOST}:2"], seq=1, now=now)
    return a, a_rec, b, b_rec


def test_init_is_sent_whole_as_the_first_bytes_of_the_connection() -> None:
    """The dialler builds INIT while the TCP handshake runs: by the time the connection is
    made it has one complete INIT frame to write, so the responder can start decapsulating
    as soon as it reads."""
    a, a_rec, b, _ = _identities()

    async def scenario() -> None:
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def silent_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder(64 * 1024)
            frames = []
            while not frames:
                data = await reader.read(65536)
                if not data:
                    break
                frames = decoder.feed(data)
            got.put_nowait(bytes(frames[0].body) if frames[0].kind is FrameKind.INIT else b"")
            await reader.read()  # until the dialler gives up
            writer.close()

        server = await asyncio.start_server(silent_peer, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        b_rec_here = PeerRecord.create(b, [f"{HOST}:{port}"], seq=2, now=time.time())
        dialling = asyncio.create_task(dial(f"{HOST}:{port}", a, a_rec, expected=b_rec_here))
        body = await asyncio.wait_for(got.get(), 10)
        _, _, mac2 = ResponderHandshake.split_init(body)  # a whole, well-formed INIT
        assert mac2 == bytes(len(mac2))
        # and it opens at the responder: the record known in advance was used
        responder = ResponderHandshake(b, b_rec_here)
        _, result, payload = responder.respond(body, now=time.time())
        assert result.peer.node_id == a.node_id and payload["rec"] == a_rec.raw
        dialling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dialling
        server.close()
        await server.wait_closed()

    run(scenario())


def test_a_refused_dial_closes_its_socket_and_keeps_the_pool_usable() -> None:
    a, a_rec, _b, b_rec = _identities()
    with socket.socket() as held:  # bound, not listening: connections are refused
        held.bind((HOST, 0))
        address = f"{HOST}:{held.getsockname()[1]}"

        async def scenario() -> None:
            with pytest.raises(LinkError) as refused:
                await dial(address, a, a_rec, expected=b_rec, timeout=5)
            assert "connection refused" in str(refused.value)
            assert refused.value.code is ErrorCode.PROTOCOL_ERROR

        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            run(scenario())
            gc.collect()  # an unclosed socket would warn here
    EPHEMERAL_POOL.refill()
    assert EPHEMERAL_POOL.full


@pytest.mark.parametrize("size", [0, 1, OPEN_IN_PLACE_FROM - 1, OPEN_IN_PLACE_FROM + 1, 200_000])
def test_messages_around_the_in_place_sizes_arrive_intact_and_tampering_is_caught(
    size: int,
) -> None:
    """Large messages are sealed straight into their frame and opened into a bytearray whose
    type byte is dropped in place; small ones take the pieces path. Both must round-trip, and a
    flipped bit anywhere in either kind of frame must close the link."""
    a, a_rec, b, b_rec = _identities()
    now = time.time()
    initiator = Connection.initiator(a, a_rec, expected=b_rec, now=now)
    responder = Connection.responder(
        b, b_rec, cookies=CookieAuthority(b.xwing_public.raw, now=now), peer_address="x:1", now=now
    )
    initiator.start(now)
    responder.receive_data(initiator.data_to_send(), now)
    initiator.receive_data(responder.data_to_send(), now)
    responder.receive_data(initiator.data_to_send(), now)
    payload = os.urandom(size) if size else b"\x00"
    for _ in range(3):  # counters move on: each frame has its own nonce
        initiator.send(payload, now)
        frame = bytes(initiator.data_to_send())
        assert len(frame) == 4 + DATA_OVERHEAD + len(payload)
        (event,) = responder.receive_data(frame, now)
        assert isinstance(event, MessageReceived) and event.payload == payload
    initiator.send(payload, now)
    frame = bytearray(initiator.data_to_send())
    frame[len(frame) // 2 + 2] ^= 0x01
    (closed,) = responder.receive_data(bytes(frame), now)
    assert isinstance(closed, ConnectionClosed)
    assert closed.code is ErrorCode.AUTHENTICATION_FAILED
