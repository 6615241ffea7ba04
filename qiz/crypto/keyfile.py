"""The byte format of a secret-key file, optionally locked with a passphrase (scrypt + AEAD).

Pure functions from secret bytes to file bytes and back; the caller writes them atomically.
Every way a file can be damaged maps to one clear :class:`KeyFileError` sentence, and nothing
here ever decides to replace a file.

Layout (all integers big-endian)::

    magic "QIZKEY" || version u8 (1) || mode u8
    mode 0 (plain):      length u32 || secret || SHA3-256(everything before) (32)
    mode 1 (passphrase): salt (16) || log2(N) u8 || r u8 || p u8 || nonce (12) || length u32
                         || AES-256-GCM(key = scrypt(passphrase, salt, N, r, p), nonce,
                                        secret, aad = everything before)

The plain mode carries a digest so that a truncated or bit-flipped file is caught before its
bytes are taken for keys. In the locked mode the AEAD tag does that job, and a wrong passphrase
cannot be told from damage: the error says both.
"""

from __future__ import annotations

import hashlib
import os
import struct
import unicodedata
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from qiz.crypto.aead import Aead
from qiz.crypto.errors import CryptoError, DecryptionFailed

MAGIC = b"QIZKEY"
VERSION = 1
MODE_PLAIN = 0
MODE_SCRYPT_AES256GCM = 1
MAX_SECRET = 64 * 1024
MAX_SCRYPT_MEMORY = 1 << 30  # refuse files whose scrypt would need more than 1 GiB
MAX_SCRYPT_P = 4


class KeyFileError(CryptoError):
    """A key file cannot be read; the message says why in one sentence."""


class PassphraseRequired(KeyFileError):
    """The key file is locked and no passphrase was given."""


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost; the default takes about a third of a second and 128 MiB here."""

    log2_n: int = 17
    r: int = 8
    p: int = 1


DEFAULT_SCRYPT = ScryptParams()


def _derive(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return Scrypt(salt=salt, length=32, n=1 << params.log2_n, r=params.r, p=params.p).derive(secret)


def encode(
    secret: bytes, passphrase: str | None = None, params: ScryptParams = DEFAULT_SCRYPT
) -> bytes:
    """File bytes holding ``secret``, locked with ``passphrase`` when one is given."""
    if len(secret) > MAX_SECRET:
        raise ValueError("secret too large for a key file")
    if not passphrase:
        head = MAGIC + bytes([VERSION, MODE_PLAIN]) + struct.pack(">I", len(secret)) + secret
        return head + hashlib.sha3_256(head).digest()
    salt = os.urandom(16)
    nonce = os.urandom(12)
    head = (
        MAGIC
        + bytes([VERSION, MODE_SCRYPT_AES256GCM])
        + salt
        + bytes([params.log2_n, params.r, params.p])
        + nonce
        + struct.pack(">I", len(secret) + 16)
    )
    return head + Aead(_derive(passphrase, salt, params)).encrypt(nonce, secret, head)


def is_locked(data: bytes) -> bool:
    """True when the file needs a passphrase."""
    return len(data) > len(MAGIC) + 1 and data[len(MAGIC) + 1] == MODE_SCRYPT_AES256GCM


def decode(data: bytes, passphrase: str | None = None, *, name: str = "key file") -> bytes:
    """The secret held in ``data``; :class:`KeyFileError` names what is wrong otherwise."""
    if not data:
        raise KeyFileError(f"{name} is empty")
    if len(data) < len(MAGIC) + 2:
        if MAGIC.startswith(data[: len(MAGIC)]):
            raise KeyFileError(f"{name} is truncated")
        raise KeyFileError(f"{name} is not a QIZ key file (bad magic bytes)")
    if not data.startswith(MAGIC):
        raise KeyFileError(f"{name} is not a QIZ key file (bad magic bytes)")
    version, mode = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version != VERSION:
        raise KeyFileError(
            f"{name} is corrupted or from another QIZ version (format {version}, "
            f"this QIZ reads {VERSION})"
        )
    pos = len(MAGIC) + 2
    if mode == MODE_PLAIN:
        if len(data) < pos + 4 + 32:
            raise KeyFileError(f"{name} is truncated")
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 4 + length
        if length > MAX_SECRET or len(data) < end + 32:
            raise KeyFileError(f"{name} is truncated or corrupted (bad length field)")
        if len(data) > end + 32:
            raise KeyFileError(f"{name} has trailing bytes: it is corrupted")
        if hashlib.sha3_256(data[:end]).digest() != data[end:]:
            raise KeyFileError(f"{name} is corrupted (its checksum does not match)")
        return data[pos + 4 : end]
    if mode == MODE_SCRYPT_AES256GCM:
        fixed = 16 + 3 + 12 + 4
        if len(data) < pos + fixed:
            raise KeyFileError(f"{name} is truncated")
        salt = data[pos : pos + 16]
        log2_n, r, p = data[pos + 16], data[pos + 17], data[pos + 18]
        nonce = data[pos + 19 : pos + 31]
        (length,) = struct.unpack_from(">I", data, pos + 31)
        head_end = pos + fixed
        if not (
            10 <= log2_n <= 30
            and 1 <= r <= 32
            and 1 <= p <= MAX_SCRYPT_P
            and 128 * r * (1 << log2_n) <= MAX_SCRYPT_MEMORY
        ):
            raise KeyFileError(f"{name} is corrupted (implausible scrypt parameters)")
        if length > MAX_SECRET + 16 or len(data) != head_end + length:
            raise KeyFileError(f"{name} is truncated or corrupted (bad length field)")
        if not passphrase:
            raise PassphraseRequired(
                f"{name} is locked with a passphrase: give it with --passphrase-file "
                "or the QIZ_PASSPHRASE environment variable"
            )
        key = _derive(passphrase, salt, ScryptParams(log2_n, r, p))
        try:
            return Aead(key).decrypt(nonce, data[head_end:], data[:head_end])
        except DecryptionFailed:
            raise KeyFileError(
                f"cannot unlock {name}: wrong passphrase, or the file is corrupted"
            ) from None
    raise KeyFileError(f"{name} is corrupted (unknown mode {mode})")
