"""SLH-DSA (FIPS 205, SPHINCS+) for long-lived release and root keys, through ``pqcrypto``.

Hash-based signatures rest on nothing but the hash function, so they are the right choice for
keys that must stay trustworthy for years. They are slow to make (about a second for the ``s``
parameter sets) and large, which is fine for signing releases and wrong for anything per
message. ``pqcrypto`` is an optional extra (``pip install qiz[slhdsa]``); without it this module
imports, and using it raises one clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from qiz.crypto.errors import InvalidSignature, UnsupportedBackend

PARAMETER_SET = "slh_dsa_shake_128s"


def _backend() -> ModuleType:
    try:
        import importlib

        return importlib.import_module(f"pqcrypto.sign.{PARAMETER_SET}")
    except ImportError:
        raise UnsupportedBackend(
            "SLH-DSA needs the optional 'pqcrypto' package (pip install 'qiz[slhdsa]')"
        ) from None


def available() -> bool:
    try:
        _backend()
    except UnsupportedBackend:
        return False
    return True


@dataclass(frozen=True, slots=True)
class SlhDsaPublicKey:
    raw: bytes

    def verify(self, signature: bytes, message: bytes, context: str) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` is valid for ``context``."""
        backend = _backend()
        try:
            backend.verify(self.raw, message, signature, context=context.encode("ascii"))
        except ValueError:
            raise InvalidSignature("the SLH-DSA signature does not verify") from None


@dataclass(frozen=True, slots=True)
class SlhDsaSigningKey:
    """An SLH-DSA-SHAKE-128s key pair; ``secret`` holds the FIPS 205 private key bytes."""

    secret: bytes
    public: SlhDsaPublicKey

    @classmethod
    def generate(cls) -> SlhDsaSigningKey:
        pk, sk = _backend().keygen()
        return cls(bytes(sk), SlhDsaPublicKey(bytes(pk)))

    def sign(self, message: bytes, context: str) -> bytes:
        return bytes(_backend().sign(self.secret, message, context=context.encode("ascii")))
