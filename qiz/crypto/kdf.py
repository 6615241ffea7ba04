"""Key derivation: HKDF-SHA-256 and the hashes QIZ uses everywhere.

Labels are ASCII strings such as ``"qiz/qmp/v1 handshake"``; every derivation names what it is
for, so that no two uses of one secret can yield the same key.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

HASH_SIZE = 32


def sha3_256(*parts: bytes) -> bytes:
    """SHA3-256 over the concatenation of ``parts``."""
    h = hashlib.sha3_256()
    for part in parts:
        h.update(part)
    return h.digest()


def hkdf_extract_expand(
    ikm: bytes, *, salt: bytes = b"", info: bytes = b"", length: int = 32
) -> bytes:
    """RFC 5869 HKDF with SHA-256: extract with ``salt``, expand with ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


def hkdf_expand(prk: bytes, *, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF-Expand with SHA-256 from a pseudorandom key of at least 32 bytes."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def labeled(label: str, *fields: bytes) -> bytes:
    """An unambiguous encoding: the label, then each field prefixed by its 4-byte length."""
    out = bytearray()
    raw = label.encode("ascii")
    out += len(raw).to_bytes(4, "big") + raw
    for field in fields:
        out += len(field).to_bytes(4, "big") + field
    return bytes(out)
