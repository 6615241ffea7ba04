"""The 256-bit Kademlia key space: XOR distance and bucket indices."""

from __future__ import annotations

KEY_BITS = 256


def as_int(key: bytes) -> int:
    return int.from_bytes(key, "big")


def distance(a: bytes, b: bytes) -> int:
    """XOR distance between two 32-byte keys, as an integer."""
    return as_int(a) ^ as_int(b)


def bucket_index(self_key: bytes, other: bytes) -> int:
    """Index of the bucket ``other`` falls in: the length of the common prefix (0..255).
    Equal keys have no bucket (-1)."""
    d = distance(self_key, other)
    if d == 0:
        return -1
    return KEY_BITS - d.bit_length()
