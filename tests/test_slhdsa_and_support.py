"""SLH-DSA release keys (optional pqcrypto extra) and the start-up capability check."""

from __future__ import annotations

import pytest

from qiz.crypto import support
from qiz.crypto.errors import InvalidSignature, UnsupportedBackend
from qiz.crypto.slhdsa import SlhDsaSigningKey, available


@pytest.mark.skipif(not available(), reason="pqcrypto extra not installed")
def test_slhdsa_sign_verify_and_reject() -> None:
    key = SlhDsaSigningKey.generate()
    sig = key.sign(b"release 1.2.3 manifest", "qiz/release/v1")
    key.public.verify(sig, b"release 1.2.3 manifest", "qiz/release/v1")
    with pytest.raises(InvalidSignature):
        key.public.verify(sig, b"release 1.2.4 manifest", "qiz/release/v1")
    with pytest.raises(InvalidSignature):
        key.public.verify(sig, b"release 1.2.3 manifest", "qiz/other/v1")
    with pytest.raises(InvalidSignature):
        key.public.verify(
            sig[:-1] + bytes([sig[-1] ^ 1]), b"release 1.2.3 manifest", "qiz/release/v1"
        )


def test_pqcrypto_mldsa_interoperates_with_ours() -> None:
    """A second implementation: pqcrypto's ML-DSA-65 and OpenSSL's verify each other."""
    pytest.importorskip("pqcrypto")
    from cryptography.hazmat.primitives.asymmetric import mldsa
    from pqcrypto.sign import ml_dsa_65

    pk, sk = ml_dsa_65.keygen()
    sig = ml_dsa_65.sign(sk, b"interop", context=b"qiz")
    mldsa.MLDSA65PublicKey.from_public_bytes(pk).verify(sig, b"interop", b"qiz")
    ours = mldsa.MLDSA65PrivateKey.generate()
    ml_dsa_65.verify(
        ours.public_key().public_bytes_raw(),
        b"interop",
        ours.sign(b"interop", b"qiz"),
        context=b"qiz",
    )


def test_support_check_passes_here() -> None:
    support.require_pq_support()


def test_support_check_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "_probe", lambda: ["ML-KEM-768", "ML-DSA-65"])
    support.require_pq_support.cache_clear()
    with pytest.raises(UnsupportedBackend) as info:
        support.require_pq_support()
    message = str(info.value)
    assert "ML-KEM-768" in message and "ML-DSA-65" in message and ">=48" in message
    assert "\n" not in message
    support.require_pq_support.cache_clear()
