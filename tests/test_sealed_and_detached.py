"""Signed-and-sealed messages and detached file signatures."""

from __future__ import annotations

import pytest

from qiz import wire
from qiz.crypto.composite import message_digest
from qiz.crypto.errors import DecryptionFailed, InvalidSignature
from qiz.crypto.seal import seal
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.detached import (
    SignatureFileError,
    make_signature_file,
    verify_signature_file,
)
from qiz.identity.sealed_message import SealedMessageError, open_message, seal_message

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def bob_record(bob: NodeIdentity) -> PeerRecord:
    return PeerRecord.create(bob, ["127.0.0.1:7451"], seq=1, now=NOW)


def test_sealed_message_round_trip(alice, bob, bob_record) -> None:
    opened = open_message(bob, seal_message(alice, bob_record, b"hello bob"))
    assert opened.message == b"hello bob"
    assert opened.sender == alice.node_id


def test_only_the_recipient_can_open(alice, bob_record) -> None:
    sealed = seal_message(alice, bob_record, b"hello bob")
    with pytest.raises(DecryptionFailed):
        open_message(alice, sealed)


def test_forwarded_message_is_refused(alice, bob, bob_record) -> None:
    """Bob re-seals Alice's signed inner message to Carol: the signature names Bob, not Carol."""
    carol = NodeIdentity.generate()
    carol_record = PeerRecord.create(carol, ["127.0.0.1:7452"], seq=1, now=NOW)
    sig = alice.signing_key.sign_digest(
        message_digest(bob.node_id.digest + message_digest(b"for bob")),
        "qiz/sealed-message/v1",
    )
    inner = wire.encode({"v": 1, "from": alice.public_key.raw, "msg": b"for bob", "sig": sig})
    forwarded = seal(inner, carol_record.xwing_key, associated_data=carol.node_id.digest)
    with pytest.raises(SealedMessageError, match="signature"):
        open_message(carol, forwarded)


def test_tampered_sealed_message_is_refused(alice, bob, bob_record) -> None:
    sealed = bytearray(seal_message(alice, bob_record, b"x" * 100))
    sealed[-20] ^= 4
    with pytest.raises(DecryptionFailed):
        open_message(bob, bytes(sealed))


def test_detached_signature(alice, bob) -> None:
    digest = message_digest(b"file contents")
    sig_file = make_signature_file(alice, digest)
    assert verify_signature_file(sig_file, digest, expected_id=alice.node_id) == alice.node_id
    assert (
        verify_signature_file(sig_file, digest, expected_id=None, expected_key=alice.public_key)
        == alice.node_id
    )
    with pytest.raises(InvalidSignature, match="not by"):
        verify_signature_file(sig_file, digest, expected_id=bob.node_id)
    with pytest.raises(InvalidSignature):
        verify_signature_file(sig_file, digest, expected_id=None, expected_key=bob.public_key)
    with pytest.raises(InvalidSignature):
        verify_signature_file(sig_file, message_digest(b"other"), expected_id=alice.node_id)
    with pytest.raises(SignatureFileError):
        verify_signature_file(b"garbage", digest, expected_id=alice.node_id)
    with pytest.raises(SignatureFileError):
        verify_signature_file(sig_file[:-5], digest, expected_id=alice.node_id)
