"""What a node knows about its own addresses, from what its peers tell it (sans-IO).

Peers report the address they see this node at (``nat.observed``, docs/nat.md §1) and whether a
dial back to it worked (``nat.dialback``, §2). :class:`NatState` keeps a bounded window of those
reports and derives, without any clock or socket of its own:

* ``reachability``: by the peers' latest dial-back answers, one vote each: ``public`` when
  at least as many reached us as failed, ``private`` when more failed, ``unknown`` before;
* ``public_addresses``: the IPs at least two observers agree on (one if only one ever reported),
  with the ports seen for each;
* ``mapping``: how the NAT in front of us (if any) picks external ports, from the connections
  this node dialled, whose local port it knows: ``none`` (peers see our own address),
  ``port-preserving`` (the external port is the local port), ``port-changing`` (another port:
  a hole punch is unlikely to work, as behind a symmetric NAT), or ``unknown``.

Every report comes from an authenticated peer, but a peer may lie: one observer's word never
decides an address among several, and one helper's answer never outvotes the others'.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from qiz.identity.peer_record import parse_address

# Reports kept (docs/nat.md section 6): enough for a few dozen peers, bounded whatever they send.
MAX_OBSERVATIONS = 64
# Dial-back answers kept; the newest decide.
MAX_DIALBACKS = 8


@dataclass(frozen=True, slots=True)
class Observation:
    """A peer saw this node at ``seen``. ``local`` is this node's own end of that connection
    when this node dialled it (known from its socket), else empty."""

    seen: str
    observer: bytes
    local: str
    at: float


class NatState:
    """This node's view of its addresses and reachability. ``listen`` are the addresses it
    listens on (as written in its record, wildcards already expanded)."""

    def __init__(self, listen: list[str] | tuple[str, ...] = ()) -> None:
        self.listen = tuple(listen)
        self.observations: deque[Observation] = deque(maxlen=MAX_OBSERVATIONS)
        # each asked peer's latest answer (reached or not, when), oldest first
        self.dialbacks: dict[bytes, tuple[bool, float]] = {}
        self.changes = 0  # bumped whenever the set of public addresses changes
        # the owner's word ([nat] reachability = "private" or "public"), over any dial-back
        self.forced: str | None = None

    def set_listen(self, listen: list[str] | tuple[str, ...]) -> None:
        self.listen = tuple(listen)

    # ------------------------------------------------------------------ reports

    def observe(self, seen: str, observer: bytes, *, local: str = "", now: float) -> bool:
        """Record that ``observer`` sees us at ``seen``; False (ignored) when ``seen`` is not an
        ``ip:port``. Returns True when it changed the public addresses."""
        try:
            parse_address(seen)
            if local:
                parse_address(local)
        except ValueError:
            return False
        before = self.public_addresses()
        self.observations.append(Observation(seen, observer, local, now))
        changed = self.public_addresses() != before
        if changed:
            self.changes += 1
        return changed

    def dialback(self, observer: bytes, reached: bool, *, now: float) -> None:
        """A peer tried to dial us back: ``reached`` says whether it got through. Its answer
        replaces its earlier one (a node that moved behind a NAT is private from then on)."""
        self.dialbacks.pop(observer, None)
        self.dialbacks[observer] = (reached, now)
        while len(self.dialbacks) > MAX_DIALBACKS:
            del self.dialbacks[next(iter(self.dialbacks))]

    # ------------------------------------------------------------------ derived

    @property
    def reachability(self) -> str:
        """``public`` when at least as many of the peers asked reached us as failed to (and
        one did), ``private`` when more failed, ``unknown`` before any answer. The latest
        answer of each peer counts once: one lying helper among honest ones decides nothing."""
        if self.forced is not None:
            return self.forced
        reached = sum(1 for ok, _ in self.dialbacks.values() if ok)
        failed = len(self.dialbacks) - reached
        if reached and reached >= failed:
            return "public"
        if failed:
            return "private"
        return "unknown"

    def public_addresses(self) -> list[str]:
        """Observed addresses whose IP at least two observers reported (one, if only one peer
        ever reported anything), most reported first; loopback and our own listen addresses
        are not "public" news."""
        by_ip: dict[str, set[bytes]] = {}
        ports: dict[str, Counter[int]] = {}
        for obs in self.observations:
            host, port = parse_address(obs.seen)
            by_ip.setdefault(host, set()).add(obs.observer)
            ports.setdefault(host, Counter())[port] += 1
        observers = {obs.observer for obs in self.observations}
        needed = 1 if len(observers) == 1 else 2
        out = []
        for host, who in sorted(by_ip.items(), key=lambda item: -len(item[1])):
            if len(who) < needed:
                continue
            for port, _ in ports[host].most_common():
                text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                out.append(text)
        return out

    @property
    def mapping(self) -> str:
        """How a NAT in front of us maps our dialled connections' ports (module docstring)."""
        preserved = changed = direct = 0
        for obs in self.observations:
            if not obs.local:
                continue
            seen_host, seen_port = parse_address(obs.seen)
            local_host, local_port = parse_address(obs.local)
            if seen_host == local_host:
                direct += 1
            elif seen_port == local_port:
                preserved += 1
            else:
                changed += 1
        if changed:
            return "port-changing"
        if preserved:
            return "port-preserving"
        if direct:
            return "none"
        return "unknown"

    def snapshot(self) -> dict:
        """Plain data for ``node status`` and ``qiz netcheck``."""
        return {
            "reachability": self.reachability,
            "reachability_set_by": "config" if self.forced is not None else "peers",
            "listen": list(self.listen),
            "public_addresses": self.public_addresses(),
            "mapping": self.mapping,
            "observations": len(self.observations),
            "observers": len({obs.observer for obs in self.observations}),
            "dialbacks": [
                {"observer": observer.hex()[:16], "reached": reached}
                for observer, (reached, _) in self.dialbacks.items()
            ],
        }
