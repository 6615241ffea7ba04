"""Self-certifying identifiers (the whitepaper's "quantum signatures").

Three kinds, each a 32-byte SHA3-256 digest:

* **node id**: SHA3-256("qiz/node-id/v1" || composite public key) -- whoever shows the public
  key (and signs with it) proves the id is theirs; nobody can pick someone else's id.
* **content id**: SHA3-256 of the bytes themselves (``sha3sum -a 256`` gives the same digest).
* **service name**: SHA3-256 of a tag, the owner's node id and a label -- only the owner can
  sign records for it.

Text form: ``<prefix>`` then 56 lowercase RFC 4648 base32 characters encoding the digest and a
3-byte CRC-24 checksum (35 bytes, so no padding and no spare bits). Prefixes: ``qizn1`` (node),
``qizc1`` (content), ``qizs1`` (service); ``1`` is not a base32 letter, so the prefix ends
unambiguously. CRC-24 detects every error burst of up to 24 bits, hence every single changed
character and every swap of two neighbours; parsing names the fault: wrong prefix, wrong
length, a character outside the alphabet, or a bad checksum.
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata
from dataclasses import dataclass
from typing import ClassVar, Self

from qiz.crypto.errors import InvalidIdentifier

DIGEST_SIZE = 32
CHECKSUM_SIZE = 3
BODY_LENGTH = (DIGEST_SIZE + CHECKSUM_SIZE) * 8 // 5  # 56
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")
NODE_ID_DOMAIN = b"qiz/node-id/v1"
SERVICE_DOMAIN = b"qiz/service-name/v1"
MAX_LABEL_BYTES = 255


def crc24(data: bytes) -> int:
    """CRC-24 as in OpenPGP (RFC 4880 section 6.1): polynomial 0x864CFB, init 0xB704CE."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


@dataclass(frozen=True, slots=True, order=True)
class _Digest:
    """Shared behaviour of the three identifier kinds."""

    digest: bytes
    PREFIX: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise InvalidIdentifier(f"a {self.KIND} is a {DIGEST_SIZE}-byte digest")

    def __str__(self) -> str:
        body = self.digest + crc24(self.digest).to_bytes(CHECKSUM_SIZE, "big")
        return self.PREFIX + base64.b32encode(body).decode("ascii").lower()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def short(self) -> str:
        """A short form for logs and tables (not parseable)."""
        return str(self)[: len(self.PREFIX) + 10]

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse the text form, naming exactly what is wrong when it fails."""
        if not isinstance(text, str):
            raise InvalidIdentifier(f"a {cls.KIND} must be text")
        text = text.strip()
        if not text.startswith(cls.PREFIX):
            other = next((k for k in _KINDS if text.startswith(k.PREFIX)), None)
            if other is not None:
                raise InvalidIdentifier(
                    f"wrong prefix: {text[:12]}... is a {other.KIND}, not a {cls.KIND} "
                    f"(which starts with {cls.PREFIX!r})"
                )
            raise InvalidIdentifier(
                f"wrong prefix: a {cls.KIND} starts with {cls.PREFIX!r}, got {text[:8]!r}"
            )
        body = text[len(cls.PREFIX) :]
        if len(body) != BODY_LENGTH:
            raise InvalidIdentifier(
                f"wrong length: a {cls.KIND} has {BODY_LENGTH} characters after "
                f"{cls.PREFIX!r}, got {len(body)}"
            )
        bad = sorted({c for c in body if c not in _ALPHABET})
        if bad:
            raise InvalidIdentifier(
                f"invalid character {bad[0]!r} in {cls.KIND}: only lowercase a-z and 2-7 "
                "are allowed"
            )
        raw = base64.b32decode(body.upper())
        digest, check = raw[:DIGEST_SIZE], raw[DIGEST_SIZE:]
        if crc24(digest).to_bytes(CHECKSUM_SIZE, "big") != check:
            raise InvalidIdentifier(
                f"bad checksum: this {cls.KIND} has a typo or was cut and pasted wrongly"
            )
        return cls(digest)


class NodeId(_Digest):
    __slots__ = ()
    PREFIX = "qizn1"
    KIND = "node id"

    @classmethod
    def from_public_key(cls, composite_public_key: bytes) -> NodeId:
        """The id of the node whose composite signing public key is given (1984 bytes)."""
        return cls(hashlib.sha3_256(NODE_ID_DOMAIN + composite_public_key).digest())


class ContentId(_Digest):
    __slots__ = ()
    PREFIX = "qizc1"
    KIND = "content id"

    @classmethod
    def of(cls, data: bytes) -> ContentId:
        return cls(hashlib.sha3_256(data).digest())


class ServiceName(_Digest):
    __slots__ = ()
    PREFIX = "qizs1"
    KIND = "service name"

    @classmethod
    def of(cls, owner: NodeId, label: str) -> ServiceName:
        """hash(owner id, label); the label is NFC-normalised UTF-8, 1 to 255 bytes."""
        raw = normalize_label(label)
        return cls(
            hashlib.sha3_256(
                SERVICE_DOMAIN + owner.digest + len(raw).to_bytes(2, "big") + raw
            ).digest()
        )


def normalize_label(label: str) -> bytes:
    """NFC-normalise and encode a service label, refusing empty, oversize or control text."""
    norm = unicodedata.normalize("NFC", label)
    raw = norm.encode("utf-8")
    if not 0 < len(raw) <= MAX_LABEL_BYTES:
        raise InvalidIdentifier(f"a label is 1 to {MAX_LABEL_BYTES} bytes of UTF-8")
    if any(unicodedata.category(c).startswith("C") or c in "/" for c in norm):
        raise InvalidIdentifier("a label may not contain '/' or control characters")
    return raw


_KINDS: tuple[type[_Digest], ...] = (NodeId, ContentId, ServiceName)


def parse_any(text: str) -> NodeId | ContentId | ServiceName:
    """Parse an identifier of whichever kind its prefix names."""
    for kind in _KINDS:
        if text.strip().startswith(kind.PREFIX):
            return kind.parse(text)  # type: ignore[return-value]
    raise InvalidIdentifier(
        "wrong prefix: an identifier starts with one of "
        + ", ".join(repr(k.PREFIX) for k in _KINDS)
    )
