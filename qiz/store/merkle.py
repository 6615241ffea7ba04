"""The Merkle root of a chunk table, exactly as RFC 6962 (Certificate Transparency) defines the
Merkle Tree Hash, with SHA-256.

Why RFC 6962 and not an ad-hoc hash of the table: its leaf/node prefixes (0x00/0x01) rule out
second-preimage tricks between levels, it is defined for any leaf count (no padding), and a
single chunk can later be proved with a log-size audit path against the root in the manifest.

MTH({}) = SHA-256(""); MTH({d}) = SHA-256(0x00 || d); for n > 1, with k the largest power of
two below n, MTH(D) = SHA-256(0x01 || MTH(D[:k]) || MTH(D[k:])). The loop below computes the
same tree bottom-up (an unpaired last node moves up a level unchanged), without recursion or
list copies, in O(n) hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from qiz.store.limits import HASH_SIZE

_LEAF = b"\x00"
_NODE = b"\x01"


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH over ``leaves`` (each a 32-byte chunk hash, hashed as a leaf here)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    sha = hashlib.sha256
    level = [sha(_LEAF + leaf).digest() for leaf in leaves]
    while len(level) > 1:
        nxt = [sha(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def split_table(table: bytes) -> list[bytes]:
    """The 32-byte entries of a chunk table; ValueError if its length is not a multiple of 32."""
    if len(table) % HASH_SIZE:
        raise ValueError(f"a chunk table is a multiple of {HASH_SIZE} bytes, got {len(table)}")
    return [bytes(table[i : i + HASH_SIZE]) for i in range(0, len(table), HASH_SIZE)]


def table_root(table: bytes) -> bytes:
    """The Merkle root of a chunk table (its entries are the leaves)."""
    return merkle_root(split_table(table))
