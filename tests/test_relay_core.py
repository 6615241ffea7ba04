"""The relay's sans-IO core (qiz.qmp.relay, docs/nat.md §3, §4, §6): refusals with their
reasons, limits, credit enforcement, expiry, release; and a state machine that drives it with
any sequence of events and checks the bounds always hold."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from qiz.qmp.circuit import CIRCUIT_WINDOW, MAX_STREAM_CHUNK
from qiz.qmp.relay import (
    Close,
    End,
    Forward,
    Refusal,
    RelayConfig,
    RelayConfigError,
    RelayCore,
    Reservation,
    network_prefix,
)

# ------------------------------------------------------------------ config


def test_config_defaults_are_the_documented_ones() -> None:
    config = RelayConfig()
    assert (config.max_reservations, config.max_reservations_per_prefix) == (128, 16)
    assert (config.max_circuits, config.max_circuits_per_peer) == (64, 8)
    assert config.reservation_ttl == 3600.0 and config.circuit_seconds == 3600.0
    assert config.circuit_bytes == 256 * 1024 * 1024 and config.enabled


def test_config_from_table() -> None:
    config = RelayConfig.from_table({"enabled": False, "max_circuits": 3, "reservation_ttl": 60})
    assert not config.enabled and config.max_circuits == 3 and config.reservation_ttl == 60.0
    with pytest.raises(RelayConfigError, match="no key 'max_circuit'"):  # a typo is not silent
        RelayConfig.from_table({"max_circuit": 3})


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"max_circuits": 0}, "relay.max_circuits"),
        ({"max_circuits": 2.5}, "relay.max_circuits"),
        ({"max_reservations": True}, "relay.max_reservations"),
        ({"circuit_seconds": "1h"}, "relay.circuit_seconds"),
        ({"enabled": "yes"}, "relay.enabled"),
        ({"circuit_bytes": -1}, "relay.circuit_bytes"),
    ],
)
def test_bad_config_names_the_key_in_one_line(table: dict, key: str) -> None:
    with pytest.raises(RelayConfigError) as caught:
        RelayConfig.from_table(table)
    assert key in str(caught.value) and "\n" not in str(caught.value)


def test_a_table_must_be_a_table() -> None:
    with pytest.raises(RelayConfigError, match=r"\[relay\]"):
        RelayConfig.from_table([1])


def test_network_prefixes() -> None:
    assert network_prefix("192.0.2.7:4000") == "192.0.2.0/24"
    assert network_prefix("[2001:db8:1:2::1]:4000") == "2001:db8:1::/48"
    assert network_prefix("relay:qizn1abc") == "?relay:qizn1abc"


# ------------------------------------------------------------------ refusals


def test_reservation_refusals_carry_the_documented_reasons() -> None:
    core = RelayCore(RelayConfig(max_reservations=3, max_reservations_per_prefix=2))
    assert isinstance(core.reserve("p1", "L1", "net-a", 0), Reservation)
    assert isinstance(core.reserve("p2", "L2", "net-a", 0), Reservation)
    assert core.reserve("p3", "L3", "net-a", 0) == Refusal(
        "too many reservations from this network"
    )
    assert isinstance(core.reserve("p3", "L3", "net-b", 0), Reservation)
    assert core.reserve("p4", "L4", "net-c", 0) == Refusal("too many reservations")
    # a renewal is no new reservation, and moves to the new link
    renewed = core.reserve("p1", "L9", "net-a", 10)
    assert isinstance(renewed, Reservation) and renewed.link == "L9"
    assert len(core.reservations) == 3
    disabled = RelayCore(RelayConfig(enabled=False))
    assert disabled.reserve("p", "L", "n", 0) == Refusal("relay disabled")


def test_circuit_refusals() -> None:
    core = RelayCore(RelayConfig(max_circuits=3, max_circuits_per_peer=2))
    assert core.check_connect("a", "b", 0) == Refusal("no reservation")
    core.reserve("b", "LB", "n", 0)
    core.reserve("c", "LC", "n", 0)
    sid = iter(range(100))
    for _ in range(2):
        assert not isinstance(
            core.connect("a", End("LA", next(sid)), "b", End("LB", next(sid)), 0), Refusal
        )
    assert core.check_connect("a", "b", 0) == Refusal("too many circuits to this peer")
    assert core.check_connect("a", "c", 0) == Refusal("too many circuits from this peer")
    assert not isinstance(core.connect("x", End("LX", 1), "c", End("LC", 2), 0), Refusal)
    assert core.check_connect("y", "c", 0) == Refusal("too many circuits")
    assert core.check_connect("b", "b", 0) == Refusal("a circuit to oneself")


def test_credit_is_enforced_per_direction() -> None:
    core = RelayCore(RelayConfig())
    core.reserve("b", "LB", "n", 0)
    circuit = core.connect("a", End("LA", 0), "b", End("LB", 1), 0)
    assert not isinstance(circuit, Refusal)
    for _ in range(CIRCUIT_WINDOW // MAX_STREAM_CHUNK):
        assert core.on_data(End("LA", 0), MAX_STREAM_CHUNK) == Forward(End("LB", 1))
    # B credits half: A may send half again, not one byte more
    assert core.on_credit(End("LB", 1), CIRCUIT_WINDOW // 2) == Forward(End("LA", 0))
    assert core.on_data(End("LA", 0), MAX_STREAM_CHUNK) == Forward(End("LB", 1))
    assert core.on_data(End("LA", 0), MAX_STREAM_CHUNK) == Forward(End("LB", 1))
    closes = core.on_data(End("LA", 0), 1)
    assert closes == [
        Close(End("LA", 0), "protocol", "stream data beyond the credit granted"),
        Close(End("LB", 1), "protocol", "stream data beyond the credit granted"),
    ]
    assert not core.circuits


def test_credit_beyond_the_window_closes_the_circuit() -> None:
    core = RelayCore(RelayConfig())
    core.reserve("b", "LB", "n", 0)
    core.connect("a", End("LA", 0), "b", End("LB", 1), 0)
    closes = core.on_credit(End("LB", 1), 1)  # nothing was sent: A already has a window
    assert isinstance(closes, list) and {c.code for c in closes} == {"protocol"}


def test_byte_and_time_limits_close_both_ends() -> None:
    core = RelayCore(RelayConfig(circuit_bytes=1000, circuit_seconds=60))
    core.reserve("b", "LB", "n", 0)
    core.connect("a", End("LA", 0), "b", End("LB", 1), 0)
    assert isinstance(core.on_data(End("LA", 0), 600), Forward)
    assert isinstance(core.on_data(End("LB", 1), 400), Forward)
    closes = core.on_data(End("LA", 0), 1)
    assert closes == [
        Close(End("LA", 0), "limit", "circuit byte limit"),
        Close(End("LB", 1), "limit", "circuit byte limit"),
    ]
    core.connect("a", End("LA", 2), "b", End("LB", 3), 10)
    assert core.tick(69).closes == []
    expired = core.tick(70)
    assert {c.reason for c in expired.closes} == {"circuit time limit"}
    assert not core.circuits


def test_reservations_expire_and_release_frees_a_link() -> None:
    core = RelayCore(RelayConfig(reservation_ttl=100))
    core.reserve("b", "LB", "n", 0)
    core.reserve("c", "LC", "n", 0)
    core.connect("a", End("LA", 0), "b", End("LB", 1), 0)
    core.connect("c", End("LC", 2), "b", End("LB", 3), 0)
    assert core.release("LB") == [
        Close(End("LA", 0), "closed", "relay link closed"),
        Close(End("LC", 2), "closed", "relay link closed"),
    ]
    assert not core.circuits and list(core.reservations) == ["c"]
    assert [r.peer for r in core.tick(100).reservations] == ["c"]
    assert core.check_connect("a", "c", 100) == Refusal("no reservation")


def test_a_close_is_forwarded_once() -> None:
    core = RelayCore(RelayConfig())
    core.reserve("b", "LB", "n", 0)
    core.connect("a", End("LA", 0), "b", End("LB", 1), 0)
    assert core.on_close(End("LA", 0), "normal", "bye") == [Close(End("LB", 1), "normal", "bye")]
    assert core.on_close(End("LB", 1), "normal", "bye") == []
    assert core.on_data(End("LB", 1), 5) == [Close(End("LB", 1), "protocol", "no such stream")]


# ------------------------------------------------------------------ state machine

PEERS = [f"p{i}" for i in range(6)]
LINKS = [f"L{i}" for i in range(6)]
PREFIXES = ["net-a", "net-b"]


class Relay(RuleBasedStateMachine):
    """Whatever peers do, in any order: the relay holds no more than its limits, forwards no
    byte beyond the credit granted (never more than a window outstanding per direction), and
    releasing a link leaves nothing bound to it."""

    def __init__(self) -> None:
        super().__init__()
        self.config = RelayConfig(
            max_reservations=4,
            max_reservations_per_prefix=3,
            reservation_ttl=50,
            max_circuits=5,
            max_circuits_per_peer=2,
            circuit_bytes=2 * CIRCUIT_WINDOW,
            circuit_seconds=40,
        )
        self.core = RelayCore(self.config)
        self.now = 0.0
        self.sid = 0
        self.ends: list[End] = []
        # what each end still may receive per what its peer granted, tracked independently
        self.outstanding: dict[End, int] = {}

    @rule(
        peer=st.sampled_from(PEERS), link=st.sampled_from(LINKS), prefix=st.sampled_from(PREFIXES)
    )
    def reserve(self, peer: str, link: str, prefix: str) -> None:
        self.core.reserve(peer, link, prefix, self.now)

    @rule(dialler=st.sampled_from(PEERS), to=st.sampled_from(PEERS), link=st.sampled_from(LINKS))
    def connect(self, dialler: str, to: str, link: str) -> None:
        target = to
        self.sid += 2
        checked = self.core.check_connect(dialler, target, self.now)
        if isinstance(checked, Refusal):
            return
        a, b = End(link, self.sid), End(checked.link, self.sid + 1)
        circuit = self.core.connect(dialler, a, target, b, self.now)
        if not isinstance(circuit, Refusal):
            self.ends += [a, b]
            self.outstanding[a] = self.outstanding[b] = 0

    @rule(data=st.data(), size=st.integers(-1, MAX_STREAM_CHUNK + 1))
    def data(self, data: st.DataObject, size: int) -> None:
        if not self.ends:
            return
        end = data.draw(st.sampled_from(self.ends))
        before = self.core.circuit_of(end)
        verdict = self.core.on_data(end, size)
        if isinstance(verdict, Forward):
            assert before is not None
            self.outstanding[end] += size
            assert self.outstanding[end] <= CIRCUIT_WINDOW
            assert 0 < size <= MAX_STREAM_CHUNK

    @rule(data=st.data(), credit=st.integers(-1, CIRCUIT_WINDOW + 1))
    def credit(self, data: st.DataObject, credit: int) -> None:
        if not self.ends:
            return
        end = data.draw(st.sampled_from(self.ends))
        circuit = self.core.circuit_of(end)
        verdict = self.core.on_credit(end, credit)
        if isinstance(verdict, Forward):
            assert circuit is not None
            sender = circuit.other("a" if circuit.a == end else "b")
            self.outstanding[sender] -= credit
            assert self.outstanding[sender] >= 0  # never credits more than was sent

    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        if self.ends:
            end = data.draw(st.sampled_from(self.ends))
            self.core.on_close(end, "normal", "")

    @rule(dt=st.floats(0, 30))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.core.tick(self.now)

    @rule(link=st.sampled_from(LINKS))
    def release(self, link: str) -> None:
        self.core.release(link)
        assert all(r.link != link for r in self.core.reservations.values())
        assert all(link not in (c.a.link, c.b.link) for c in self.core.circuits.values())

    @invariant()
    def within_limits(self) -> None:
        core, config = self.core, self.config
        assert len(core.reservations) <= config.max_reservations
        assert all(n <= config.max_reservations_per_prefix for n in core.prefix_counts.values())
        assert len(core.circuits) <= config.max_circuits
        for peer in PEERS:
            assert core.circuits_to(peer) <= config.max_circuits_per_peer
            assert core.circuits_from(peer) <= config.max_circuits_per_peer
        for circuit in core.circuits.values():
            assert circuit.bytes <= config.circuit_bytes
            for side in "ab":
                assert 0 <= circuit.outstanding(side) <= CIRCUIT_WINDOW
        assert core.peak_outstanding <= CIRCUIT_WINDOW

    def teardown(self) -> None:
        for link in LINKS:
            self.core.release(link)
        assert not self.core.circuits and not self.core.reservations
        assert not self.core.prefix_counts
        for peer in PEERS:
            assert core_empty(self.core, peer)


def core_empty(core: RelayCore, peer: str) -> bool:
    return core.circuits_to(peer) == 0 and core.circuits_from(peer) == 0


TestRelay = Relay.TestCase
TestRelay.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
