"""S/Kademlia's static crypto puzzle on node ids: SHA3-256("qiz/puzzle/v1" || id) must start
with ``bits`` zero bits.

Making a key pair is cheap, so without a cost an attacker can mint thousands of ids and pick
the ones that land next to a victim's key (Sybil and eclipse attacks). The puzzle makes every
id cost about 2**bits key generations. Only the Ed25519 half is regenerated while grinding, so a
try costs tens of microseconds; the difficulty is in the node's config (low in tests).
"""

from __future__ import annotations

import hashlib
import os

from qiz.crypto.composite import CompositeSigningKey
from qiz.crypto.xwing import XWingPrivateKey
from qiz.identity.node_identity import NodeIdentity

DOMAIN = b"qiz/puzzle/v1"
MAX_BITS = 32


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def solves(node_id_digest: bytes, bits: int) -> bool:
    """True if the id meets a difficulty of ``bits``."""
    return (
        bits <= 0 or leading_zero_bits(hashlib.sha3_256(DOMAIN + node_id_digest).digest()) >= bits
    )


def generate_identity(bits: int, *, seed: bytes | None = None) -> NodeIdentity:
    """A new identity whose id solves the puzzle at ``bits`` (about 2**bits tries). With
    ``seed``, the same identity every time (simulations; never a real node's keys)."""
    if not 0 <= bits <= MAX_BITS:
        raise ValueError(f"puzzle difficulty is 0 to {MAX_BITS} bits")
    if seed is not None:
        tries = 0
        while True:
            identity = NodeIdentity.derive(seed + tries.to_bytes(8, "big"))
            if solves(identity.node_id.digest, bits):
                return identity
            tries += 1
    mldsa_seed = os.urandom(32)
    xwing = XWingPrivateKey.generate()
    while True:
        identity = NodeIdentity(CompositeSigningKey(mldsa_seed, os.urandom(32)), xwing)
        if solves(identity.node_id.digest, bits):
            return identity
