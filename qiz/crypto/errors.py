"""Errors raised by :mod:`qiz.crypto`.

Every error carries one sentence meant for a human: the CLI prints ``str(error)`` as is.
"""

from qiz import QizError


class CryptoError(QizError):
    """Base class for every failure in the crypto layer."""


class UnsupportedBackend(CryptoError):
    """The installed ``cryptography`` build lacks an algorithm QIZ needs."""


class InvalidSignature(CryptoError):
    """A signature did not verify (wrong key, message, context or bytes)."""


class DecryptionFailed(CryptoError):
    """An AEAD tag, HPKE ciphertext or key envelope did not authenticate."""


class InvalidKey(CryptoError):
    """Key bytes have the wrong length or are not a valid encoding."""


class InvalidIdentifier(CryptoError, ValueError):
    """A text identifier could not be parsed (prefix, alphabet, length or checksum)."""
