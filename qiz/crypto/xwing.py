"""X-Wing: the hybrid KEM of ML-KEM-768 and X25519 (draft-connolly-cfrg-xwing-kem).

A decapsulation key is a 32-byte seed, expanded with SHAKE-256 into the ML-KEM seed (d || z)
and the X25519 scalar. The shared secret is SHA3-256 over both component secrets, the X25519
ciphertext and public key, and the X-Wing label, so it stays secret if either component holds.

Layouts (bytes): public key = ML-KEM pk (1184) || X25519 pk (32) = 1216;
ciphertext = ML-KEM ct (1088) || X25519 ephemeral pk (32) = 1120; shared secret = 32.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from qiz.crypto.errors import CryptoError, InvalidKey

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 1216
CIPHERTEXT_SIZE = 1120
SHARED_SECRET_SIZE = 32
ENCAPSULATION_SEED_SIZE = 64
_MLKEM_PK = 1184
_MLKEM_CT = 1088
_LABEL = b"\\.//^\\"

MlKemDerand = Callable[[bytes, bytes], tuple[bytes, bytes]]
"""ML-KEM-768 encapsulation from a given 32-byte message: (public key, m) -> (ss, ct)."""

_mlkem_derand: MlKemDerand | None = None


def use_derandomised_mlkem(encapsulate: MlKemDerand | None) -> None:
    """Install the ML-KEM encapsulation that ``encapsulate(eseed=...)`` needs (None removes it).

    OpenSSL draws ML-KEM's randomness itself and cannot be given it, and the one implementation
    that can (``tests/mlkem_derand.py``: slow, pure Python, not constant-time) must never be
    reachable from a running node. So it lives with the tests, which install it here for the
    known-answer vectors and the QMP transcript vector; a node never does, and refuses ``eseed``.
    """
    global _mlkem_derand  # noqa: PLW0603 - one test-only hook, set before any vector runs
    _mlkem_derand = encapsulate


@dataclass(frozen=True, slots=True)
class X25519Ephemeral:
    """The X25519 half of one encapsulation, made ahead of time: the scalar multiplication
    that derives its public value is a third of an encapsulation's cost, and it does not depend
    on the recipient. Used for one encapsulation only, then dropped."""

    private: x25519.X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls) -> X25519Ephemeral:
        key = x25519.X25519PrivateKey.generate()
        return cls(key, key.public_key().public_bytes_raw())


def _combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + _LABEL).digest()


@dataclass(frozen=True, slots=True)
class XWingPublicKey:
    """An X-Wing encapsulation key (1216 bytes)."""

    raw: bytes
    _parsed: tuple[mlkem.MLKEM768PublicKey, x25519.X25519PublicKey] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_SIZE:
            raise InvalidKey(
                f"an X-Wing public key is {PUBLIC_KEY_SIZE} bytes, got {len(self.raw)}"
            )

    def components(self) -> tuple[mlkem.MLKEM768PublicKey, x25519.X25519PublicKey]:
        """The parsed ML-KEM and X25519 keys, parsed once and kept: a key is usually
        encapsulated to many times (every handshake with that peer)."""
        if self._parsed is None:
            try:
                parsed = (
                    mlkem.MLKEM768PublicKey.from_public_bytes(self.mlkem_part),
                    x25519.X25519PublicKey.from_public_bytes(self.x25519_part),
                )
            except ValueError as exc:
                raise InvalidKey(f"invalid X-Wing public key: {exc}") from None
            object.__setattr__(self, "_parsed", parsed)
            return parsed
        return self._parsed

    @property
    def mlkem_part(self) -> bytes:
        return self.raw[:_MLKEM_PK]

    @property
    def x25519_part(self) -> bytes:
        return self.raw[_MLKEM_PK:]

    def encapsulate(
        self, eseed: bytes | None = None, *, ephemeral: X25519Ephemeral | None = None
    ) -> tuple[bytes, bytes]:
        """Return ``(shared_secret, ciphertext)``.

        ``ephemeral``: an X25519 key pair made ahead of time (never used before, never used
        again) instead of one made here; the result is the same as without it.

        Without ``eseed`` the randomness comes from OpenSSL and the OS. With a 64-byte ``eseed``
        (tests and published vectors only) the result is deterministic: the first 32 bytes are
        ML-KEM's message, the last 32 the X25519 ephemeral scalar. That needs the derandomised
        ML-KEM installed by :func:`use_derandomised_mlkem`; without it ``eseed`` is refused.
        """
        mlkem_key, x25519_key = self.components()
        if eseed is None:
            ss_m, ct_m = mlkem_key.encapsulate()
            if ephemeral is None:
                ephemeral = X25519Ephemeral.generate()
        else:
            if len(eseed) != ENCAPSULATION_SEED_SIZE:
                raise InvalidKey(f"X-Wing encapsulation seed is {ENCAPSULATION_SEED_SIZE} bytes")
            if _mlkem_derand is None:
                raise CryptoError(
                    "X-Wing encapsulation with a given seed is for test vectors only: install "
                    "an ML-KEM encapsulation with xwing.use_derandomised_mlkem() first"
                )
            ss_m, ct_m = _mlkem_derand(self.mlkem_part, eseed[:32])
            seeded = x25519.X25519PrivateKey.from_private_bytes(eseed[32:])
            ephemeral = X25519Ephemeral(seeded, seeded.public_key().public_bytes_raw())
        ct_x = ephemeral.public
        try:
            ss_x = ephemeral.private.exchange(x25519_key)
        except ValueError:
            raise InvalidKey("X-Wing public key has a degenerate X25519 part") from None
        return _combine(ss_m, ss_x, ct_x, self.x25519_part), ct_m + ct_x


class XWingPrivateKey:
    """An X-Wing decapsulation key, held as its 32-byte seed."""

    __slots__ = ("_mlkem", "_public", "_seed", "_x25519")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise InvalidKey(f"an X-Wing seed is {SEED_SIZE} bytes, got {len(seed)}")
        expanded = hashlib.shake_256(seed).digest(96)
        self._seed = bytes(seed)
        self._mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._x25519 = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        self._public = XWingPublicKey(
            self._mlkem.public_key().public_bytes_raw()
            + self._x25519.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> XWingPrivateKey:
        return cls(os.urandom(SEED_SIZE))

    @property
    def seed(self) -> bytes:
        return self._seed

    def public_key(self) -> XWingPublicKey:
        return self._public

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """Return the shared secret. ML-KEM rejects implicitly: a wrong ciphertext yields a
        pseudorandom secret, so callers learn of tampering only when the key fails to
        authenticate something."""
        if len(ciphertext) != CIPHERTEXT_SIZE:
            raise InvalidKey(
                f"an X-Wing ciphertext is {CIPHERTEXT_SIZE} bytes, got {len(ciphertext)}"
            )
        ct_m, ct_x = ciphertext[:_MLKEM_CT], ciphertext[_MLKEM_CT:]
        ss_m = self._mlkem.decapsulate(ct_m)
        try:
            ss_x = self._x25519.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        except ValueError:
            raise InvalidKey("X-Wing ciphertext has a degenerate X25519 part") from None
        return _combine(ss_m, ss_x, ct_x, self._public.x25519_part)

    def component_keys(self) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
        """The ML-KEM and X25519 halves, for HPKE's MLKEM768-X25519 suite (same keys)."""
        return self._mlkem, self._x25519
