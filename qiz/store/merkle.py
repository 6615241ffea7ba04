"""The Merkle root of a chunk table, exactly as RFC 6962 (Certificate Transparency) defines the
Merkle Tree Hash, with SHA-256.

Why RFC 6962 and not an ad-hoc hash of the table: its leaf/node prefixes (0x00/0x01) rule out
second-preimage tricks between levels, it is defined for any leaf count (no padding), and a
single chunk can later be proved with a log-size audit path against the root in the manifest.

MTH({}) = SHA-256(""); MTH({d}) = SHA-256(0x00 || d); for n > 1, with k the largest power of
two below n, MTH(D) = SHA-256(0x01 || MTH(D[:k]) || MTH(D[k:])). The loop below computes the
same tree incrementally (:class:`MerkleBuilder`), in O(n) hashes and O(log n) memory, so a
put hashes a large content's table as its chunks stream by.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from qiz.store.limits import HASH_SIZE

_LEAF = b"\x00"
_NODE = b"\x01"


class MerkleBuilder:
    """The root computed while leaves arrive, in O(log n) memory: the stack holds the roots of
    the perfect subtrees that the leaves so far decompose into (sizes decreasing, like the bits
    of the count); two of equal size merge as soon as they meet. At the end they fold right to
    left, which is exactly RFC 6962's split at the largest power of two."""

    __slots__ = ("_stack", "count")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (leaf count, subtree root)
        self.count = 0

    def add(self, leaf: bytes) -> None:
        size, node = 1, hashlib.sha256(_LEAF + leaf).digest()
        stack = self._stack
        while stack and stack[-1][0] == size:
            left = stack.pop()[1]
            size, node = size * 2, hashlib.sha256(_NODE + left + node).digest()
        stack.append((size, node))
        self.count += 1

    def root(self) -> bytes:
        if not self._stack:
            return hashlib.sha256(b"").digest()
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = hashlib.sha256(_NODE + left + node).digest()
        return node


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """RFC 6962 MTH over ``leaves`` (each a 32-byte chunk hash, hashed as a leaf here)."""
    builder = MerkleBuilder()
    for leaf in leaves:
        builder.add(leaf)
    return builder.root()


def split_table(table: bytes) -> list[bytes]:
    """The 32-byte entries of a chunk table; ValueError if its length is not a multiple of 32."""
    if len(table) % HASH_SIZE:
        raise ValueError(f"a chunk table is a multiple of {HASH_SIZE} bytes, got {len(table)}")
    return [bytes(table[i : i + HASH_SIZE]) for i in range(0, len(table), HASH_SIZE)]


def table_root(table: bytes) -> bytes:
    """The Merkle root of a chunk table (its entries are the leaves)."""
    if len(table) % HASH_SIZE:
        raise ValueError(f"a chunk table is a multiple of {HASH_SIZE} bytes, got {len(table)}")
    view = memoryview(table)
    return merkle_root(bytes(view[i : i + HASH_SIZE]) for i in range(0, len(table), HASH_SIZE))
