"""Authenticated encryption: AES-256-GCM by default, ChaCha20-Poly1305 as the alternative.

Both take a 32-byte key and a 12-byte nonce. Callers that send many messages under one key
build nonces from a counter (see :func:`counter_nonce`), never at random, so that a nonce can
never repeat within a key's lifetime.
"""

from __future__ import annotations

import enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from qiz.crypto.errors import DecryptionFailed, InvalidKey

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16


class AeadAlgorithm(enum.Enum):
    """The AEADs QIZ speaks; the value is the name used on the wire and in key files."""

    AES_256_GCM = "aes-256-gcm"
    CHACHA20_POLY1305 = "chacha20-poly1305"


DEFAULT_AEAD = AeadAlgorithm.AES_256_GCM


class Aead:
    """A keyed AEAD instance; keep it for the key's lifetime to avoid re-keying costs."""

    __slots__ = ("_cipher", "algorithm")

    def __init__(self, key: bytes, algorithm: AeadAlgorithm = DEFAULT_AEAD) -> None:
        if len(key) != KEY_SIZE:
            raise InvalidKey(f"an AEAD key is {KEY_SIZE} bytes, got {len(key)}")
        self.algorithm = algorithm
        if algorithm is AeadAlgorithm.AES_256_GCM:
            self._cipher: AESGCM | ChaCha20Poly1305 = AESGCM(key)
        else:
            self._cipher = ChaCha20Poly1305(key)

    def encrypt(self, nonce: bytes, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        """Return ciphertext || 16-byte tag."""
        _check_nonce(nonce)
        return self._cipher.encrypt(nonce, plaintext, associated_data)

    def encrypt_into(
        self, nonce: bytes, plaintext: bytes, associated_data: bytes, out: memoryview
    ) -> None:
        """Write ciphertext || tag into ``out`` (exactly ``len(plaintext) + TAG_SIZE`` bytes):
        a large message is sealed straight into the buffer that goes to the socket, with no
        copy to join it to its header. ``out`` must not overlap ``plaintext``."""
        _check_nonce(nonce)
        self._cipher.encrypt_into(nonce, plaintext, associated_data, out)

    def decrypt(self, nonce: bytes, ciphertext: bytes, associated_data: bytes = b"") -> bytes:
        """Return the plaintext or raise :class:`DecryptionFailed` on any alteration."""
        _check_nonce(nonce)
        if len(ciphertext) < TAG_SIZE:
            raise DecryptionFailed("ciphertext is shorter than an authentication tag")
        try:
            return self._cipher.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise DecryptionFailed(
                "authentication failed: wrong key, or the data was altered"
            ) from None

    def decrypt_into(
        self, nonce: bytes, ciphertext: bytes, associated_data: bytes, out: bytearray
    ) -> None:
        """Write the plaintext into ``out`` (exactly ``len(ciphertext) - TAG_SIZE`` bytes), or
        raise :class:`DecryptionFailed`; on failure ``out`` holds nothing to use."""
        _check_nonce(nonce)
        if len(ciphertext) < TAG_SIZE:
            raise DecryptionFailed("ciphertext is shorter than an authentication tag")
        try:
            self._cipher.decrypt_into(nonce, ciphertext, associated_data, out)
        except InvalidTag:
            raise DecryptionFailed(
                "authentication failed: wrong key, or the data was altered"
            ) from None


def _check_nonce(nonce: bytes) -> None:
    if len(nonce) != NONCE_SIZE:
        raise InvalidKey(f"an AEAD nonce is {NONCE_SIZE} bytes, got {len(nonce)}")


def counter_nonce(counter: int, prefix: bytes = b"\x00\x00\x00\x00") -> bytes:
    """A 12-byte nonce: a 4-byte prefix then the 64-bit big-endian counter."""
    if not 0 <= counter < 1 << 64:
        raise ValueError("nonce counter out of range")
    if len(prefix) != 4:
        raise ValueError("nonce prefix is 4 bytes")
    return prefix + counter.to_bytes(8, "big")
