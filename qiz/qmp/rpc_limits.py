"""Per-peer rate limits on every RPC method (docs/security.md, "Peer scores" and the limits).

Why: the in-flight cap bounds how many of a peer's requests run at once, not how many it may
send: a peer answering fast enough could call an expensive method (a lookup, an offer, a
manifest read) thousands of times a second over one link. Every method has a token bucket per
(peer, method) pair, shared by all of that peer's links; a request over it is answered
``busy`` without running. The default is generous (an honest node never comes near it); the
storage pool's piece transfers get a bucket sized for a gigabyte a second. Sans-IO: the
caller passes the time.
"""

from __future__ import annotations

from qiz.ratelimit import KeyedRateLimiter

RPC_RATE = 200.0  # requests per second of one method from one peer...
RPC_BURST = 400.0  # ...and the burst above it
# methods whose honest use is far from the default: (rate, burst). The storage pool's: its
# pieces (up to 1008 KiB each; 240 KiB until session 16, when 5,000 a second was already over
# a gigabyte a second, as the fastest get measured here is 0.7), and an owner's lease renewals
# of thousands of columns in one pass; the pool meters its writes itself (qiz.store.limits).
STORE_RATE = (5000.0, 10000.0)
METHOD_RATES: dict[str, tuple[float, float]] = {
    f"store.{name}": STORE_RATE
    for name in ("put", "read", "offer", "commit", "renew", "release", "have", "manifest")
}
MAX_RPC_BUCKETS = 16_384  # (peer, method) buckets tracked per rate class


class RpcMeter:
    """Whether a peer's request for a method may run now."""

    def __init__(self) -> None:
        self._default = KeyedRateLimiter(RPC_RATE, RPC_BURST, max_keys=MAX_RPC_BUCKETS)
        self._special = {
            method: KeyedRateLimiter(rate, burst, max_keys=MAX_RPC_BUCKETS)
            for method, (rate, burst) in METHOD_RATES.items()
        }
        self.refused = 0

    def allow(self, peer: bytes, method: str, now: float) -> bool:
        limiter = self._special.get(method, self._default)
        if limiter.allow((peer, method), now):
            return True
        self.refused += 1
        return False

    def rate_of(self, method: str) -> float:
        return METHOD_RATES.get(method, (RPC_RATE, RPC_BURST))[0]
