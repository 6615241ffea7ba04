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

A channel key kept apart from any node (``qiz deploy keygen``) is a *key file*: the same
``QIZKEY`` file a node's identity is kept in (:mod:`qiz.crypto.keyfile`, plain mode, a checksum
over the secret), holding the canonical CBOR map ``{"type": "qiz-composite", "mldsa65": seed,
"ed25519": seed}`` or ``{"type": "qiz-slh-dsa", "secret": sk, "public": pk}``
(:func:`key_file_bytes`, :func:`load_key_file`). Written with mode 0600.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
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

from qiz.crypto import keyfile, slhdsa
from qiz.crypto.composite import CompositePublicKey, CompositeSigningKey
from qiz.crypto.errors import CryptoError, InvalidSignature
from qiz.deploy.errors import ChannelError
from qiz.deploy.limits import MAX_SIGNATURE_HEX
from qiz.fsio import FileTooLarge, read_bounded
from qiz.wire import cbor
from qiz.wire.cbor import WireError

CONTEXT = "qiz/deploy/tuf"
COMPOSITE_KEYTYPE = "qiz-composite"
COMPOSITE_SCHEME = "mldsa65-ed25519"
SLHDSA_KEYTYPE = "qiz-slh-dsa"
SLHDSA_SCHEME = "slh-dsa-shake-128s"
HOME_URI_SCHEME = "qiz-home"
NODE_KEY = "node"  # names a node's own identity key where key files are listed (deploy rotate)


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


QizSigner = CompositeSigner | SlhDsaSigner
_KEY_FILE_BYTES = keyfile.MAX_SECRET + 64  # a plain key file: its secret plus head and digest


def generate_signer(slh_dsa: bool = False) -> QizSigner:
    """A new channel key: composite ML-DSA-65 + Ed25519, or SLH-DSA (for a long-lived root)."""
    if slh_dsa:
        return SlhDsaSigner.generate()
    return CompositeSigner(CompositeSigningKey.generate())


def key_file_bytes(signer: QizSigner) -> bytes:
    """The key file holding ``signer``'s private key (see the module's docstring)."""
    if isinstance(signer, CompositeSigner):
        ml, ed = signer._key.seeds
        body: dict[str, Any] = {"type": COMPOSITE_KEYTYPE, "mldsa65": ml, "ed25519": ed}
    else:
        body = {
            "type": SLHDSA_KEYTYPE,
            "secret": signer._key.secret,
            "public": signer._key.public.raw,
        }
    return keyfile.encode(cbor.encode(body))


def signer_from_bytes(data: bytes, name: str) -> QizSigner:
    """The signer a key file's bytes hold; one :class:`ChannelError` line for anything else."""
    try:
        body = cbor.decode(keyfile.decode(data, name=name), what=name)
    except (CryptoError, WireError) as exc:
        raise ChannelError(f"{name} is not a channel key file: {exc}") from None
    kind = body.get("type") if isinstance(body, dict) else None
    try:
        if kind == COMPOSITE_KEYTYPE:
            return CompositeSigner(CompositeSigningKey(body["mldsa65"], body["ed25519"]))
        if kind == SLHDSA_KEYTYPE:
            public = slhdsa.SlhDsaPublicKey(bytes(body["public"]))
            return SlhDsaSigner(slhdsa.SlhDsaSigningKey(bytes(body["secret"]), public))
    except (KeyError, TypeError, CryptoError) as exc:
        raise ChannelError(f"{name} is not a channel key file: {exc}") from None
    raise ChannelError(
        f"{name} is not a channel key file (a node's identity.key is given by its home, "
        "see qiz deploy rotate --help)"
        if kind is None
        else f"{name} holds a key of unknown type {str(kind)[:32]!r}"
    )


def load_key_file(path: Path) -> QizSigner:
    """The signer in the key file at ``path`` (one line if it is missing or not one)."""
    try:
        data = read_bounded(path, _KEY_FILE_BYTES, "key file")
    except FileNotFoundError:
        raise ChannelError(f"key file {path} does not exist") from None
    except (OSError, FileTooLarge) as exc:
        raise ChannelError(f"cannot read key file {path}: {exc}") from None
    return signer_from_bytes(data, str(path))


def register() -> None:
    """Make securesystemslib (and so python-tuf) know our key types and signer URIs.
    Idempotent; done when this module is imported."""
    KEY_FOR_TYPE_AND_SCHEME[(COMPOSITE_KEYTYPE, COMPOSITE_SCHEME)] = CompositeKey
    KEY_FOR_TYPE_AND_SCHEME[(SLHDSA_KEYTYPE, SLHDSA_SCHEME)] = SlhDsaKey
    SIGNER_FOR_URI_SCHEME[HOME_URI_SCHEME] = CompositeSigner


register()
