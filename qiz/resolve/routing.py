"""The Kademlia routing table (sans-IO): k-buckets with replacement caches, liveness, and
per-IP-prefix diversity limits.

Only contacts whose ids were *proven* enter the table: the caller adds a node after a QMP
handshake with it (the handshake authenticates the id) or from a signed peer record. Addresses
in replies from other nodes are hints until then.

Eviction follows the Kademlia paper: a full bucket keeps its long-lived contacts (they are the
likeliest to stay), and a newcomer waits in the bucket's replacement cache; the table tells the
caller to ping the least recently seen contact, and only if that ping fails is the contact
replaced. Diversity limits stop one network from filling the table (eclipse attacks): at most
``per_prefix_bucket`` contacts of one IPv4 /24 (IPv6 /48) in a bucket and ``per_prefix_table``
in the whole table.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from qiz.resolve.keyspace import bucket_index, distance

K = 20


@dataclass
class Contact:
    """A node we can reach: its id (digest) and address, with what we saw of it."""

    node_id: bytes
    address: str
    last_seen: float = 0.0
    failures: int = 0
    prefix: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.prefix:
            self.prefix = address_prefix(self.address)

    def move(self, address: str) -> None:
        self.address = address
        self.prefix = address_prefix(address)


@functools.lru_cache(maxsize=1 << 16)
def address_prefix(address: str) -> str:
    """The network a contact is in: IPv4 /24 or IPv6 /48 (the unit of the diversity limits)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    octets = host.split(".")
    if len(octets) == 4 and all(o.isdigit() and len(o) <= 3 and int(o) < 256 for o in octets):
        if octets[0] == "127":
            return LOOPBACK
        return ".".join(octets[:3]) + ".0/24"  # the common case, without ipaddress's cost
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d, and is limited like it
    if ip.is_loopback:
        return LOOPBACK
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


# Loopback hosts many nodes of one operator (tests, a local mesh); it is no eclipse vector.
LOOPBACK = "loopback"


@dataclass
class Bucket:
    contacts: OrderedDict[bytes, Contact] = field(default_factory=OrderedDict)  # oldest first
    replacements: OrderedDict[bytes, Contact] = field(default_factory=OrderedDict)
    prefix_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AddResult:
    """What :meth:`RoutingTable.add` did; ``ping`` names a contact the caller should ping
    (the bucket is full and this is its least recently seen member)."""

    added: bool
    ping: Contact | None = None
    reason: str = ""


class RoutingTable:
    def __init__(
        self,
        self_id: bytes,
        *,
        k: int = K,
        replacement_size: int | None = None,
        per_prefix_bucket: int = 2,
        per_prefix_table: int = 10,
        max_failures: int = 3,
        enforce_prefix_limits: bool = True,
    ) -> None:
        self.self_id = self_id
        self.k = k
        self.replacement_size = replacement_size if replacement_size is not None else k
        self.per_prefix_bucket = per_prefix_bucket
        self.per_prefix_table = per_prefix_table
        self.max_failures = max_failures
        self.enforce_prefix_limits = enforce_prefix_limits
        self.buckets: dict[int, Bucket] = {}  # made on first use: most of 256 stay empty
        self._prefix_counts: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(b.contacts) for b in self.buckets.values())

    def _bucket_of(self, node_id: bytes, *, create: bool = False) -> Bucket | None:
        index = bucket_index(self.self_id, node_id)
        if index < 0:
            return None
        bucket = self.buckets.get(index)
        if bucket is None and create:
            bucket = self.buckets[index] = Bucket()
        return bucket

    def __contains__(self, node_id: bytes) -> bool:
        bucket = self._bucket_of(node_id)
        return bucket is not None and node_id in bucket.contacts

    def get(self, node_id: bytes) -> Contact | None:
        bucket = self._bucket_of(node_id)
        return None if bucket is None else bucket.contacts.get(node_id)

    def contacts(self) -> list[Contact]:
        return [c for b in self.buckets.values() for c in b.contacts.values()]

    def _prefix_ok(self, bucket: Bucket, prefix: str) -> bool:
        if not self.enforce_prefix_limits or prefix == LOOPBACK:
            return True
        return (
            bucket.prefix_counts.get(prefix, 0) < self.per_prefix_bucket
            and self._prefix_counts.get(prefix, 0) < self.per_prefix_table
        )

    def add(self, node_id: bytes, address: str, now: float) -> AddResult:
        """Record that ``node_id`` (proven) was seen at ``address`` just now."""
        bucket = self._bucket_of(node_id, create=True)
        if bucket is None:
            return AddResult(False, reason="self")
        existing = bucket.contacts.get(node_id)
        if existing is not None:
            if existing.address != address:
                new_prefix = address_prefix(address)
                self._count(bucket, existing.prefix, -1)
                if new_prefix != existing.prefix and not self._prefix_ok(bucket, new_prefix):
                    self._count(bucket, existing.prefix, +1)
                    return AddResult(False, reason="prefix limit")
                existing.move(address)
                self._count(bucket, existing.prefix, +1)
            existing.last_seen = now
            existing.failures = 0
            bucket.contacts.move_to_end(node_id)
            return AddResult(True)
        contact = Contact(node_id, address, now)
        if not self._prefix_ok(bucket, contact.prefix):
            return AddResult(False, reason="prefix limit")
        if len(bucket.contacts) < self.k:
            bucket.contacts[node_id] = contact
            self._count(bucket, contact.prefix, +1)
            return AddResult(True)
        bucket.replacements.pop(node_id, None)
        bucket.replacements[node_id] = contact
        while len(bucket.replacements) > self.replacement_size:
            bucket.replacements.popitem(last=False)
        oldest = next(iter(bucket.contacts.values()))
        return AddResult(False, ping=oldest, reason="bucket full")

    def failed(self, node_id: bytes) -> None:
        """A request to ``node_id`` failed; after ``max_failures`` it is replaced by the
        freshest replacement candidate, if any."""
        bucket = self._bucket_of(node_id)
        if bucket is None:
            return
        contact = bucket.contacts.get(node_id)
        if contact is None:
            bucket.replacements.pop(node_id, None)
            return
        contact.failures += 1
        if contact.failures >= self.max_failures:
            self.remove(node_id)

    def remove(self, node_id: bytes) -> None:
        bucket = self._bucket_of(node_id)
        if bucket is None:
            return
        contact = bucket.contacts.pop(node_id, None)
        if contact is None:
            return
        self._count(bucket, contact.prefix, -1)
        while bucket.replacements:
            _, candidate = bucket.replacements.popitem(last=True)
            if self._prefix_ok(bucket, candidate.prefix):
                bucket.contacts[candidate.node_id] = candidate
                self._count(bucket, candidate.prefix, +1)
                break

    def closest(
        self, target: bytes, count: int | None = None, *, exclude: bytes | None = None
    ) -> list[Contact]:
        """The ``count`` (default k) known contacts closest to ``target`` by XOR distance."""
        count = count or self.k
        everyone = [c for c in self.contacts() if c.node_id != exclude]
        everyone.sort(key=lambda c: distance(c.node_id, target))
        return everyone[:count]

    def stale_buckets(self, now: float, refresh_after: float) -> list[int]:
        """Indices of non-empty buckets with no contact seen for ``refresh_after`` seconds:
        the caller looks up a random id in each, to keep the table fresh."""
        out = []
        for index, bucket in sorted(self.buckets.items()):
            if (
                bucket.contacts
                and max(c.last_seen for c in bucket.contacts.values()) < now - refresh_after
            ):
                out.append(index)
        return out

    def _count(self, bucket: Bucket, prefix: str, delta: int) -> None:
        for counts in (self._prefix_counts, bucket.prefix_counts):
            counts[prefix] = counts.get(prefix, 0) + delta
            if counts[prefix] <= 0:
                del counts[prefix]
