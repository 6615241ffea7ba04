"""How long to wait for a peer (sans-IO): per-peer round-trip estimates, adaptive timeouts,
and which peers have lately gone silent.

A fixed request timeout makes every silent peer cost its full length (2 s in the DHT), however
fast the honest network is. This module keeps, per peer, TCP's smoothed RTT and RTT variance
(RFC 6298: ``srtt``, ``rttvar``, alpha 1/8, beta 1/4, K 4) and derives two waits from them:

* :meth:`LatencyTable.timeout` -- the retransmission timeout ``srtt + max(G, 4 rttvar)``, held
  between a floor and a ceiling (the RPC's own hard timeout); past it a request is given up on
  for progress (its late answer is still welcome) and the peer's timeout doubles (RFC 6298 5.5)
  until a new sample resets it;
* :meth:`LatencyTable.expected` -- the round trip the peer usually needs (``srtt + max(G,
  2 rttvar)``), the point where a caller may hedge: ask someone else too, without giving up.

A peer never measured gets the node-wide estimate, or ``initial`` before any sample at all: a
node that has measured its network knows what a first contact should cost. The node-wide
estimate is the *median* of the peers' estimates, not an average of every sample: peers that
answer late on purpose (or are far away) must not teach a node to wait longer for everyone,
and a median holds until half the measured peers are slow.

Two kinds of peers are asked last by callers choosing whom to ask (:meth:`LatencyTable.
ask_last`): a *suspect*, whose request timed out within ``suspect_for`` seconds and who has not
answered since, and a *slow* peer, whose own smoothed RTT is over ``SLOW_RATIO`` times the
network's and over the network's timeout. A slow peer is also hedged past at the network's
timeout rather than at its own expected RTT: its answer stays welcome, but the lookup moves on.

Time is passed in (seconds, any monotonic origin); nothing here reads a clock or does I/O, so
the simulator and a live node run the same estimates. The table is bounded (``MAX_PEERS_TRACKED``,
least recently used forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

ALPHA = 1 / 8  # RFC 6298 gain of the smoothed RTT
BETA = 1 / 4  # ... and of the RTT variance
K = 4  # RTO = srtt + K * rttvar
GRANULARITY = 0.010  # G: the least margin above srtt, so a steady peer is not cut off at srtt
MIN_TIMEOUT = 0.200  # floor: a soft timeout below this gains little and hedges honest peers
CEILING = 2.0  # the DHT's hard request timeout; a caller passes its own
INITIAL = 1.0  # RFC 6298 2.1: the timeout before any round trip was measured
SUSPECT_FOR = 600.0  # seconds a timed-out peer stays at the back of the queue
SLOW_RATIO = 4.0  # a peer this many times slower than the network's median is asked last
# the network's median estimate is taken again after this many samples (sorting every peer's
# estimate on every request would cost more than the request)
NETWORK_REFRESH = 32
# peers whose estimates one node keeps; the least recently used are forgotten beyond it
MAX_PEERS_TRACKED = 4096


@dataclass
class RttEstimate:
    """One peer's (or the whole network's) smoothed RTT and variance, RFC 6298 2.2-2.3."""

    srtt: float = 0.0
    rttvar: float = 0.0
    samples: int = 0
    backoff: int = 0  # timeouts since the last sample: each doubles the timeout
    timed_out_at: float | None = None

    def observe(self, rtt: float) -> None:
        rtt = max(0.0, rtt)
        if self.samples == 0:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self.samples += 1
        self.backoff = 0
        self.timed_out_at = None

    def rto(self) -> float:
        return self.srtt + max(GRANULARITY, K * self.rttvar)

    def expected(self) -> float:
        return self.srtt + max(GRANULARITY, 2 * self.rttvar)


class LatencyTable:
    """Per-peer RTT estimates with a node-wide fallback; see the module docstring."""

    def __init__(
        self,
        *,
        floor: float = MIN_TIMEOUT,
        ceiling: float = CEILING,
        initial: float = INITIAL,
        suspect_for: float = SUSPECT_FOR,
        capacity: int = MAX_PEERS_TRACKED,
    ) -> None:
        if not 0 < floor <= ceiling:
            raise ValueError("latency table: need 0 < floor <= ceiling")
        self.floor = floor
        self.ceiling = ceiling
        self.initial = min(max(initial, floor), ceiling)
        self.suspect_for = suspect_for
        self.capacity = capacity
        self.network = RttEstimate()  # the median peer (see _network); samples: all of them
        self._network_due = 0  # samples until the median is taken again
        self._peers: OrderedDict[bytes, RttEstimate] = OrderedDict()
        self.timeouts = 0  # soft timeouts reported, for metrics

    def __len__(self) -> int:
        return len(self._peers)

    def _entry(self, peer: bytes) -> RttEstimate:
        entry = self._peers.get(peer)
        if entry is None:
            entry = self._peers[peer] = RttEstimate()
            while len(self._peers) > self.capacity:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return entry

    def get(self, peer: bytes) -> RttEstimate | None:
        return self._peers.get(peer)

    # ------------------------------------------------------------------ feeding

    def observe(self, peer: bytes, rtt: float) -> None:
        """An answer from ``peer`` came ``rtt`` seconds after its request was sent."""
        self._entry(peer).observe(rtt)
        self.network.samples += 1
        self._network_due -= 1

    def timed_out(self, peer: bytes, now: float) -> None:
        """A request to ``peer`` went unanswered past :meth:`timeout`: double its timeout
        (up to the ceiling) and put it at the back of the queue for ``suspect_for``."""
        entry = self._entry(peer)
        entry.backoff = min(entry.backoff + 1, 16)
        entry.timed_out_at = now
        self.timeouts += 1

    # ------------------------------------------------------------------ asking

    def _clamp(self, value: float) -> float:
        return min(self.ceiling, max(self.floor, value))

    def _network(self) -> RttEstimate:
        """The network-wide estimate: the median peer's srtt and rttvar (each a median of
        its own), refreshed every ``NETWORK_REFRESH`` samples, and after every sample while
        fewer than that were taken (the first peers measured must not stand for the network
        for 32 samples). Variances come from peers measured more than once when there are
        such peers: a single sample's variance is RFC 6298's guess (half the sample), not a
        measurement. ``samples`` 0 (no measured peer left: forgotten past the table's
        bound) means no estimate: callers fall back to ``initial``."""
        if self._network_due <= 0 or self.network.samples < NETWORK_REFRESH:
            measured = [e for e in self._peers.values() if e.samples]
            if not measured:
                self.network = RttEstimate()
                return self.network
            self.network.srtt = _median([e.srtt for e in measured])
            settled = [e.rttvar for e in measured if e.samples > 1]
            self.network.rttvar = _median(settled or [e.rttvar for e in measured])
            self._network_due = NETWORK_REFRESH
        return self.network

    def _base(self, peer: bytes) -> tuple[float, float]:
        """(rto, expected) before backoff and clamping: the peer's own estimate if it has
        samples, else the network's, else ``initial`` (expected: half of it)."""
        entry = self._peers.get(peer)
        source = entry if entry is not None and entry.samples else self._network()
        if source.samples:
            return source.rto(), source.expected()
        return self.initial, self.initial / 2

    def timeout(self, peer: bytes) -> float:
        """How long a request to ``peer`` may take before the caller stops waiting for it."""
        rto, _ = self._base(peer)
        entry = self._peers.get(peer)
        backoff = entry.backoff if entry is not None else 0
        return self._clamp(self._clamp(rto) * (1 << backoff))  # RFC 6298 5.5: double the RTO

    def expected(self, peer: bytes) -> float:
        """The round trip ``peer`` usually needs: past it, a caller may hedge. Never above
        :meth:`timeout`, never below the RTT floor's quarter (a hedge needs room to matter)."""
        _, expected = self._base(peer)
        if self.slow(peer):  # hedge past it when the network as a whole would have answered
            expected = min(expected, self._clamp(self._network().rto()))
        return min(self.timeout(peer), max(self.floor / 4, expected))

    def slow(self, peer: bytes) -> bool:
        """Whether ``peer`` usually answers over ``SLOW_RATIO`` times later than the
        network's median peer, and later than the network's timeout."""
        entry = self._peers.get(peer)
        if entry is None or not entry.samples:
            return False
        network = self._network()
        if not network.samples:
            return False
        # the network's timeout as callers get it (at least the floor): a network of 1 ms
        # LAN peers (or of fast sybils) must not make every 20 ms peer "slow"
        return entry.srtt > max(SLOW_RATIO * network.srtt, self._clamp(network.rto()))

    def ask_last(self, peer: bytes, now: float) -> bool:
        """Whether a caller choosing whom to ask should put ``peer`` last: a suspect, or
        slow."""
        return self.suspect(peer, now) or self.slow(peer)

    def suspect(self, peer: bytes, now: float) -> bool:
        """Whether ``peer`` timed out within ``suspect_for`` and has not answered since."""
        entry = self._peers.get(peer)
        return (
            entry is not None
            and entry.timed_out_at is not None
            and now - entry.timed_out_at < self.suspect_for
        )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
