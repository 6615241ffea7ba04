"""The NAT and relay model (:mod:`qiz.sim.nat`): hand-checkable populations first, then the
10,000-node default mix against bounds derived from the mix, then properties over random mixes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nat_sim
from qiz.sim.nat import (
    FIRST,
    NEVER,
    OUTCOMES,
    PRESERVING,
    PUBLIC,
    PUNCH_PAUSE,
    PUNCH_TIMEOUT,
    PUNCHED,
    RELAYED,
    SYMMETRIC,
    NatReport,
    NatSimConfig,
    NatSimError,
    link_times,
    outcome,
    populate,
    relay_load,
    reserve,
    rtt,
    simulate,
    verdict_public,
)

# AutoNAT always right, every node dials every other: nothing left to chance but what a test sets.
EXACT = {"autonat_false_fail": 0.0, "autonat_false_reach": 0.0, "links_per_node": 1000}


def small(kinds: list[int], **overrides: object) -> NatReport:
    config = NatSimConfig(**{"nodes": len(kinds), "pairs": 2000, **EXACT, **overrides})
    return simulate(config, seed=7, kinds=kinds)


def test_all_reachable_links_directly_on_the_first_try() -> None:
    report = small([PUBLIC] * 30)
    assert report.exact["direct first try"] == 1.0
    assert report.sampled["direct first try"] == 1.0
    assert report.relay_load["relayed links"] == 0
    assert report.reservations["nodes reserving"] == 0


def test_two_symmetric_nats_stay_relayed_two_port_preserving_ones_punch() -> None:
    report = small([PUBLIC, SYMMETRIC, SYMMETRIC, PRESERVING, PRESERVING])
    assert report.by_class["symmetric -> symmetric"]["relayed only"] == 1.0
    assert report.by_class["port-preserving -> symmetric"]["relayed only"] == 1.0
    assert report.by_class["port-preserving -> port-preserving"]["direct after punching"] == 1.0
    # a symmetric NAT dialling a public node is an ordinary dial; the reverse punches (B dials A)
    assert report.by_class["symmetric -> public"]["direct first try"] == 1.0
    assert report.by_class["public -> symmetric"]["direct after punching"] == 1.0
    assert report.exact["never"] == 0.0


def test_a_port_preserving_nat_that_lost_its_port_punches_like_a_symmetric_one() -> None:
    kinds = [PUBLIC, PRESERVING, PRESERVING]
    assert small(kinds, preservation_fails=1.0).by_class["port-preserving -> port-preserving"][
        "relayed only"
    ] == pytest.approx(1.0)
    lossy = small(kinds, punch_failure=0.5, punch_attempts=3)
    assert lossy.by_class["port-preserving -> port-preserving"][
        "direct after punching"
    ] == pytest.approx(1 - 0.5**3)


def test_outcome_rules_pair_by_pair() -> None:
    a = np.array([SYMMETRIC, PUBLIC, PRESERVING, PRESERVING, PRESERVING, SYMMETRIC])
    b = np.array([PUBLIC, SYMMETRIC, PRESERVING, PRESERVING, PRESERVING, PRESERVING])
    direct = np.array([True, False, False, False, True, False])  # B's AutoNAT verdict
    relayed = np.array([False, True, True, False, False, True])  # B holds a reservation
    got = outcome(
        a,
        np.zeros(6, bool),
        b,
        b_direct=direct,
        b_fails=np.zeros(6, bool),
        b_relayed=relayed,
        punch_ok=np.ones(6, bool),
    )
    # B without a relay, and B wrongly publishing an address behind its NAT, are unreachable
    assert got.tolist() == [FIRST, PUNCHED, PUNCHED, NEVER, NEVER, RELAYED]


def test_a_full_relay_refuses_and_the_node_tries_the_next() -> None:
    config = NatSimConfig(nodes=5, reserve_on=1, max_reservations=1, pairs=100, **EXACT)
    pop = populate(config, seed=3, kinds=[PUBLIC, PUBLIC] + [PRESERVING] * 3)
    held = np.bincount(pop.relays[pop.relays >= 0], minlength=5)
    assert held.tolist()[:2] == [1, 1]  # each relay took one reservation, never more
    assert (~pop.has_relay[2:]).sum() == 1  # the third node found both full
    # it asked both; whoever came second found its first choice full at most once
    assert pop.reservation_refusals.keys() == {"too many reservations"}
    assert 2 <= pop.reservation_refusals["too many reservations"] <= 3
    report = simulate(config, seed=3, kinds=[PUBLIC, PUBLIC] + [PRESERVING] * 3)
    assert report.reservations["nodes without a relay"] == 1
    assert report.reservations["refused"] == sum(pop.reservation_refusals.values())
    assert report.exact["never"] > 0  # nobody can reach the node without a relay


def test_one_home_network_gets_max_reservations_per_prefix_from_a_relay() -> None:
    config = NatSimConfig(nodes=4, reserve_on=1, max_reservations_per_prefix=2, **EXACT)
    pop = populate(config, seed=4, kinds=[PUBLIC] + [PRESERVING] * 3)
    # the same three private nodes, all in one /24 this time, against the live RelayCore
    relays, refusals = reserve(
        config,
        pop.xy,
        pop.score,
        wants=~pop.publishes_direct,
        serves=pop.serves_relay,
        out_links=pop.out_links,
        prefix=["192.0.2.0/24"] * 4,
        rng=np.random.default_rng(0),
    )
    assert (relays[1:, 0] >= 0).sum() == 2
    assert refusals == {"too many reservations from this network": 1}


def test_a_relay_at_max_circuits_refuses_the_rest() -> None:
    kinds = [PUBLIC] + [SYMMETRIC] * 10
    config = NatSimConfig(nodes=11, max_circuits=2, pairs=100, **EXACT)
    pop = populate(config, seed=1, kinds=kinds)
    load = relay_load(config, pop, seed=1)
    assert load["relayed links"] == 10 * 9  # every symmetric pair, each way
    assert load["circuits max"] == 2
    assert load["circuits refused"] == 90 - 2
    assert load["relays at max_circuits"] == 1


def test_per_peer_circuit_limit_spreads_circuits_over_the_second_relay() -> None:
    kinds = [PUBLIC, PUBLIC] + [SYMMETRIC] * 10
    # room for all 90 circuits on one relay: only the per-peer limits decide here
    config = NatSimConfig(nodes=12, max_circuits=100, max_circuits_per_peer=8, pairs=100, **EXACT)
    pop = populate(config, seed=2, kinds=kinds)
    assert (pop.relays[2:] >= 0).all()  # every symmetric node holds both relays
    load = relay_load(config, pop, seed=2)
    # 9 diallers per target: 8 on its first relay, the ninth on its second
    assert load["relayed links"] == 10 * 9
    assert load["circuits refused"] == 0
    # 4 per target and per dialler on each of 2 relays: at most 8 of each one's 9 links fit
    tight = relay_load(NatSimConfig(**{**config.__dict__, "max_circuits_per_peer": 4}), pop, seed=2)
    assert tight["circuits refused"] >= 10


def test_time_to_a_direct_link_adds_up_the_round_trips() -> None:
    config = NatSimConfig(nodes=3, pairs=10, **EXACT)
    pop = populate(config, seed=5, kinds=[PUBLIC, PRESERVING, PRESERVING])
    a, b = np.array([1, 1, 2]), np.array([2, 2, 0])
    result = np.array([PUNCHED, PUNCHED, FIRST])
    first, direct = link_times(config, pop, a, b, result=result, attempt=np.array([1, 3, 1]))
    ab, ar, rb = (
        rtt(config, pop.xy, np.array([x]), np.array([y]))[0] for x, y in ((1, 2), (1, 0), (0, 2))
    )
    relayed_link = 2 * ar + 2 * (ar + rb)
    assert first[0] == pytest.approx(relayed_link)
    assert direct[0] == pytest.approx(relayed_link + 1.5 * (ar + rb) + 2 * ab)
    assert direct[1] - direct[0] == pytest.approx(2 * (PUNCH_TIMEOUT + PUNCH_PAUSE))
    assert first[2] == direct[2] == pytest.approx(2 * rtt(config, pop.xy, b[2:], a[2:])[0])


def test_autonat_verdicts_live_rule_and_majority() -> None:
    reached = np.array([1, 0, 0, 0, 2])
    answers = np.array([3, 3, 1, 0, 3])
    # the live NatState: a vote of the answers (a tie goes to public); no answer at all is
    # unknown, which publishes its address like public
    assert verdict_public("spec", reached, answers).tolist() == [False, False, False, True, True]
    assert verdict_public("majority", reached, answers).tolist() == [
        False,
        False,
        False,
        False,
        True,
    ]


def test_a_mix_that_does_not_add_up_is_refused_in_one_line() -> None:
    with pytest.raises(NatSimError, match="adding up to 1"):
        NatSimConfig(public=0.5, preserving=0.5, symmetric=0.5)
    with pytest.raises(NatSimError, match="punch_failure is a probability"):
        NatSimConfig(punch_failure=1.5)
    with pytest.raises(NatSimError, match="links_per_node"):
        NatSimConfig(links_per_node=1)
    with pytest.raises(NatSimError, match="kinds given"):
        simulate(NatSimConfig(nodes=4), kinds=[PUBLIC] * 3)


def test_a_seed_gives_the_same_run_and_another_seed_another() -> None:
    config = NatSimConfig(nodes=500, pairs=5000, preservation_fails=0.1, punch_failure=0.2)
    one, again, other = simulate(config, 11), simulate(config, 11), simulate(config, 12)
    assert repr(one) == repr(again)
    assert repr(one) != repr(other)


# ---------------------------------------------------------------------- 10,000 nodes


@pytest.fixture(scope="module")
def default() -> NatReport:
    return simulate(NatSimConfig(), seed=1)


def test_default_mix_fractions_follow_from_the_mix(default: NatReport) -> None:
    c = default.config
    assert default.counts == {
        "public": 3000,
        "port-preserving": 5000,
        "symmetric": 2000,
        "port preservation failed": 0,
    }
    private = c.preserving + c.symmetric
    # AutoNAT can misjudge a few nodes each way: allow that many times 3 answers' error rate
    slack = 3 * c.autonat_false_reach + c.autonat_false_fail**3 + 1e-3
    assert default.exact["direct first try"] == pytest.approx(c.public, abs=slack)
    # a private target is reached directly after punching from any public dialler, and from a
    # port-preserving one when it is port-preserving too
    punched = c.public * private + c.preserving**2
    assert default.exact["direct after punching"] == pytest.approx(punched, abs=slack)
    assert default.exact["relayed only"] == pytest.approx(private**2 - c.preserving**2, abs=slack)
    assert default.exact["never"] <= slack
    assert default.direct >= c.public - slack
    assert default.punch_success_natted == pytest.approx(c.preserving**2 / private**2, abs=0.01)


def test_default_mix_sampled_pairs_agree_with_the_exact_shares(default: NatReport) -> None:
    n = default.sampled_pairs
    for name in OUTCOMES:
        p = default.exact[name]
        sigma = math.sqrt(max(p * (1 - p), 1e-6) / n)
        assert abs(default.sampled[name] - p) <= 5 * sigma + 1e-4, name


def test_default_mix_relays_stay_within_their_limits(default: NatReport) -> None:
    c = default.config
    assert default.reservations["per relay max"] <= c.max_reservations
    assert default.reservations["nodes without a relay"] == 0
    load = default.relay_load
    assert load["circuits max"] <= c.max_circuits
    assert load["relays"] == pytest.approx(3000, abs=5)
    # circuits are relayed links spread over the relays (what was not refused)
    assert load["circuits mean"] * load["relays"] == pytest.approx(
        load["relayed links"] - load["circuits refused"]
    )
    assert load["refused share"] < 0.01


def test_default_mix_autonat_majority_trades_false_public_for_false_private(
    default: NatReport,
) -> None:
    a = default.autonat
    assert a["spec accuracy"] > 0.99 and a["majority accuracy"] > 0.99
    assert (
        a["majority private nodes publishing an address"]
        <= a["spec private nodes publishing an address"]
    )
    assert (
        a["spec public nodes hiding behind relays"]
        <= a["majority public nodes hiding behind relays"]
    )


def test_default_mix_times_are_ordered(default: NatReport) -> None:
    t = default.times
    assert 0 < t["direct first try p50"] < t["first link p95"]
    assert (
        t["direct first try p50"] < t["direct after punching p50"] <= t["direct after punching p95"]
    )


# ---------------------------------------------------------------------- properties


@st.composite
def mixes(draw: st.DrawFn) -> NatSimConfig:
    cut = sorted(draw(st.lists(st.integers(0, 100), min_size=2, max_size=2)))
    return NatSimConfig(
        nodes=draw(st.integers(2, 120)),
        public=cut[0] / 100,
        preserving=(cut[1] - cut[0]) / 100,
        symmetric=(100 - cut[1]) / 100,
        preservation_fails=draw(st.sampled_from([0.0, 0.2, 1.0])),
        punch_failure=draw(st.sampled_from([0.0, 0.3, 1.0])),
        autonat_false_fail=draw(st.sampled_from([0.0, 0.1])),
        autonat_false_reach=draw(st.sampled_from([0.0, 0.1])),
        autonat_rule=draw(st.sampled_from(["spec", "majority"])),
        reserve_on=draw(st.integers(1, 3)),
        max_reservations=draw(st.integers(1, 10)),
        max_circuits=draw(st.integers(1, 10)),
        links_per_node=draw(st.integers(2, 30)),
        pairs=500,
    )


@settings(max_examples=40, deadline=None)
@given(config=mixes(), seed=st.integers(0, 2**16))
def test_any_mix_linkable_at_least_direct_and_shares_sum_to_one(
    config: NatSimConfig, seed: int
) -> None:
    report = simulate(config, seed)
    for shares in (report.exact, report.sampled, *report.by_class.values()):
        assert sum(shares.values()) == pytest.approx(1.0)
        assert all(0.0 <= v <= 1.0 + 1e-12 for v in shares.values())
    assert report.linkable >= report.direct - 1e-12
    assert report.linkable >= report.exact["relayed only"] - 1e-12
    assert 0.0 <= report.punch_success_natted <= 1.0
    assert report.reservations["per relay max"] <= config.max_reservations
    assert report.relay_load["circuits max"] <= config.max_circuits
    if config.autonat_false_fail == 0 and config.autonat_false_reach == 0:
        # every public node is dialled directly, every other one never is at first try
        public = report.counts["public"] / config.nodes
        assert report.exact["direct first try"] == pytest.approx(public)


def test_the_benchmark_prints_a_json_line_per_figure_and_a_table_by_kind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures, reports = nat_sim.run(quick=True)
    default = next(iter(reports.values()))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["name"] for row in lines] == [f.name for f in figures]
    assert {row["unit"] for row in lines} >= {"%", "circuits", "ms"}
    table = nat_sim.by_class_table(default)
    assert table.count("\n") == 1 + 9  # header, rule, one row per (dialler, target) kind
    assert "symmetric -> symmetric" in table
    assert nat_sim.summary_table(reports).count("\n") == 1 + len(reports)
