"""Token buckets keyed by who is asking (sans-IO: the caller passes the time in).

One limiter for every layer that meters a peer: QMP budgets KEM work per source network
(/24 or /64), so a handshake flood gets cookies instead of decapsulations; the DHT meters
stores per peer (the id the link's handshake proved) and per signer (the record's signing id),
so that one link, or one identity, cannot fill a node's record store at wire speed. Each key
has a bucket of ``burst`` tokens refilled at ``rate`` per second; a request takes one token or
is refused.

The table of buckets is itself bounded: at most ``max_keys`` keys are tracked, and the one
touched least recently is forgotten first. A forgotten bucket comes back full, which is what
it would have been after idling ``burst / rate`` seconds anyway; an attacker who rotates
through more than ``max_keys`` ids to reset its buckets pays the id puzzle for each of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

MAX_KEYS = 4096  # buckets tracked per limiter: bounds its memory whatever keys peers present


class KeyedRateLimiter:
    """One token bucket per key; :meth:`allow` answers whether a request may go ahead now."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = MAX_KEYS) -> None:
        if rate < 0 or burst < 1 or max_keys < 1:
            raise ValueError("a rate limiter needs rate >= 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # tokens, at

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: Hashable, now: float) -> float:
        """The tokens ``key`` has at ``now`` (``burst`` for a key never seen)."""
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.burst)
        tokens, at = entry
        return min(float(self.burst), tokens + max(0.0, now - at) * self.rate)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket if it has them; False (and nothing taken)
        if not."""
        tokens = self.tokens(key, now)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
