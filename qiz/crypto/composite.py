"""Composite signatures: ML-DSA-65 and Ed25519 together, valid only if both halves verify.

A signature survives the break of either algorithm (a quantum computer against Ed25519, a
cryptanalytic surprise against ML-DSA). Every signature is made for a *context*, a short ASCII
string naming its use (``"qiz/peer-record"``, ``"qiz/file"``), so a signature made for one
purpose can never be replayed as another.

What each half signs (the "message representative")::

    M' = "QIZ-COMPOSITE-MLDSA65-ED25519-v1" || u8(len(ctx)) || ctx || SHA3-512(M)

ML-DSA-65 signs M' with its own context string set to ``"qiz-composite-v1"`` (so a half can't
be lifted out and passed off as a stand-alone ML-DSA signature, nor the reverse); Ed25519 signs
M'. Pre-hashing lets a large file be signed in one streaming pass.

Layouts (bytes): public key = ML-DSA-65 pk (1952) || Ed25519 pk (32) = 1984;
signature = ML-DSA-65 sig (3309) || Ed25519 sig (64) = 3373; private seeds 32 + 32.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from qiz.crypto.errors import InvalidKey, InvalidSignature

MLDSA_PUBLIC_SIZE = 1952
ED25519_PUBLIC_SIZE = 32
PUBLIC_KEY_SIZE = MLDSA_PUBLIC_SIZE + ED25519_PUBLIC_SIZE
MLDSA_SIGNATURE_SIZE = 3309
ED25519_SIGNATURE_SIZE = 64
SIGNATURE_SIZE = MLDSA_SIGNATURE_SIZE + ED25519_SIGNATURE_SIZE
SEED_SIZE = 32
DIGEST_SIZE = 64
MAX_CONTEXT = 255

_PREFIX = b"QIZ-COMPOSITE-MLDSA65-ED25519-v1"
_MLDSA_CONTEXT = b"qiz-composite-v1"


def message_digest(message: bytes) -> bytes:
    """SHA3-512 of the message: what a composite signature commits to."""
    return hashlib.sha3_512(message).digest()


def stream_digest(stream: BinaryIO, chunk_size: int = 1 << 20) -> bytes:
    """SHA3-512 of everything readable from ``stream``, read in chunks."""
    h = hashlib.sha3_512()
    while chunk := stream.read(chunk_size):
        h.update(chunk)
    return h.digest()


def _representative(context: str, digest: bytes) -> bytes:
    ctx = context.encode("ascii")
    if not 0 < len(ctx) <= MAX_CONTEXT:
        raise ValueError(f"a signature context is 1 to {MAX_CONTEXT} ASCII characters")
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"a message digest is {DIGEST_SIZE} bytes (SHA3-512)")
    return _PREFIX + bytes([len(ctx)]) + ctx + digest


@dataclass(frozen=True, slots=True)
class CompositePublicKey:
    """Both public halves; ``raw`` is the fixed-length canonical encoding hashed into node ids."""

    raw: bytes
    _parsed: tuple[mldsa.MLDSA65PublicKey, ed25519.Ed25519PublicKey] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_SIZE:
            raise InvalidKey(
                f"a composite public key is {PUBLIC_KEY_SIZE} bytes, got {len(self.raw)}"
            )

    def _components(self) -> tuple[mldsa.MLDSA65PublicKey, ed25519.Ed25519PublicKey]:
        """Both parsed keys, parsed once: a peer's key verifies many signatures."""
        if self._parsed is None:
            try:
                parsed = (
                    mldsa.MLDSA65PublicKey.from_public_bytes(self.mldsa_part),
                    ed25519.Ed25519PublicKey.from_public_bytes(self.ed25519_part),
                )
            except ValueError:
                raise InvalidSignature(
                    "the public key is not a valid ML-DSA-65/Ed25519 key"
                ) from None
            object.__setattr__(self, "_parsed", parsed)
            return parsed
        return self._parsed

    @property
    def mldsa_part(self) -> bytes:
        return self.raw[:MLDSA_PUBLIC_SIZE]

    @property
    def ed25519_part(self) -> bytes:
        return self.raw[MLDSA_PUBLIC_SIZE:]

    def verify(self, signature: bytes, message: bytes, context: str) -> None:
        """Raise :class:`InvalidSignature` unless both halves verify for ``context``."""
        self.verify_digest(signature, message_digest(message), context)

    def verify_digest(self, signature: bytes, digest: bytes, context: str) -> None:
        """Like :meth:`verify` for a message already hashed with :func:`message_digest`."""
        if len(signature) != SIGNATURE_SIZE:
            raise InvalidSignature(
                f"a composite signature is {SIGNATURE_SIZE} bytes, got {len(signature)}"
            )
        rep = _representative(context, digest)
        ml, ed = self._components()
        # Check both halves, always, so timing does not say which one failed.
        ok = True
        try:
            ml.verify(signature[:MLDSA_SIGNATURE_SIZE], rep, _MLDSA_CONTEXT)
        except _CryptoInvalidSignature:
            ok = False
        try:
            ed.verify(signature[MLDSA_SIGNATURE_SIZE:], rep)
        except _CryptoInvalidSignature:
            ok = False
        if not ok:
            raise InvalidSignature("the composite signature does not verify")

    def is_valid(self, signature: bytes, message: bytes, context: str) -> bool:
        try:
            self.verify(signature, message, context)
        except InvalidSignature:
            return False
        return True


class CompositeSigningKey:
    """The private half of a node's signing identity (two 32-byte seeds)."""

    __slots__ = ("_ed", "_ed_seed", "_ml", "_ml_seed", "_public")

    def __init__(self, mldsa_seed: bytes, ed25519_seed: bytes) -> None:
        if len(mldsa_seed) != SEED_SIZE or len(ed25519_seed) != SEED_SIZE:
            raise InvalidKey(f"composite signing seeds are {SEED_SIZE} bytes each")
        self._ml_seed = bytes(mldsa_seed)
        self._ed_seed = bytes(ed25519_seed)
        self._ml = mldsa.MLDSA65PrivateKey.from_seed_bytes(self._ml_seed)
        self._ed = ed25519.Ed25519PrivateKey.from_private_bytes(self._ed_seed)
        self._public = CompositePublicKey(
            self._ml.public_key().public_bytes_raw() + self._ed.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> CompositeSigningKey:
        return cls(os.urandom(SEED_SIZE), os.urandom(SEED_SIZE))

    @property
    def seeds(self) -> tuple[bytes, bytes]:
        """(ML-DSA-65 seed, Ed25519 seed): everything needed to rebuild this key."""
        return self._ml_seed, self._ed_seed

    def public_key(self) -> CompositePublicKey:
        return self._public

    def sign(self, message: bytes, context: str) -> bytes:
        """A composite signature over ``message`` for ``context`` (3373 bytes)."""
        return self.sign_digest(message_digest(message), context)

    def sign_digest(self, digest: bytes, context: str) -> bytes:
        """Like :meth:`sign` for a message already hashed with :func:`message_digest`."""
        rep = _representative(context, digest)
        return self._ml.sign(rep, _MLDSA_CONTEXT) + self._ed.sign(rep)
