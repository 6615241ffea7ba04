"""Post-quantum cryptography for QIZ, on ``cryptography`` (OpenSSL): pure, no I/O.

* :mod:`~qiz.crypto.composite`: ML-DSA-65 + Ed25519 composite signatures with contexts.
* :mod:`~qiz.crypto.xwing`: the X-Wing hybrid KEM (ML-KEM-768 + X25519).
* :mod:`~qiz.crypto.seal`: HPKE sealing to a node's X-Wing key.
* :mod:`~qiz.crypto.aead`, :mod:`~qiz.crypto.kdf`: AEAD, HKDF, hashes.
* :mod:`~qiz.crypto.ids`: self-certifying node ids, content ids and service names.
* :mod:`~qiz.crypto.keyfile`: the (optionally passphrase-locked) key file format.
* :mod:`~qiz.crypto.slhdsa`: SLH-DSA for long-lived release keys (optional extra).
"""

from qiz.crypto.errors import (
    CryptoError,
    DecryptionFailed,
    InvalidIdentifier,
    InvalidKey,
    InvalidSignature,
    UnsupportedBackend,
)
from qiz.crypto.support import require_pq_support

__all__ = [
    "CryptoError",
    "DecryptionFailed",
    "InvalidIdentifier",
    "InvalidKey",
    "InvalidSignature",
    "UnsupportedBackend",
    "require_pq_support",
]
