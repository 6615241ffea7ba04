"""Who may make a node work before they have proved who they are (sans-IO: time is passed in).

An inbound connection costs the node a socket and a little memory as soon as it is accepted,
and one X-Wing decapsulation plus two encapsulations once its INIT is processed; none of that
needs an identity. So the listener accounts for unauthenticated work by *network prefix* (/24
for IPv4, /64 for IPv6: what one host or one small network can use without asking anyone), not
by exact address, which an attacker changes for free inside its own network:

* :func:`address_prefix` names the prefix of an ``ip:port`` address;
* :class:`PendingTable` counts handshakes in progress per prefix, and names the connection to
  drop when the node's total is reached (the oldest one of the prefix holding the most);
* KEM work is metered per prefix by a :class:`qiz.ratelimit.KeyedRateLimiter` keyed on
  :func:`address_prefix` (see :mod:`qiz.qmp.cookie`): an INIT is decapsulated only if its
  prefix's bucket has a token, otherwise it gets a cookie reply or a refusal.

Loopback is a prefix like any other (127.0.0.0/24, ::1/64): a local mesh of many nodes stays
well inside the defaults, which are sized for that (see ``ManagerConfig``).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

PREFIX_V4 = 24  # an IPv4 /24: a small network's addresses count as one source
PREFIX_V6 = 64  # an IPv6 /64: the smallest network one subscriber is usually given

K = TypeVar("K", bound=Hashable)


def address_prefix(address: str, *, v6_bits: int | None = None) -> str:
    """``"192.0.2.7:4000"`` -> ``"192.0.2.0/24"``; ``"[2001:db8::1]:4000"`` -> ``"2001:db8::/64"``.

    An IPv4-mapped IPv6 address counts as its IPv4 address. Anything that does not parse (a
    Unix socket, an empty peer name) is its own prefix: it is still counted, never exempt.
    ``v6_bits`` sets a wider IPv6 network (a relay budgets reservations per site's /48).
    """
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or "]" in address else address
    host = host.strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"?{address}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = PREFIX_V4 if ip.version == 4 else (v6_bits or PREFIX_V6)
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


class PendingTable(Generic[K]):
    """Handshakes in progress, oldest first, with a count per prefix.

    The listener refuses a connection whose prefix already holds ``per_prefix`` handshakes;
    when the node as a whole holds ``total``, it drops the :meth:`victim` to make room, so a
    flood from a few networks can delay a newcomer from another network by at most one
    eviction, never lock it out until the flood's connections time out.
    """

    def __init__(self, *, total: int, per_prefix: int) -> None:
        if total < 1 or per_prefix < 1:
            raise ValueError("pending handshake caps must be at least 1")
        self.total = total
        self.per_prefix = per_prefix
        self._prefix_of: dict[K, str] = {}  # insertion order: oldest first
        self._count: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._prefix_of)

    def __contains__(self, key: object) -> bool:
        return key in self._prefix_of

    def count(self, prefix: str) -> int:
        return self._count[prefix]

    def prefix_full(self, prefix: str) -> bool:
        return self._count[prefix] >= self.per_prefix

    @property
    def full(self) -> bool:
        return len(self._prefix_of) >= self.total

    def add(self, key: K, prefix: str) -> None:
        self._prefix_of[key] = prefix
        self._count[prefix] += 1

    def discard(self, key: K) -> None:
        prefix = self._prefix_of.pop(key, None)
        if prefix is not None:
            self._count[prefix] -= 1
            if not self._count[prefix]:
                del self._count[prefix]

    def victim(self, evictable: Callable[[K], bool]) -> K | None:
        """The oldest ``evictable`` handshake of the prefix that holds the most (ties: the
        prefix whose oldest such handshake is oldest); None if none is evictable."""
        best: tuple[int, K] | None = None
        seen: set[str] = set()
        for key, prefix in self._prefix_of.items():  # oldest first
            if prefix in seen or not evictable(key):
                continue
            seen.add(prefix)
            if best is None or self._count[prefix] > best[0]:
                best = (self._count[prefix], key)
        return None if best is None else best[1]
