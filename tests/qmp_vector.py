"""The QMP handshake transcript vector: fixed identities, fixed randomness, fixed time.

``python -m tests.qmp_vector`` rewrites ``tests/vectors/qmp-handshake-v1.json``; the test suite
recomputes the transcript from the inputs stored there and compares every byte. The peer records
are inputs (ML-DSA signing is hedged, so a record cannot be re-made bit for bit), everything
else is derived.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from qiz.crypto.xwing import use_derandomised_mlkem
from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.connection import Connection
from qiz.qmp.cookie import CookieAuthority

from .mlkem_derand import encapsulate_derand

use_derandomised_mlkem(encapsulate_derand)  # the handshake's encapsulations use fixed randomness

VECTOR = Path(__file__).resolve().parent / "vectors" / "qmp-handshake-v1.json"
NOW = 1_800_000_000.0


def drbg(seed: bytes):
    """Deterministic randomness: SHAKE-256(seed || counter), one block per call."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(n)
        counter += 1
        return out

    return rng


def identity_from(label: bytes) -> NodeIdentity:
    return NodeIdentity.derive(hashlib.sha3_256(b"qmp vector identity " + label).digest())


def transcript(record_i: bytes, record_r: bytes) -> dict[str, str]:
    ident_i, ident_r = identity_from(b"initiator"), identity_from(b"responder")
    rec_i = PeerRecord.verify(record_i, now=NOW)
    rec_r = PeerRecord.verify(record_r, now=NOW)
    init = Connection.initiator(ident_i, rec_i, expected=rec_r, now=NOW, rng=drbg(b"initiator"))
    resp = Connection.responder(
        ident_r,
        rec_r,
        cookies=CookieAuthority(ident_r.xwing_public.raw, rng=drbg(b"cookie"), now=NOW),
        peer_address="127.0.0.1:40000",
        now=NOW,
        rng=drbg(b"responder"),
    )
    init.start(NOW)
    msg_init = init.data_to_send()
    resp.receive_data(msg_init, NOW)
    msg_response = resp.data_to_send()
    init.receive_data(msg_response, NOW)
    msg_confirm = init.data_to_send()
    resp.receive_data(msg_confirm, NOW)
    init.send(b"hello from the initiator", NOW)
    data_i = init.data_to_send()
    resp.send(b"hello from the responder", NOW)
    data_r = resp.data_to_send()
    assert init.established and resp.established
    assert init.handshake_hash == resp.handshake_hash
    return {
        "init": msg_init.hex(),
        "response": msg_response.hex(),
        "confirm": msg_confirm.hex(),
        "data_initiator": data_i.hex(),
        "data_responder": data_r.hex(),
        "handshake_hash": init.handshake_hash.hex(),  # type: ignore[union-attr]
    }


def generate() -> dict:
    ident_i, ident_r = identity_from(b"initiator"), identity_from(b"responder")
    rec_i = PeerRecord.create(ident_i, ["127.0.0.1:40000"], seq=1, now=NOW, lifetime=10**9)
    rec_r = PeerRecord.create(ident_r, ["127.0.0.1:40001"], seq=1, now=NOW, lifetime=10**9)
    return {
        "description": "QMP/1 handshake with fixed randomness; see docs/qmp.md",
        "now": NOW,
        "rng": "SHAKE-256(label || u64 counter), labels 'initiator', 'responder', 'cookie'",
        "identities": "tests/qmp_vector.py identity_from(b'initiator' | b'responder')",
        "initiator_id": str(ident_i.node_id),
        "responder_id": str(ident_r.node_id),
        "initiator_record": rec_i.raw.hex(),
        "responder_record": rec_r.raw.hex(),
        "transcript": transcript(rec_i.raw, rec_r.raw),
    }


if __name__ == "__main__":
    VECTOR.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {VECTOR}")
