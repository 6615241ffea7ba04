"""The records the DHT stores, and the one rule for all of them: a record is stored or
returned only if it validates.

Kinds and their keys (32-byte digests):

* ``peer``: a :class:`~qiz.identity.PeerRecord`, under its node id;
* ``name``: a :class:`NameRecord` -- an owner-signed (label -> value) binding with a sequence
  number and a TTL, under ``ServiceName.of(owner id, label)``;
* ``provider``: a :class:`ProviderRecord` -- "this holder serves this content", signed by the
  holder, under the content id. A key has one provider record per holder.

Every integer of a record (sequence number, expiry) is 0 to 2**63-1, what the SQLite store can
hold; a larger one is refused at validation. For one key (and holder), a higher sequence number
replaces a lower one; a record with a lower
sequence number than the one held is refused, both when offered for storage and when returned by
a lookup.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qiz import QizError, wire
from qiz.crypto.composite import CompositePublicKey
from qiz.crypto.errors import InvalidIdentifier, InvalidKey, InvalidSignature
from qiz.crypto.ids import ContentId, NodeId, ServiceName, normalize_label
from qiz.identity import NodeIdentity, PeerRecord, PeerRecordError
from qiz.identity.peer_record import (
    VerifiedRecordCache,
    check_record_int,
    parse_address,
)

NAME_CONTEXT = "qiz/name-record/v1"
PROVIDER_CONTEXT = "qiz/provider-record/v1"
MAX_RECORD = 8 * 1024
MAX_VALUE = 1024
MAX_TTL = 7 * 24 * 3600
MAX_PROVIDER_ADDRESSES = 8


class RecordKind(enum.Enum):
    PEER = "peer"
    NAME = "name"
    PROVIDER = "provider"


class RecordError(QizError, ValueError):
    """A record was refused; the message says which check failed."""


@dataclass(frozen=True, slots=True)
class ValidRecord:
    """A record that passed validation, with what the store and lookups need to compare it."""

    kind: RecordKind
    key: bytes
    holder: bytes  # the signer's node id digest
    seq: int
    expires: int
    raw: bytes
    value: object = None  # name: the value; peer: the PeerRecord; provider: the addresses

    def supersedes(self, other: ValidRecord) -> bool:
        """True if this record should replace ``other`` (same kind, key and holder)."""
        if self.seq != other.seq:
            return self.seq > other.seq
        return self.expires > other.expires


def _signed_map(raw: bytes, what: str, keys: set[str]) -> dict:
    if len(raw) > MAX_RECORD:
        raise RecordError(f"{what} is {len(raw)} bytes, over the {MAX_RECORD}-byte limit")
    try:
        fields = wire.decode(raw, max_size=MAX_RECORD, what=what)
    except wire.WireError as exc:
        raise RecordError(str(exc)) from None
    if not isinstance(fields, dict) or set(fields) != keys or fields.get("v") != 1:
        raise RecordError(f"{what} does not have the expected fields")
    return fields


def check_uint(value: object, what: str) -> int:
    """An integer a record may carry (peer records' own rule, :func:`check_record_int`: what
    the SQLite store can hold; CBOR goes up to 2**64-1), as this module's :class:`RecordError`."""
    try:
        return check_record_int(value, what)
    except PeerRecordError as exc:
        raise RecordError(str(exc)) from None


def _verify_signed(fields: dict, key_field: str, context: str, what: str) -> NodeId:
    try:
        owner = CompositePublicKey(fields[key_field])
    except (InvalidKey, TypeError):
        raise RecordError(f"{what} has a malformed signing key") from None
    if not isinstance(fields["sig"], bytes):
        raise RecordError(f"{what} signature must be bytes")
    body = {k: v for k, v in fields.items() if k != "sig"}
    try:
        owner.verify(fields["sig"], wire.encode(body), context)
    except InvalidSignature:
        raise RecordError(f"{what} signature does not verify") from None
    return NodeId.from_public_key(owner.raw)


# ----------------------------------------------------------------------------- name records


def make_name_record(
    owner: NodeIdentity, label: str, value: str, *, seq: int, now: float, ttl: int
) -> bytes:
    if not 0 < ttl <= MAX_TTL:
        raise RecordError(f"a name TTL is 1 to {MAX_TTL} seconds")
    check_uint(seq, "a name record's seq")
    raw_value = value.encode("utf-8")
    if len(raw_value) > MAX_VALUE:
        raise RecordError(f"a name value is at most {MAX_VALUE} bytes")
    normalize_label(label)
    body = {
        "v": 1,
        "owner": owner.public_key.raw,
        "label": label,
        "value": value,
        "seq": seq,
        "exp": int(now) + ttl,
    }
    return wire.encode({**body, "sig": owner.sign(wire.encode(body), NAME_CONTEXT)})


def validate_name(raw: bytes, *, key: bytes | None, now: float) -> ValidRecord:
    fields = _signed_map(raw, "name record", {"v", "owner", "label", "value", "seq", "exp", "sig"})
    label, value = fields["label"], fields["value"]
    if not isinstance(label, str) or not isinstance(value, str):
        raise RecordError("name record label and value must be text")
    if len(value.encode("utf-8")) > MAX_VALUE:
        raise RecordError(f"name record value is over {MAX_VALUE} bytes")
    seq = check_uint(fields["seq"], "name record seq")
    exp = check_uint(fields["exp"], "name record expiry")
    if exp <= now:
        raise RecordError("name record has expired")
    if exp > now + MAX_TTL + 60:
        raise RecordError("name record lives longer than the maximum TTL")
    owner_id = _verify_signed(fields, "owner", NAME_CONTEXT, "name record")
    try:
        name = ServiceName.of(owner_id, label)
    except InvalidIdentifier as exc:
        raise RecordError(f"name record label: {exc}") from None
    if key is not None and name.digest != key:
        raise RecordError("name record is not for the key it was stored under")
    return ValidRecord(RecordKind.NAME, name.digest, owner_id.digest, seq, exp, bytes(raw), value)


# ----------------------------------------------------------------------------- providers


def make_provider_record(
    holder: NodeIdentity, content: ContentId, addresses: list[str], *, now: float, ttl: int
) -> bytes:
    if not 0 < ttl <= MAX_TTL:
        raise RecordError(f"a provider TTL is 1 to {MAX_TTL} seconds")
    body = {
        "v": 1,
        "cid": content.digest,
        "holder": holder.public_key.raw,
        "addrs": list(addresses),
        "exp": int(now) + ttl,
    }
    return wire.encode({**body, "sig": holder.sign(wire.encode(body), PROVIDER_CONTEXT)})


def validate_provider(raw: bytes, *, key: bytes | None, now: float) -> ValidRecord:
    fields = _signed_map(raw, "provider record", {"v", "cid", "holder", "addrs", "exp", "sig"})
    cid, addrs = fields["cid"], fields["addrs"]
    if not isinstance(cid, bytes) or len(cid) != 32:
        raise RecordError("provider record content id must be 32 bytes")
    if not isinstance(addrs, list) or len(addrs) > MAX_PROVIDER_ADDRESSES:
        raise RecordError(f"provider record holds at most {MAX_PROVIDER_ADDRESSES} addresses")
    try:
        for address in addrs:
            parse_address(address)
    except ValueError as exc:
        raise RecordError(f"provider record address: {exc}") from None
    exp = check_uint(fields["exp"], "provider record expiry")
    if exp <= now:
        raise RecordError("provider record has expired")
    if exp > now + MAX_TTL + 60:
        raise RecordError("provider record lives longer than the maximum TTL")
    if key is not None and cid != key:
        raise RecordError("provider record is not for the key it was stored under")
    holder = _verify_signed(fields, "holder", PROVIDER_CONTEXT, "provider record")
    return ValidRecord(RecordKind.PROVIDER, cid, holder.digest, exp, exp, bytes(raw), tuple(addrs))


# ----------------------------------------------------------------------------- peers


def validate_peer(
    raw: bytes, *, key: bytes | None, now: float, cache: VerifiedRecordCache | None = None
) -> ValidRecord:
    try:
        record = cache.verify(raw, now=now) if cache else PeerRecord.verify(raw, now=now)
    except PeerRecordError as exc:
        raise RecordError(str(exc)) from None
    if key is not None and record.node_id.digest != key:
        raise RecordError("peer record is not for the key it was stored under")
    if record.expires > now + MAX_TTL + 60:
        raise RecordError("peer record lives longer than the maximum TTL")
    digest = record.node_id.digest
    return ValidRecord(
        RecordKind.PEER, digest, digest, record.seq, record.expires, record.raw, record
    )


def validate(
    kind: RecordKind,
    raw: bytes,
    *,
    key: bytes | None,
    now: float,
    cache: VerifiedRecordCache | None = None,
) -> ValidRecord:
    """Validate a record of ``kind``; with ``key``, also that it belongs under that key."""
    if not isinstance(raw, bytes):
        raise RecordError("a record is a byte string")
    if kind is RecordKind.PEER:
        return validate_peer(raw, key=key, now=now, cache=cache)
    if kind is RecordKind.NAME:
        return validate_name(raw, key=key, now=now)
    return validate_provider(raw, key=key, now=now)
