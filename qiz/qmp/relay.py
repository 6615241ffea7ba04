"""The relay's bookkeeping (docs/nat.md §3, §4, §6), sans-IO: reservations, circuits, the
forwarding table and every limit, decided from events and time alone.

A relay exists so that two nodes that cannot dial each other meet through one that both can
reach; what it must never become is a free amplifier or a memory sink. So everything a peer
can make it hold is bounded here:

* reservations: at most ``max_reservations``, ``max_reservations_per_prefix`` from one /24
  (IPv4) or /48 (IPv6), each ending at ``reservation_ttl`` or when the link it was made on
  closes;
* circuits: at most ``max_circuits``, ``max_circuits_per_peer`` to one target and from one
  dialler, each ending after ``circuit_bytes`` (both directions together) or
  ``circuit_seconds``;
* buffered bytes: per circuit and direction, the relay accepts data only within the credit the
  receiving end granted, and never more than one :data:`~qiz.qmp.circuit.CIRCUIT_WINDOW`
  outstanding: a credit that would raise it above the window is a protocol error. So whatever
  either end does, the relay holds at most two windows per circuit.

Abuse (qiz.trust.scores ``relay_abuse``, which weighs a lot and is remembered for a day): the
core names, through ``on_abuse(peer, what)``, a peer that did what no honest implementation
does, never one that met a limit honest use meets:

* charged: stream data or credit beyond the window (the ends keep to it by construction), and
  asking again for a third circuit from one dialler to one target after being refused one (a
  dialler needs one link per peer, and one more while a replacement is made; the first
  refusal is free: an honest dialler may ask before the relay has seen its old circuit close);
* not charged: every refusal because the relay, a network prefix or a *target* is full (other
  peers fill them), a target without a reservation (a stale record), a dialler's
  ``max_circuits_per_peer`` circuits (a busy honest node reaches that many private peers), and
  the circuit's byte and time budgets (the circuit's designed end: a long or large transfer
  meets them, and the relay enforces them by closing the circuit).

Link keys and peer ids are opaque hashables (the asyncio side uses ``Link`` objects and
``NodeId``\\ s). Refusals are values (:class:`Refusal`) with the reasons of docs/nat.md.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from qiz import QizError
from qiz.qmp.admission import address_prefix
from qiz.qmp.circuit import CIRCUIT_WINDOW, MAX_STREAM_CHUNK, MAX_STREAM_CREDIT


class RelayConfigError(QizError):
    """A ``[relay]`` setting in config.toml is out of range."""


# the largest value any count setting takes (a typo of a few zeros is caught)
TABLE_MAX = 1_000_000


@dataclass
class RelayConfig:
    """``[relay]`` in config.toml (docs/nat.md §6)."""

    enabled: bool = True
    max_reservations: int = 128  # reservations held at once
    max_reservations_per_prefix: int = 16  # ... from one /24 or /48
    reservation_ttl: float = 3600.0  # seconds a reservation lasts (the holder renews)
    max_circuits: int = 64  # circuits forwarded at once
    max_circuits_per_peer: int = 8  # ... to one reserved target, and from one dialler
    circuit_bytes: int = 256 * 1024 * 1024  # bytes per circuit, both directions together
    circuit_seconds: float = 3600.0  # seconds per circuit
    reserve_on: int = 2  # relays a private node keeps reservations on

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.enabled, bool):
            raise RelayConfigError("config.toml: relay.enabled must be true or false")
        for item in dataclasses.fields(self):
            if item.name == "enabled":
                continue
            value = getattr(self, item.name)
            kind = float if item.type in ("float", float) else int
            top = 1 << 40 if item.name == "circuit_bytes" else TABLE_MAX
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and not isinstance(value, int))
                or not 0 < value <= top
            ):
                raise RelayConfigError(
                    f"config.toml: relay.{item.name} must be a positive {kind.__name__} "
                    f"(at most {top})"
                )

    @classmethod
    def from_table(cls, table: object) -> RelayConfig:
        """The ``[relay]`` table of config.toml: the settings above by name. An unknown key is
        refused (a typo would otherwise leave a limit at its default unnoticed)."""
        if not isinstance(table, dict):
            raise RelayConfigError("config.toml: [relay] must be a table")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - names)
        if unknown:
            raise RelayConfigError(f"config.toml: [relay] has no key {unknown[0]!r}")
        values = {f.name: table[f.name] for f in dataclasses.fields(cls) if f.name in table}
        for item in dataclasses.fields(cls):
            if item.name in values and item.type in ("float", float):
                value = values[item.name]
                if isinstance(value, int) and not isinstance(value, bool):
                    values[item.name] = float(value)
        return cls(**values)


def network_prefix(address: str) -> str:
    """``"192.0.2.7:4000"`` -> ``"192.0.2.0/24"``, ``"[2001:db8::1]:4000"`` ->
    ``"2001:db8::/48"``: the network one reservation budget covers (a site's /48, where the
    link layer counts /64s). Anything that does not parse is its own prefix."""
    return address_prefix(address, v6_bits=48)


# ---------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the relay turns down; ``reason`` is what the RPC error carries."""

    reason: str


REFUSE_DISABLED = "relay disabled"
REFUSE_RESERVATIONS = "too many reservations"
REFUSE_PREFIX = "too many reservations from this network"
REFUSE_NO_RESERVATION = "no reservation"
REFUSE_CIRCUITS = "too many circuits"
REFUSE_TO_PEER = "too many circuits to this peer"
REFUSE_FROM_PEER = "too many circuits from this peer"
REFUSE_PAIR = "a circuit from this peer to this target is already open"
# Circuits one dialler may hold to one target through this relay at once: one link, and one
# more while a replacement is made. Without it one identity could take all of a target's
# max_circuits_per_peer slots and make it unreachable through this relay.
MAX_CIRCUITS_PER_PAIR = 2
REFUSE_SELF = "a circuit to oneself"
# what a peer that broke a circuit's flow control did (the stream closes with it, "protocol")
ABUSE_DATA = "stream data beyond the credit granted"
ABUSE_CREDIT = "stream credit beyond the window"


@dataclass(slots=True)
class Reservation:
    peer: Hashable
    link: Hashable
    prefix: str
    expires: float


@dataclass(frozen=True, slots=True)
class End:
    """One end of a circuit: a stream on a link."""

    link: Hashable
    sid: int


@dataclass(frozen=True, slots=True)
class Close:
    """Close the stream ``end`` with ``code`` and ``reason`` (tell the peer on that link)."""

    end: End
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the message on to ``to`` (the same kind and value, the sid rewritten)."""

    to: End


@dataclass(slots=True)
class Circuit:
    cid: int
    dialler: Hashable
    target: Hashable
    a: End  # the dialler's end (A-R)
    b: End  # the target's end (R-B)
    opened: float
    bytes: int = 0
    # bytes each end may still send (granted by the other end, through us), per direction
    allowance: dict[str, int] = field(
        default_factory=lambda: {"a": CIRCUIT_WINDOW, "b": CIRCUIT_WINDOW}
    )

    def other(self, side: str) -> End:
        return self.b if side == "a" else self.a

    def peer(self, side: str) -> Hashable:
        """The peer at ``side``'s end: the dialler (``a``) or the target (``b``)."""
        return self.dialler if side == "a" else self.target

    def outstanding(self, side: str) -> int:
        """Bytes ``side`` sent through us that the other end has not credited back yet: at
        most what the relay can be holding for that direction."""
        return CIRCUIT_WINDOW - self.allowance[side]


@dataclass(slots=True)
class Expired:
    """What :meth:`RelayCore.tick` ended."""

    reservations: list[Reservation]
    closes: list[Close]


class RelayCore:
    """Reservations, circuits and the forwarding table of one relay."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.reservations: dict[Hashable, Reservation] = {}  # by holder's peer id
        self._per_prefix: Counter[str] = Counter()
        self.circuits: dict[int, Circuit] = {}
        self._ends: dict[End, tuple[int, str]] = {}  # (link, sid) -> (circuit, side)
        self._to_peer: Counter[Hashable] = Counter()
        self._from_peer: Counter[Hashable] = Counter()
        self._pair: Counter[tuple[Hashable, Hashable]] = Counter()
        # pairs at MAX_CIRCUITS_PER_PAIR refused a third circuit since they reached it (only
        # pairs holding circuits: bounded by them, cleared when one of theirs closes)
        self._pair_refused: set[tuple[Hashable, Hashable]] = set()
        self._next_cid = 0
        # totals, for metrics and tests
        self.counters: Counter[str] = Counter()
        self.peak_outstanding = 0  # the most bytes any circuit direction ever had in flight
        # told of a peer that abused the relay (see the module's notes): (peer, what it did)
        self.on_abuse: Callable[[Hashable, str], None] | None = None

    # ------------------------------------------------------------------ reservations

    def reserve(
        self, peer: Hashable, link: Hashable, prefix: str, now: float
    ) -> Reservation | Refusal:
        """Reserve (or renew) a slot for ``peer``, bound to ``link``."""
        config = self.config
        if not config.enabled:
            return self._refuse(REFUSE_DISABLED)
        current = self.reservations.get(peer)
        if current is None:
            if len(self.reservations) >= config.max_reservations:
                return self._refuse(REFUSE_RESERVATIONS)
            if self._per_prefix[prefix] >= config.max_reservations_per_prefix:
                return self._refuse(REFUSE_PREFIX)
        else:
            if current.prefix != prefix and (
                self._per_prefix[prefix] >= config.max_reservations_per_prefix
            ):
                return self._refuse(REFUSE_PREFIX)
            self._drop_reservation(current)
        reservation = Reservation(peer, link, prefix, now + config.reservation_ttl)
        self.reservations[peer] = reservation
        self._per_prefix[prefix] += 1
        self.counters["reservations"] += 1
        return reservation

    def reservation(self, peer: Hashable, now: float) -> Reservation | None:
        found = self.reservations.get(peer)
        return found if found is not None and found.expires > now else None

    def _drop_reservation(self, reservation: Reservation) -> None:
        if self.reservations.get(reservation.peer) is reservation:
            del self.reservations[reservation.peer]
            self._per_prefix[reservation.prefix] -= 1
            if not self._per_prefix[reservation.prefix]:
                del self._per_prefix[reservation.prefix]

    def _refuse(self, reason: str) -> Refusal:
        self.counters[f"refused: {reason}"] += 1
        return Refusal(reason)

    def _abuse(self, peer: Hashable, what: str) -> None:
        self.counters[f"abuse: {what}"] += 1
        if self.on_abuse is not None:
            self.on_abuse(peer, what)

    # ------------------------------------------------------------------ circuits

    def check_connect(
        self, dialler: Hashable, target: Hashable, now: float
    ) -> Reservation | Refusal:
        """Whether ``dialler`` may open one more circuit to ``target`` now: the target's
        reservation, or why not."""
        config = self.config
        if not config.enabled:
            return self._refuse(REFUSE_DISABLED)
        if dialler == target:
            return self._refuse(REFUSE_SELF)
        reservation = self.reservation(target, now)
        if reservation is None:
            return self._refuse(REFUSE_NO_RESERVATION)
        if len(self.circuits) >= config.max_circuits:
            return self._refuse(REFUSE_CIRCUITS)
        if self._to_peer[target] >= config.max_circuits_per_peer:
            return self._refuse(REFUSE_TO_PEER)
        if self._from_peer[dialler] >= config.max_circuits_per_peer:
            return self._refuse(REFUSE_FROM_PEER)
        pair = (dialler, target)
        if self._pair[pair] >= MAX_CIRCUITS_PER_PAIR:
            # one dialler cannot take a target's every circuit slot: an honest one needs one
            # link (and one more while a replacement is made), so asking again for a third,
            # once refused, is abuse
            if pair in self._pair_refused:
                self._abuse(dialler, REFUSE_PAIR)
            self._pair_refused.add(pair)
            return self._refuse(REFUSE_PAIR)
        return reservation

    def connect(
        self, dialler: Hashable, a: End, target: Hashable, b: End, now: float
    ) -> Circuit | Refusal:
        """Open a circuit from ``dialler``'s stream ``a`` to ``target``'s stream ``b`` (the
        relay opened ``b`` on the link of the target's reservation)."""
        checked = self.check_connect(dialler, target, now)
        if isinstance(checked, Refusal):
            return checked
        if checked.link != b.link or a in self._ends or b in self._ends or a.link == b.link:
            return self._refuse("stream already in use")
        self._next_cid += 1
        circuit = Circuit(self._next_cid, dialler, target, a, b, now)
        self.circuits[circuit.cid] = circuit
        self._ends[a] = (circuit.cid, "a")
        self._ends[b] = (circuit.cid, "b")
        self._to_peer[target] += 1
        self._from_peer[dialler] += 1
        self._pair[(dialler, target)] += 1
        self.counters["circuits"] += 1
        return circuit

    def _remove(self, circuit: Circuit) -> None:
        if self.circuits.pop(circuit.cid, None) is None:
            return
        self._ends.pop(circuit.a, None)
        self._ends.pop(circuit.b, None)
        for counter, key in (
            (self._to_peer, circuit.target),
            (self._from_peer, circuit.dialler),
            (self._pair, (circuit.dialler, circuit.target)),
        ):
            counter[key] -= 1
            if not counter[key]:
                del counter[key]
        self._pair_refused.discard((circuit.dialler, circuit.target))

    def _end_both(self, circuit: Circuit, code: str, reason: str) -> list[Close]:
        self._remove(circuit)
        self.counters[f"closed: {code}"] += 1
        return [Close(circuit.a, code, reason), Close(circuit.b, code, reason)]

    def circuit_of(self, end: End) -> Circuit | None:
        found = self._ends.get(end)
        return None if found is None else self.circuits.get(found[0])

    # ------------------------------------------------------------------ forwarding

    def on_data(self, end: End, size: int) -> Forward | list[Close]:
        """``size`` bytes arrived on ``end``: where to forward them, or the closes to send
        (the stream is unknown, the sender went past its credit, or the circuit its bytes)."""
        found = self._ends.get(end)
        if found is None:
            return [Close(end, "protocol", "no such stream")]
        circuit = self.circuits[found[0]]
        side = found[1]
        if not 0 < size <= MAX_STREAM_CHUNK or size > circuit.allowance[side]:
            self._abuse(circuit.peer(side), ABUSE_DATA)
            return self._end_both(circuit, "protocol", ABUSE_DATA)
        if circuit.bytes + size > self.config.circuit_bytes:
            return self._end_both(circuit, "limit", "circuit byte limit")
        circuit.allowance[side] -= size
        circuit.bytes += size
        self.peak_outstanding = max(self.peak_outstanding, circuit.outstanding(side))
        self.counters["bytes"] += size
        return Forward(circuit.other(side))

    def on_credit(self, end: End, credit: int) -> Forward | list[Close]:
        """The end at ``end`` granted ``credit`` to the other: forward it, or close (a credit
        that would let the other end have more than one window outstanding)."""
        found = self._ends.get(end)
        if found is None:
            return [Close(end, "protocol", "no such stream")]
        circuit = self.circuits[found[0]]
        other = "b" if found[1] == "a" else "a"  # the direction the credit opens
        if (
            not 0 < credit <= MAX_STREAM_CREDIT
            or circuit.allowance[other] + credit > CIRCUIT_WINDOW
        ):
            self._abuse(circuit.peer(found[1]), ABUSE_CREDIT)
            return self._end_both(circuit, "protocol", ABUSE_CREDIT)
        circuit.allowance[other] += credit
        return Forward(circuit.other(found[1]))

    def on_close(self, end: End, code: str, reason: str) -> list[Close]:
        """The stream at ``end`` was closed by its peer: close the other end with the same
        code and reason."""
        found = self._ends.get(end)
        if found is None:
            return []
        circuit = self.circuits[found[0]]
        self._remove(circuit)
        self.counters[f"closed: {code}"] += 1
        return [Close(circuit.other(found[1]), code, reason)]

    # ------------------------------------------------------------------ time and links

    def tick(self, now: float) -> Expired:
        """End reservations past their expiry and circuits past ``circuit_seconds``."""
        gone = [r for r in self.reservations.values() if r.expires <= now]
        for reservation in gone:
            self._drop_reservation(reservation)
        closes: list[Close] = []
        horizon = now - self.config.circuit_seconds
        for circuit in [c for c in self.circuits.values() if c.opened <= horizon]:
            closes += self._end_both(circuit, "limit", "circuit time limit")
        return Expired(gone, closes)

    def release(self, link: Hashable) -> list[Close]:
        """``link`` closed: its reservations end, and every circuit with an end on it is
        closed at its other end ("relay link closed")."""
        for reservation in [r for r in self.reservations.values() if r.link == link]:
            self._drop_reservation(reservation)
        closes = []
        for circuit in [c for c in self.circuits.values() if link in (c.a.link, c.b.link)]:
            self._remove(circuit)
            self.counters["closed: link"] += 1
            for end in (circuit.a, circuit.b):
                if end.link != link:
                    closes.append(Close(end, "closed", "relay link closed"))
        return closes

    def close_circuit(self, end: End, code: str, reason: str) -> list[Close]:
        """End the circuit through ``end`` from here (a refused incoming, a stream error)."""
        circuit = self.circuit_of(end)
        return [] if circuit is None else self._end_both(circuit, code, reason)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do."""
        times = [r.expires for r in self.reservations.values()]
        times += [c.opened + self.config.circuit_seconds for c in self.circuits.values()]
        return min(times, default=None)

    @property
    def prefix_counts(self) -> dict[str, int]:
        return dict(self._per_prefix)

    def circuits_to(self, peer: Hashable) -> int:
        return self._to_peer[peer]

    def circuits_from(self, peer: Hashable) -> int:
        return self._from_peer[peer]
