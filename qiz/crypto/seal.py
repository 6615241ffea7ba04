"""Sealing to a recipient: HPKE (RFC 9180) base mode with the MLKEM768-X25519 (X-Wing) KEM.

The recipient key is the node's X-Wing key, the same one the link handshake uses, so anyone who
holds a node's signed peer record can seal to it. The suite is X-Wing / HKDF-SHA256 /
AES-256-GCM. ``cryptography``'s single-shot HPKE takes no separate associated data, so, as RFC
9180 section 8.1 advises for single-shot use, the associated data is bound through ``info``
(length-prefixed behind a fixed label): opening with different associated data fails exactly as
a wrong AEAD tag would.

Layout: sealed = "QZS1" || enc (1120 bytes) || ciphertext || tag (16 bytes).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from qiz.crypto.errors import DecryptionFailed
from qiz.crypto.kdf import labeled
from qiz.crypto.xwing import CIPHERTEXT_SIZE, XWingPrivateKey, XWingPublicKey

MAGIC = b"QZS1"
OVERHEAD = len(MAGIC) + CIPHERTEXT_SIZE + 16
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _info(associated_data: bytes) -> bytes:
    return labeled("qiz/seal/v1", associated_data)


def _hpke_public(recipient: XWingPublicKey) -> hpke.MLKEM768X25519PublicKey:
    return hpke.MLKEM768X25519PublicKey(*recipient.components())


def seal(plaintext: bytes, recipient: XWingPublicKey, associated_data: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` so that only the holder of ``recipient``'s private key can read it."""
    return MAGIC + _SUITE.encrypt(plaintext, _hpke_public(recipient), info=_info(associated_data))


def open_sealed(sealed: bytes, recipient: XWingPrivateKey, associated_data: bytes = b"") -> bytes:
    """Decrypt what :func:`seal` made; raise :class:`DecryptionFailed` on any mismatch."""
    if len(sealed) < OVERHEAD or not sealed.startswith(MAGIC):
        raise DecryptionFailed("not a QIZ sealed message (bad header or too short)")
    private = hpke.MLKEM768X25519PrivateKey(*recipient.component_keys())
    try:
        return _SUITE.decrypt(sealed[len(MAGIC) :], private, info=_info(associated_data))
    except (InvalidTag, ValueError):
        raise DecryptionFailed(
            "cannot open the sealed message: it is for another key, was altered, "
            "or the associated data differs"
        ) from None
