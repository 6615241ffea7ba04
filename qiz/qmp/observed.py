"""What a node knows about its own addresses, from what its peers tell it (sans-IO).

Peers report the address they see this node at (``nat.observed``, docs/nat.md §1) and whether a
dial back to it worked (``nat.dialback``, §2). :class:`NatState` keeps the latest report of each
peer (a bounded number of peers) and derives, without any clock or socket of its own:

* ``reachability``: a vote of the peers' latest dial-back answers. Peers that see this node
  behind a NAT (at an address that is not one of its own) are the outside world: when any of
  them answered, only their answers vote. A LAN neighbour that reaches a node's private address
  says nothing about the internet; in a mesh that is all one network (loopback, one LAN) every
  answer is "inside" and votes. A tie goes to ``public`` (a dial proved possible); ``unknown``
  before any answer;
* ``public_addresses``: the IPs at least two observers agree on (one if only one ever reported),
  at the ports reported for them; ``public_ips``, the same IPs alone (what a change means);
* ``verified``: the outside addresses a dial-back reached (a port forward, a 1:1 NAT): what a
  public node behind such a NAT publishes;
* ``mapping``: how a NAT in front of us picks external ports for the connections this node
  dialled (whose local port it knows), by a majority of the observers that saw one:
  ``none`` (they see our own address), ``port-preserving`` (the external port is the local
  port), ``port-changing`` (another port: a hole punch is unlikely to work, as behind a
  symmetric NAT), or ``unknown``.

Every report comes from an authenticated peer, but a peer may lie: each peer holds one report
and one vote, so one peer can neither flush the others' reports nor outvote them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from qiz.identity.peer_record import parse_address

# Peers whose latest report is kept (docs/nat.md section 6): bounded whatever they send.
MAX_OBSERVATIONS = 64
# Peers whose latest dial-back answer is kept; the oldest is forgotten first.
MAX_DIALBACKS = 8
# Seconds a dial-back answer counts: a laptop that moved behind a NAT is not public for ever.
DIALBACK_MAX_AGE = 900.0


@dataclass(frozen=True, slots=True)
class Observation:
    """A peer saw this node at ``seen``. ``local`` is this node's own end of that connection
    when this node dialled it (known from its socket), else empty."""

    seen: str
    observer: bytes
    local: str
    at: float


@dataclass(frozen=True, slots=True)
class Dialback:
    """A peer's answer to ``nat.dialback``: whether it reached us, at which address, and
    whether it sees us from outside (behind a NAT: at an address not our own)."""

    reached: bool
    address: str | None
    outside: bool
    at: float


def _text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NatState:
    """This node's view of its addresses and reachability. ``listen`` are the addresses it
    listens on (as written in its record, wildcards already expanded)."""

    def __init__(self, listen: list[str] | tuple[str, ...] = ()) -> None:
        self.listen = tuple(listen)
        self.observations: OrderedDict[bytes, Observation] = OrderedDict()
        self.dialbacks: OrderedDict[bytes, Dialback] = OrderedDict()
        self.changes = 0  # bumped whenever the set of public IPs changes
        # the owner's word ([nat] reachability = "private" or "public"), over any dial-back
        self.forced: str | None = None

    def set_listen(self, listen: list[str] | tuple[str, ...]) -> None:
        self.listen = tuple(listen)

    def own_ips(self) -> set[str]:
        out = set()
        for address in self.listen:
            try:
                out.add(parse_address(address)[0])
            except ValueError:
                continue
        return out

    # ------------------------------------------------------------------ reports

    def observe(self, seen: str, observer: bytes, *, local: str = "", now: float) -> bool:
        """Record that ``observer`` sees us at ``seen`` (replacing its earlier report); False
        (ignored) when ``seen`` is not an ``ip:port``. True when the set of public IPs changed."""
        try:
            parse_address(seen)
            if local:
                parse_address(local)
        except ValueError:
            return False
        before = self.public_ips()
        self.observations.pop(observer, None)
        self.observations[observer] = Observation(seen, observer, local, now)
        while len(self.observations) > MAX_OBSERVATIONS:
            self.observations.popitem(last=False)
        changed = self.public_ips() != before
        if changed:
            self.changes += 1
        return changed

    def seen_by(self, observer: bytes) -> Observation | None:
        return self.observations.get(observer)

    def is_outside(self, observer: bytes) -> bool:
        """Whether ``observer`` sees us at an address that is not our own (a NAT between)."""
        obs = self.observations.get(observer)
        return obs is not None and parse_address(obs.seen)[0] not in self.own_ips()

    def dialback(
        self, observer: bytes, reached: bool, *, now: float, address: str | None = None
    ) -> None:
        """A peer tried to dial us back: ``reached`` says whether it got through (at
        ``address``). Its answer replaces its earlier one."""
        self.dialbacks.pop(observer, None)
        self.dialbacks[observer] = Dialback(reached, address, self.is_outside(observer), now)
        while len(self.dialbacks) > MAX_DIALBACKS:
            self.dialbacks.popitem(last=False)

    def expire(self, now: float, max_age: float = DIALBACK_MAX_AGE) -> None:
        """Forget dial-back answers older than ``max_age`` seconds."""
        for observer in [o for o, d in self.dialbacks.items() if now - d.at > max_age]:
            del self.dialbacks[observer]

    # ------------------------------------------------------------------ derived

    def _voters(self) -> list[Dialback]:
        answers = list(self.dialbacks.values())
        outside = [d for d in answers if d.outside]
        return outside or answers

    @property
    def reachability(self) -> str:
        if self.forced is not None:
            return self.forced
        voters = self._voters()
        reached = sum(1 for d in voters if d.reached)
        failed = len(voters) - reached
        if reached and reached >= failed:
            return "public"
        if failed:
            return "private"
        return "unknown"

    @property
    def verified(self) -> list[str]:
        """Outside addresses a dial-back reached (to publish before the listen addresses)."""
        out = [
            d.address
            for d in self.dialbacks.values()
            if d.reached and d.outside and d.address is not None
        ]
        return list(dict.fromkeys(out))

    def public_ips(self) -> frozenset[str]:
        return frozenset(parse_address(a)[0] for a in self.public_addresses())

    def public_addresses(self) -> list[str]:
        """Observed addresses whose IP at least two observers reported (one, if only one peer
        ever reported anything), the most reported IP first, each at the ports seen for it."""
        by_ip: dict[str, set[bytes]] = {}
        ports: dict[str, Counter[int]] = {}
        for obs in self.observations.values():
            host, port = parse_address(obs.seen)
            by_ip.setdefault(host, set()).add(obs.observer)
            ports.setdefault(host, Counter())[port] += 1
        needed = 1 if len(self.observations) == 1 else 2
        out = []
        for host, who in sorted(by_ip.items(), key=lambda item: -len(item[1])):
            if len(who) >= needed:
                out.extend(_text(host, port) for port, _ in ports[host].most_common())
        return out

    @property
    def mapping(self) -> str:
        """How a NAT in front of us maps our dialled connections' ports: the verdict of most
        observers that saw one of our dialled connections (module docstring)."""
        votes: Counter[str] = Counter()
        for obs in self.observations.values():
            if not obs.local:
                continue
            seen_host, seen_port = parse_address(obs.seen)
            local_host, local_port = parse_address(obs.local)
            if seen_host == local_host:
                votes["none"] += 1
            elif seen_port == local_port:
                votes["port-preserving"] += 1
            else:
                votes["port-changing"] += 1
        if not votes:
            return "unknown"
        (top, count), *rest = votes.most_common()
        if rest and rest[0][1] == count:  # a tie: say nothing rather than guess
            return "unknown"
        return top

    def snapshot(self) -> dict:
        """Plain data for ``node status`` and ``qiz netcheck``."""
        return {
            "reachability": self.reachability,
            "reachability_set_by": "config" if self.forced is not None else "peers",
            "listen": list(self.listen),
            "public_addresses": self.public_addresses(),
            "verified": self.verified,
            "mapping": self.mapping,
            "observations": len(self.observations),
            "observers": len(self.observations),
            "dialbacks": [
                {"observer": observer.hex()[:16], "reached": d.reached, "outside": d.outside}
                for observer, d in self.dialbacks.items()
            ],
        }
