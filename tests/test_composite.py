"""Composite ML-DSA-65 + Ed25519 signatures: valid only when both halves verify for the context."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa
from hypothesis import given
from hypothesis import strategies as st

from qiz.crypto import composite
from qiz.crypto.composite import (
    MLDSA_SIGNATURE_SIZE,
    SIGNATURE_SIZE,
    CompositePublicKey,
    CompositeSigningKey,
)
from qiz.crypto.errors import InvalidKey, InvalidSignature

KEY = CompositeSigningKey.generate()
OTHER = CompositeSigningKey.generate()
MSG = b"run QAOA p=3 on random:20,3"
CTX = "qiz/test"
SIG = KEY.sign(MSG, CTX)


def test_valid_signature_verifies() -> None:
    assert len(SIG) == SIGNATURE_SIZE
    KEY.public_key().verify(SIG, MSG, CTX)
    assert KEY.public_key().is_valid(SIG, MSG, CTX)


def test_signing_is_reproducible_from_seeds() -> None:
    again = CompositeSigningKey(*KEY.seeds)
    assert again.public_key() == KEY.public_key()
    again.public_key().verify(KEY.sign(MSG, CTX), MSG, CTX)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda s, m, c, k: (s, m + b"!", c, k), id="message"),
        pytest.param(lambda s, m, c, k: (s, m, "qiz/other", k), id="context"),
        pytest.param(lambda s, m, c, k: (s, m, c, OTHER.public_key()), id="key"),
        pytest.param(lambda s, m, c, k: (bytes([s[0] ^ 1]) + s[1:], m, c, k), id="mldsa-half"),
        pytest.param(lambda s, m, c, k: (s[:-1] + bytes([s[-1] ^ 1]), m, c, k), id="ed-half"),
        pytest.param(lambda s, m, c, k: (s[:-1], m, c, k), id="truncated"),
        pytest.param(lambda s, m, c, k: (s + b"\x00", m, c, k), id="extended"),
    ],
)
def test_any_alteration_is_rejected(mutate) -> None:
    sig, msg, ctx, key = mutate(SIG, MSG, CTX, KEY.public_key())
    with pytest.raises(InvalidSignature):
        key.verify(sig, msg, ctx)


def test_half_from_another_signature_is_rejected() -> None:
    """Swapping in a valid half from a different message (mix-and-match) fails."""
    other = KEY.sign(b"another message", CTX)
    spliced = SIG[:MLDSA_SIGNATURE_SIZE] + other[MLDSA_SIGNATURE_SIZE:]
    with pytest.raises(InvalidSignature):
        KEY.public_key().verify(spliced, MSG, CTX)
    spliced = other[:MLDSA_SIGNATURE_SIZE] + SIG[MLDSA_SIGNATURE_SIZE:]
    with pytest.raises(InvalidSignature):
        KEY.public_key().verify(spliced, MSG, CTX)


def test_key_with_one_half_replaced_is_rejected() -> None:
    mixed = CompositePublicKey(KEY.public_key().mldsa_part + OTHER.public_key().ed25519_part)
    with pytest.raises(InvalidSignature):
        mixed.verify(SIG, MSG, CTX)
    mixed = CompositePublicKey(OTHER.public_key().mldsa_part + KEY.public_key().ed25519_part)
    with pytest.raises(InvalidSignature):
        mixed.verify(SIG, MSG, CTX)


def test_stand_alone_signatures_cannot_be_lifted() -> None:
    """Plain ML-DSA / Ed25519 signatures over the raw message are not composite halves."""
    ml = mldsa.MLDSA65PrivateKey.from_seed_bytes(KEY.seeds[0])
    ed = ed25519.Ed25519PrivateKey.from_private_bytes(KEY.seeds[1])
    forged = ml.sign(MSG, CTX.encode()) + ed.sign(MSG)
    with pytest.raises(InvalidSignature):
        KEY.public_key().verify(forged, MSG, CTX)


def test_bad_lengths_and_contexts() -> None:
    with pytest.raises(InvalidKey):
        CompositePublicKey(b"\x00" * 10)
    with pytest.raises(InvalidKey):
        CompositeSigningKey(b"\x00" * 31, b"\x00" * 32)
    with pytest.raises(ValueError, match="context"):
        KEY.sign(MSG, "")
    with pytest.raises(ValueError, match="context"):
        KEY.sign(MSG, "x" * 256)


def test_digest_and_message_forms_agree() -> None:
    digest = composite.message_digest(MSG)
    KEY.public_key().verify_digest(SIG, digest, CTX)
    KEY.public_key().verify(KEY.sign_digest(digest, CTX), MSG, CTX)


@given(msg=st.binary(max_size=256), flip=st.integers(min_value=0))
def test_every_single_bit_flip_in_a_signature_is_rejected(msg: bytes, flip: int) -> None:
    sig = bytearray(KEY.sign(msg, CTX))
    bit = flip % (len(sig) * 8)
    sig[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidSignature):
        KEY.public_key().verify(bytes(sig), msg, CTX)
