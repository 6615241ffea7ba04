"""Signed peer records: the self-certifying statement "node id -> keys and addresses".

A record is canonical CBOR of a map::

    {"v": 1, "id": bytes(32), "sk": composite public key (1984), "xk": X-Wing public key (1216),
     "addrs": ["127.0.0.1:4000", "[::1]:4000", ...], "seq": uint, "exp": uint (unix seconds),
     "sig": composite signature (3373)}

plus, for a node nobody can dial directly (behind NAT, see docs/nat.md), an optional
``"relays": [[relay id digest (32 bytes), "ip:port"], ...]``: the relays it holds a reservation
on. A record without relays omits the key, so its encoding is the same as before the field.

``sig`` signs the canonical encoding of the same map without ``sig``, under the context
``"qiz/peer-record/v1"``. A record is accepted only if it is at most :data:`MAX_RECORD_SIZE`
bytes (checked before parsing), is canonical, ``id`` equals SHA3-256 over the domain tag and
``sk`` (so nobody can publish keys under someone else's id), ``seq`` and ``exp`` are integers
from 0 to :data:`MAX_RECORD_INT` (what SQLite can store), both signature halves verify, and it
has not expired. A higher ``seq`` replaces a lower one for the same id.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from qiz import QizError, wire
from qiz.crypto.composite import CompositePublicKey
from qiz.crypto.errors import InvalidKey, InvalidSignature
from qiz.crypto.ids import NodeId
from qiz.crypto.xwing import XWingPublicKey
from qiz.identity.node_identity import NodeIdentity

FORMAT = 1
CONTEXT = "qiz/peer-record/v1"
MAX_RECORD_SIZE = 8 * 1024
MAX_ADDRESSES = 16
MAX_ADDRESS_LENGTH = 64
# Relays a record may name (docs/nat.md section 3): a private node reserves on 2 by default.
MAX_RECORD_RELAYS = 4
DEFAULT_LIFETIME = 24 * 3600
# The largest integer a record may carry (seq, exp): SQLite's INTEGER is a signed 64-bit number,
# and every integer of a record ends up in a record store. A larger one (CBOR allows up to
# 2**64-1) is refused when the record is checked, so it can never reach a database.
MAX_RECORD_INT = 2**63 - 1


class PeerRecordError(QizError, ValueError):
    """A peer record was refused; the message says which check failed."""


def parse_address(text: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split ``"ip:port"`` or ``"[ipv6]:port"`` into host and port. IP literals only: QIZ
    resolves names through its own records, never through DNS. Port 0 ("any free port") is
    only for listening, never in a record."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_ADDRESS_LENGTH:
        raise ValueError("an address is 1 to 64 characters")
    return _parse_address(text, allow_port_zero)


# Every DHT reply carries up to 20 contacts' addresses, the same few again and again: parsing
# them with ipaddress was about 30 % of a lookup's CPU (bench/dht_procs.py, profiled).
@functools.lru_cache(maxsize=4096)
def _parse_address(text: str, allow_port_zero: bool) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"address {text!r} is not ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"address {text!r} does not start with an IP address") from None
    if ip.version == 6 and not text.startswith("["):
        raise ValueError(f"IPv6 address {text!r} must be written [addr]:port")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port < 65536:
        raise ValueError(f"port {port} out of range")
    return str(ip), port


def check_record_int(value: object, what: str) -> int:
    """``value`` if it is an integer a record may carry (0 to :data:`MAX_RECORD_INT`), else a
    :class:`PeerRecordError` naming ``what`` and the range."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RECORD_INT:
        raise PeerRecordError(f"{what} must be an integer from 0 to 2**63-1")
    return value


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """A relay that forwards circuits to a record's node: the relay's id (so a dialler can reuse
    a link it has to it, and pin who must answer) and where it listens."""

    node_id: NodeId
    address: str

    def __str__(self) -> str:
        return f"{self.node_id}@{self.address}"


def _parse_relays(value: object) -> tuple[RelayAddress, ...]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_RECORD_RELAYS:
        raise PeerRecordError(f"peer record relays must be a list of 1 to {MAX_RECORD_RELAYS}")
    relays = []
    for entry in value:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], bytes)
            or not isinstance(entry[1], str)
        ):
            raise PeerRecordError('a peer record relay is [id digest, "ip:port"]')
        try:
            relays.append(RelayAddress(NodeId(entry[0]), entry[1]))
            parse_address(entry[1])
        except ValueError as exc:
            raise PeerRecordError(f"peer record relay is malformed: {exc}") from None
    return tuple(relays)


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A verified (or freshly signed) peer record. Build one with :meth:`create` or
    :meth:`verify`; the raw bytes are kept so that what is forwarded is what was signed."""

    node_id: NodeId
    signing_key: CompositePublicKey
    xwing_key: XWingPublicKey
    addresses: tuple[str, ...]
    seq: int
    expires: int
    raw: bytes
    relays: tuple[RelayAddress, ...] = ()

    @classmethod
    def create(
        cls,
        identity: NodeIdentity,
        addresses: list[str] | tuple[str, ...],
        *,
        seq: int,
        now: float,
        lifetime: int = DEFAULT_LIFETIME,
        relays: list[RelayAddress] | tuple[RelayAddress, ...] = (),
    ) -> PeerRecord:
        """Sign a record for ``identity``. ``now`` is injected so tests control time."""
        for address in addresses:
            parse_address(address)
        check_record_int(seq, "peer record sequence number")
        if len(addresses) > MAX_ADDRESSES:
            raise PeerRecordError(f"a record holds at most {MAX_ADDRESSES} addresses")
        body = {
            "v": FORMAT,
            "id": identity.node_id.digest,
            "sk": identity.public_key.raw,
            "xk": identity.xwing_public.raw,
            "addrs": list(addresses),
            "seq": seq,
            "exp": int(now) + lifetime,
        }
        if relays:
            body["relays"] = [[relay.node_id.digest, relay.address] for relay in relays]
        signature = identity.sign(wire.encode(body), CONTEXT)
        raw = wire.encode({**body, "sig": signature})
        return cls.verify(raw, now=now)

    @classmethod
    def verify(
        cls,
        raw: bytes,
        *,
        now: float,
        expected_id: NodeId | None = None,
        check_expiry: bool = True,
    ) -> PeerRecord:
        """Check every rule in the module docstring; raise :class:`PeerRecordError` if any fails.

        ``check_expiry=False`` is for offline uses that need only the id-to-key binding (checking
        an old file signature), never for accepting a record into a table or cache.
        """
        if len(raw) > MAX_RECORD_SIZE:
            raise PeerRecordError(
                f"peer record is {len(raw)} bytes, over the {MAX_RECORD_SIZE}-byte limit"
            )
        try:
            fields = wire.decode(raw, max_size=MAX_RECORD_SIZE, what="peer record")
        except wire.WireError as exc:
            raise PeerRecordError(str(exc)) from None
        if not isinstance(fields, dict):
            raise PeerRecordError("peer record is not a map")
        if fields.get("v") != FORMAT:
            raise PeerRecordError(f"peer record has unknown format {fields.get('v')!r}")
        expected_keys = {"v", "id", "sk", "xk", "addrs", "seq", "exp", "sig"}
        if set(fields) not in (expected_keys, expected_keys | {"relays"}):
            raise PeerRecordError("peer record has missing or unknown fields")
        node_digest, sk, xk, sig = fields["id"], fields["sk"], fields["xk"], fields["sig"]
        addrs, seq, exp = fields["addrs"], fields["seq"], fields["exp"]
        if not all(isinstance(x, bytes) for x in (node_digest, sk, xk, sig)):
            raise PeerRecordError("peer record key fields must be byte strings")
        check_record_int(seq, "peer record sequence number")
        check_record_int(exp, "peer record expiry")
        if not isinstance(addrs, list) or len(addrs) > MAX_ADDRESSES:
            raise PeerRecordError(f"peer record holds a list of at most {MAX_ADDRESSES} addresses")
        try:
            for address in addrs:
                parse_address(address)
            signing_key = CompositePublicKey(sk)
            xwing_key = XWingPublicKey(xk)
            xwing_key.components()  # a key nobody could encapsulate to is refused here
            claimed = NodeId(node_digest)
        except (ValueError, InvalidKey) as exc:
            raise PeerRecordError(f"peer record is malformed: {exc}") from None
        relays = _parse_relays(fields["relays"]) if "relays" in fields else ()
        if NodeId.from_public_key(sk) != claimed:
            raise PeerRecordError("peer record id does not match the hash of its signing keys")
        if expected_id is not None and claimed != expected_id:
            raise PeerRecordError(f"peer record is for {claimed}, expected {expected_id}")
        body = {k: v for k, v in fields.items() if k != "sig"}
        try:
            signing_key.verify(sig, wire.encode(body), CONTEXT)
        except InvalidSignature:
            raise PeerRecordError("peer record signature does not verify") from None
        if check_expiry and exp <= now:
            raise PeerRecordError("peer record has expired")
        return cls(claimed, signing_key, xwing_key, tuple(addrs), seq, exp, bytes(raw), relays)


class VerifiedRecordCache:
    """Remembers records that verified, keyed by the SHA3-256 of their exact bytes.

    A node sees the same peer records again and again (every handshake with a peer carries
    one); checking a composite signature costs about half a millisecond, a lookup nothing.
    Only identical bytes hit, and expiry and the expected id are still checked on every hit,
    so the answer is always the one :meth:`PeerRecord.verify` would give.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, PeerRecord] = OrderedDict()
        self.hits = 0

    def verify(self, raw: bytes, *, now: float, expected_id: NodeId | None = None) -> PeerRecord:
        if len(raw) > MAX_RECORD_SIZE:
            return PeerRecord.verify(raw, now=now, expected_id=expected_id)
        key = hashlib.sha3_256(raw).digest()
        record = self._entries.get(key)
        if record is None:
            record = PeerRecord.verify(raw, now=now, expected_id=expected_id)
            self._entries[key] = record
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return record
        self._entries.move_to_end(key)
        self.hits += 1
        if record.expires <= now:
            del self._entries[key]
            raise PeerRecordError("peer record has expired")
        if expected_id is not None and record.node_id != expected_id:
            raise PeerRecordError(f"peer record is for {record.node_id}, expected {expected_id}")
        return record
