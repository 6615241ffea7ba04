"""X-Wing round trips, HPKE sealing with associated data, AEAD and HKDF helpers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.crypto.aead import Aead, AeadAlgorithm, counter_nonce
from qiz.crypto.errors import DecryptionFailed, InvalidKey
from qiz.crypto.kdf import hkdf_expand, hkdf_extract_expand, labeled
from qiz.crypto.seal import open_sealed, seal
from qiz.crypto.xwing import CIPHERTEXT_SIZE, XWingPrivateKey, XWingPublicKey

KEY = XWingPrivateKey.generate()
OTHER = XWingPrivateKey.generate()


def test_xwing_round_trip_and_fresh_randomness() -> None:
    ss1, ct1 = KEY.public_key().encapsulate()
    ss2, ct2 = KEY.public_key().encapsulate()
    assert len(ct1) == CIPHERTEXT_SIZE
    assert KEY.decapsulate(ct1) == ss1
    assert KEY.decapsulate(ct2) == ss2
    assert ss1 != ss2 and ct1 != ct2


def test_xwing_wrong_key_or_tampered_ciphertext_gives_other_secret() -> None:
    ss, ct = KEY.public_key().encapsulate()
    assert OTHER.decapsulate(ct) != ss
    for pos in (0, 500, CIPHERTEXT_SIZE - 1):
        bad = bytearray(ct)
        bad[pos] ^= 0x80
        with contextlib.suppress(InvalidKey):  # a degenerate X25519 point is refused outright
            assert KEY.decapsulate(bytes(bad)) != ss


def test_xwing_seeded_keygen_is_deterministic() -> None:
    assert XWingPrivateKey(b"\x07" * 32).public_key() == XWingPrivateKey(b"\x07" * 32).public_key()


def test_xwing_bad_lengths() -> None:
    with pytest.raises(InvalidKey):
        XWingPrivateKey(b"short")
    with pytest.raises(InvalidKey):
        XWingPublicKey(b"\x00" * 100)
    with pytest.raises(InvalidKey):
        KEY.decapsulate(b"\x00" * 10)
    with pytest.raises(InvalidKey):
        KEY.public_key().encapsulate(eseed=b"\x00" * 63)


@given(plaintext=st.binary(max_size=2048), ad=st.binary(max_size=64))
def test_seal_round_trip(plaintext: bytes, ad: bytes) -> None:
    sealed = seal(plaintext, KEY.public_key(), ad)
    assert open_sealed(sealed, KEY, ad) == plaintext


def test_seal_refuses_wrong_key_ad_and_tampering() -> None:
    sealed = seal(b"secret", KEY.public_key(), b"ad")
    with pytest.raises(DecryptionFailed):
        open_sealed(sealed, OTHER, b"ad")
    with pytest.raises(DecryptionFailed):
        open_sealed(sealed, KEY, b"other ad")
    for pos in (4, 600, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[pos] ^= 1
        with pytest.raises(DecryptionFailed):
            open_sealed(bytes(bad), KEY, b"ad")
    with pytest.raises(DecryptionFailed):
        open_sealed(sealed[:100], KEY, b"ad")
    with pytest.raises(DecryptionFailed):
        open_sealed(b"XXXX" + sealed[4:], KEY, b"ad")


@pytest.mark.parametrize("algorithm", list(AeadAlgorithm))
def test_aead_round_trip_and_tamper(algorithm: AeadAlgorithm) -> None:
    aead = Aead(b"\x01" * 32, algorithm)
    nonce = counter_nonce(7)
    ct = aead.encrypt(nonce, b"frame", b"hdr")
    assert aead.decrypt(nonce, ct, b"hdr") == b"frame"
    with pytest.raises(DecryptionFailed):
        aead.decrypt(nonce, ct, b"HDR")
    with pytest.raises(DecryptionFailed):
        aead.decrypt(counter_nonce(8), ct, b"hdr")
    with pytest.raises(DecryptionFailed):
        aead.decrypt(nonce, ct[:-1] + bytes([ct[-1] ^ 1]), b"hdr")
    with pytest.raises(DecryptionFailed):
        aead.decrypt(nonce, b"short", b"hdr")
    with pytest.raises(InvalidKey):
        Aead(b"\x01" * 16, algorithm)


def test_aead_known_answer_rfc8439() -> None:
    """ChaCha20-Poly1305 AEAD test vector from RFC 8439 section 2.8.2."""
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("070000004041424344454647")
    ad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    pt = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    ct = Aead(key, AeadAlgorithm.CHACHA20_POLY1305).encrypt(nonce, pt, ad)
    assert ct[-16:].hex() == "1ae10b594f09e26a7e902ecbd0600691"
    assert ct[:16].hex() == "d31a8d34648e60db7b86afbc53ef7ec2"


def test_hkdf_rfc5869_case1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf_extract_expand(ikm, salt=salt, info=info, length=42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    prk = bytes.fromhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    assert hkdf_expand(prk, info=info, length=42) == okm


def test_labeled_encoding_is_unambiguous() -> None:
    assert labeled("a", b"bc", b"") != labeled("a", b"b", b"c")
    assert labeled("ab", b"") != labeled("a", b"b")


def test_counter_nonce_bounds() -> None:
    assert counter_nonce(1) == bytes(11) + b"\x01"
    with pytest.raises(ValueError):
        counter_nonce(-1)
    with pytest.raises(ValueError):
        counter_nonce(1 << 64)
