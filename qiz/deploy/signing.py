"""TUF keys and signers for QIZ's own algorithms, plugged into securesystemslib's registries.

python-tuf verifies every signature through ``securesystemslib.signer.Key.verify_signature``,
dispatched on the key's ``(keytype, scheme)`` in ``KEY_FOR_TYPE_AND_SCHEME``. Registering our
classes there makes the stock ``Metadata.verify_delegate`` and ``ngclient.Updater`` check our
signatures on their normal path: nothing in python-tuf is patched.

Why our own key types rather than securesystemslib's built-in ML-DSA (``ml-dsa`` /
``ml-dsa-65/1``, TAP 21, present in securesystemslib 1.6.0): a node's identity is a *composite*
ML-DSA-65 + Ed25519 key (:mod:`qiz.crypto.composite`), valid only if both halves verify, so a
channel signed by a node survives the break of either algorithm. A lone ML-DSA key would give
that up. The two types:

``qiz-composite`` / ``mldsa65-ed25519``
    ``keyval.public`` is the 1984-byte composite public key in hex (the very bytes a node id
    hashes). A signature is the 3373-byte composite signature in hex over the metadata's
    canonical bytes, made for the context :data:`CONTEXT`, so a TUF signature can never be
    replayed as any other QIZ signature (peer record, file) or the reverse.

``qiz-slh-dsa`` / ``slh-dsa-shake-128s``
    SLH-DSA (FIPS 205) through the optional ``pqcrypto`` extra: hash-based, so the right choice
    for a long-lived root key. Slow to sign (about a second) and 7856-byte signatures: fine for
    root metadata signed a few times a year.

Key ids are securesystemslib's default: SHA-256 of the canonical JSON of
``{keytype, scheme, keyval}``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import (
    KEY_FOR_TYPE_AND_SCHEME,
    SIGNER_FOR_URI_SCHEME,
    Key,
    SecretsHandler,
    Signature,
    Signer,
)

from qiz.crypto import slhdsa
from qiz.crypto.composite import CompositePublicKey, CompositeSigningKey
from qiz.crypto.errors import CryptoError, InvalidSignature
from qiz.deploy.limits import MAX_SIGNATURE_HEX

CONTEXT = "qiz/deploy/tuf"
COMPOSITE_KEYTYPE = "qiz-composite"
COMPOSITE_SCHEME = "mldsa65-ed25519"
SLHDSA_KEYTYPE = "qiz-slh-dsa"
SLHDSA_SCHEME = "slh-dsa-shake-128s"
HOME_URI_SCHEME = "qiz-home"


def default_keyid(keytype: str, scheme: str, keyval: dict[str, Any]) -> str:
    """securesystemslib's default key id: SHA-256 of the key's canonical JSON."""
    text = encode_canonical({"keytype": keytype, "scheme": scheme, "keyval": keyval})
    assert isinstance(text, str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _RawKey(Key):
    """A public key held as raw bytes in ``keyval.public`` (hex); subclasses verify."""

    KEYTYPE = ""
    SCHEME = ""

    def __init__(
        self,
        keyid: str,
        keytype: str,
        scheme: str,
        keyval: dict[str, Any],
        unrecognized_fields: dict[str, Any] | None = None,
    ) -> None:
        if keytype != self.KEYTYPE or scheme != self.SCHEME:
            raise ValueError(f"{type(self).__name__} is {self.KEYTYPE}/{self.SCHEME}")
        public = keyval.get("public")
        if not isinstance(public, str):
            raise ValueError(f"a {keytype} key needs keyval.public as hex text")
        try:
            self.raw = bytes.fromhex(public)
        except ValueError:
            raise ValueError(f"a {keytype} key's keyval.public is not hex") from None
        super().__init__(keyid, keytype, scheme, keyval, unrecognized_fields)

    @classmethod
    def from_raw(cls, raw: bytes) -> _RawKey:
        keyval = {"public": raw.hex()}
        return cls(default_keyid(cls.KEYTYPE, cls.SCHEME, keyval), cls.KEYTYPE, cls.SCHEME, keyval)

    @classmethod
    def from_dict(cls, keyid: str, key_dict: dict[str, Any]) -> _RawKey:
        """A key read from metadata. Its id must be the hash of its own content: an id is how
        roles and signatures name a key, so a root must not be able to file another key under
        a trusted one's id."""
        keytype, scheme, keyval = cls._from_dict(key_dict)
        if keyid != default_keyid(keytype, scheme, keyval):
            raise ValueError(f"key id {keyid[:16]}... is not the hash of the key it names")
        return cls(keyid, keytype, scheme, keyval, key_dict)

    def to_dict(self) -> dict[str, Any]:
        return self._to_dict()

    def _check(self, signature: bytes, data: bytes) -> None:
        raise NotImplementedError

    def verify_signature(self, signature: Signature, data: bytes) -> None:
        """Raise ``UnverifiedSignatureError`` (what python-tuf counts as "not signed") unless
        ``signature`` is this key's over ``data``."""
        if signature.keyid != self.keyid:
            raise VerificationError(f"signature keyid {signature.keyid} is not {self.keyid}")
        sig = signature.signature
        if not isinstance(sig, str) or len(sig) > MAX_SIGNATURE_HEX:
            raise UnverifiedSignatureError(f"malformed signature by {self.keyid}")
        try:
            self._check(bytes.fromhex(sig), data)
        except ValueError:
            raise UnverifiedSignatureError(f"malformed signature by {self.keyid}") from None
        except CryptoError:
            raise UnverifiedSignatureError(f"Failed to verify signature by {self.keyid}") from None
        except Exception as exc:  # a backend's surprise is a failed check, never a crash
            raise VerificationError(f"cannot verify a signature by {self.keyid}: {exc}") from None


class CompositeKey(_RawKey):
    """A node's composite ML-DSA-65 + Ed25519 public key as a TUF key."""

    KEYTYPE = COMPOSITE_KEYTYPE
    SCHEME = COMPOSITE_SCHEME

    def __init__(
        self,
        keyid: str,
        keytype: str,
        scheme: str,
        keyval: dict[str, Any],
        unrecognized_fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(keyid, keytype, scheme, keyval, unrecognized_fields)
        try:
            self.public = CompositePublicKey(self.raw)
        except CryptoError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def of(cls, public: CompositePublicKey) -> CompositeKey:
        key = cls.from_raw(public.raw)
        assert isinstance(key, CompositeKey)
        return key

    def _check(self, signature: bytes, data: bytes) -> None:
        # both halves or nothing: CompositePublicKey.verify checks ML-DSA-65 and Ed25519
        self.public.verify(signature, data, CONTEXT)


class SlhDsaKey(_RawKey):
    """An SLH-DSA-SHAKE-128s public key as a TUF key (for a long-lived root key)."""

    KEYTYPE = SLHDSA_KEYTYPE
    SCHEME = SLHDSA_SCHEME

    def _check(self, signature: bytes, data: bytes) -> None:
        try:
            slhdsa.SlhDsaPublicKey(self.raw).verify(signature, data, CONTEXT)
        except (TypeError, RuntimeError):  # pqcrypto on a wrong-length key
            raise InvalidSignature("the SLH-DSA signature does not verify") from None


class CompositeSigner(Signer):
    """Signs TUF metadata with a composite signing key (a node identity's, or a role key)."""

    def __init__(self, key: CompositeSigningKey) -> None:
        self._key = key
        self._public = CompositeKey.of(key.public_key())

    @property
    def public_key(self) -> CompositeKey:
        return self._public

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._public.keyid, self._key.sign(payload, CONTEXT).hex())

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> CompositeSigner:
        """``qiz-home:PATH``: the identity key of the QIZ home at PATH (asking
        ``secrets_handler("passphrase")`` if the key file is locked)."""
        from qiz.home import Home

        scheme, _, path = priv_key_uri.partition(":")
        if scheme != HOME_URI_SCHEME or not path:
            raise ValueError(f"a QIZ signer URI is {HOME_URI_SCHEME}:PATH")
        home = Home(path)
        passphrase = None
        if home.identity_locked() and secrets_handler is not None:
            passphrase = secrets_handler("passphrase")
        signer = cls(home.load_identity(passphrase).signing_key)
        if signer.public_key.keyid != public_key.keyid:
            raise ValueError(f"the identity in {path} is not key {public_key.keyid}")
        return signer


class SlhDsaSigner(Signer):
    """Signs TUF metadata with an SLH-DSA key (in memory: where it is kept is the caller's)."""

    def __init__(self, key: slhdsa.SlhDsaSigningKey) -> None:
        self._key = key
        public = SlhDsaKey.from_raw(key.public.raw)
        assert isinstance(public, SlhDsaKey)
        self._public = public

    @classmethod
    def generate(cls) -> SlhDsaSigner:
        return cls(slhdsa.SlhDsaSigningKey.generate())

    @property
    def public_key(self) -> SlhDsaKey:
        return self._public

    def sign(self, payload: bytes) -> Signature:
        return Signature(self._public.keyid, self._key.sign(payload, CONTEXT).hex())

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> SlhDsaSigner:
        raise ValueError("SLH-DSA signers are made in memory (SlhDsaSigner(key)), not from a URI")


def register() -> None:
    """Make securesystemslib (and so python-tuf) know our key types and signer URIs.
    Idempotent; done when this module is imported."""
    KEY_FOR_TYPE_AND_SCHEME[(COMPOSITE_KEYTYPE, COMPOSITE_SCHEME)] = CompositeKey
    KEY_FOR_TYPE_AND_SCHEME[(SLHDSA_KEYTYPE, SLHDSA_SCHEME)] = SlhDsaKey
    SIGNER_FOR_URI_SCHEME[HOME_URI_SCHEME] = CompositeSigner


register()
