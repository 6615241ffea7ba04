"""DHT tail latency under attack: the RTT estimator (qiz/trust/latency.py), the lookup state
machine with adaptive timeouts and hedging (qiz/resolve/lookup.py), and a small simulation
where a quarter of the nodes are silent.

Every time here is the caller's or the simulator's virtual clock: counts, rounds and simulated
seconds are asserted, never wall time.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qiz.resolve.keyspace import distance
from qiz.resolve.lookup import Lookup, State
from qiz.resolve.records import RecordKind
from qiz.resolve.routing import RoutingTable
from qiz.sim.network import Behaviour, NetConfig
from qiz.sim.scenarios import Targets, build, resolve_many
from qiz.trust.latency import GRANULARITY, LatencyTable

PEER = b"p" * 32
rtts = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)
events = st.lists(st.one_of(rtts, st.none()), max_size=60)  # None: a timeout


# ------------------------------------------------------------------ the RTT estimator


@given(events, st.floats(0.01, 0.5), st.floats(0.5, 5.0))
def test_timeouts_always_stay_within_floor_and_ceiling(
    history: list[float | None], floor: float, ceiling: float
) -> None:
    table = LatencyTable(floor=floor, ceiling=ceiling)
    stranger = b"s" * 32
    for now, event in enumerate(history):
        if event is None:
            table.timed_out(PEER, float(now))
        else:
            table.observe(PEER, event)
        for peer in (PEER, stranger):
            assert floor <= table.timeout(peer) <= ceiling
            assert floor / 4 <= table.expected(peer) <= table.timeout(peer)


@given(st.lists(rtts, max_size=20), st.floats(0.05, 1.0))
def test_the_estimate_converges_to_a_stable_rtt(start: list[float], rtt: float) -> None:
    table = LatencyTable(floor=0.01, ceiling=30.0)
    for sample in start:
        table.observe(PEER, sample)
    for _ in range(300):
        table.observe(PEER, rtt)
    estimate = table.get(PEER)
    assert estimate is not None
    assert abs(estimate.srtt - rtt) < 1e-3 * max(1.0, max(start, default=0.0))
    # a steady peer: its timeout sits just above its RTT (the granularity), not at a default
    assert table.timeout(PEER) <= rtt + GRANULARITY + 0.01


@given(st.floats(0.02, 0.4), st.integers(1, 8))
def test_timeouts_back_off_and_a_new_sample_resets_them(rtt: float, timeouts: int) -> None:
    table = LatencyTable(floor=0.05, ceiling=2.0, suspect_for=60.0)
    for _ in range(50):
        table.observe(PEER, rtt)
    base = table.timeout(PEER)
    previous = base
    for n in range(timeouts):
        table.timed_out(PEER, now=100.0 + n)
        current = table.timeout(PEER)
        assert current == min(2.0, 2 * previous)
        previous = current
    assert table.suspect(PEER, now=110.0)
    assert not table.suspect(PEER, now=100.0 + timeouts + 61.0)  # suspicion wears off
    table.observe(PEER, rtt)
    assert table.timeout(PEER) <= base + 1e-9
    assert not table.suspect(PEER, now=110.0)  # it answered


def test_a_peer_never_measured_gets_the_network_estimate_or_the_default() -> None:
    table = LatencyTable(floor=0.2, ceiling=2.0, initial=1.0)
    assert table.timeout(PEER) == 1.0  # nothing measured yet: RFC 6298's 1 s
    for i in range(40):
        table.observe(bytes([i]) * 32, 0.05)
    assert table.timeout(PEER) == 0.2  # the network answers in 50 ms: the floor
    # the median peer after one sample each: 50 ms and RFC 6298's first variance (half)
    assert table.expected(PEER) == pytest.approx(0.1)
    for i in range(40):
        table.observe(bytes([i]) * 32, 0.05)
    assert table.expected(PEER) < 0.09  # measured twice: the variance is a measurement now


def test_slow_peers_do_not_teach_a_node_to_wait_longer_for_everyone() -> None:
    """Peers that answer 20 times later than the rest (up to just under half of them) leave
    the estimate for an unmeasured peer where the honest network puts it; each slow peer is
    asked last and hedged past at the network's timeout, not at its own expected RTT."""
    honest = LatencyTable(floor=0.2, ceiling=2.0)
    mixed = LatencyTable(floor=0.2, ceiling=2.0)
    slow_ids = {bytes([i]) * 32 for i in range(100) if i % 5 < 2}  # 40 of 100
    for _ in range(5):
        for i in range(100):
            peer = bytes([i]) * 32
            if peer in slow_ids:
                mixed.observe(peer, 1.0)
            else:
                honest.observe(peer, 0.05)
                mixed.observe(peer, 0.05)
    assert mixed.timeout(PEER) == honest.timeout(PEER) == 0.2
    assert mixed.expected(PEER) == pytest.approx(honest.expected(PEER))
    slow, fast = next(iter(slow_ids)), bytes([2]) * 32
    assert mixed.slow(slow) and mixed.ask_last(slow, now=0.0)
    assert not mixed.slow(fast) and not mixed.ask_last(fast, now=0.0)
    assert mixed.expected(slow) <= 0.2 < mixed.timeout(slow)  # hedged early, not given up on


def test_a_fast_network_makes_no_ordinary_peer_slow_and_forgotten_peers_leave_no_estimate() -> None:
    """Slowness is judged against the network's timeout as callers get it (at least the
    floor): beside many 1 ms peers (a LAN, or fast sybils) a 20 ms peer is not put last. When
    every measured peer was forgotten, an unmeasured peer gets ``initial`` again, not a stale
    or zero estimate."""
    table = LatencyTable(floor=0.2, ceiling=2.0, initial=1.0, capacity=40)
    for i in range(30):
        table.observe(bytes([i]) * 32, 0.001)
    wan = b"w" * 32
    table.observe(wan, 0.02)
    assert not table.slow(wan) and not table.ask_last(wan, now=0.0)
    for i in range(100):  # timeouts of never-measured peers push every measured one out
        table.timed_out(bytes([100 + i % 100]) * 32, now=float(i))
    assert table.timeout(PEER) == 1.0 and table.expected(PEER) == 0.5


def test_the_table_is_bounded() -> None:
    table = LatencyTable(capacity=8)
    for i in range(100):
        table.observe(i.to_bytes(32, "big"), 0.05)
    assert len(table) == 8


# ------------------------------------------------------------------ the lookup state machine


def world(n: int, seed: int) -> dict[bytes, RoutingTable]:
    rnd = random.Random(seed)
    ids = [hashlib.sha3_256(b"latency world %d %d" % (seed, i)).digest() for i in range(n)]
    tables = {}
    for me in ids:
        table = RoutingTable(me, k=8, enforce_prefix_limits=False)
        for j in rnd.sample(range(n), n):
            table.add(ids[j], f"10.0.{j // 250}.{j % 250 + 1}:1", 0.0)
        tables[me] = table
    return tables


def drive(
    lookup: Lookup,
    tables: dict[bytes, RoutingTable],
    silent: set[bytes],
    holders: set[bytes],
    delays: random.Random,
    *,
    hard_timeout: float = 2.0,
    hedge_budget: int,
) -> tuple[float, int]:
    """Run ``lookup`` on a virtual clock: honest nodes answer after 40-120 ms (holders with
    the record), silent ones only fail at ``hard_timeout``. Checks the slot and budget
    invariants after every step; returns (virtual time at the end, steps)."""
    record = object()
    queue: list[tuple[float, int, str, bytes]] = []
    seq = 0
    now = 0.0
    steps = 0
    while not lookup.done:
        for contact in lookup.next_requests(now):
            seq += 1
            if contact.node_id in silent:
                heapq.heappush(queue, (now + hard_timeout, seq, "fail", contact.node_id))
            else:
                heapq.heappush(
                    queue, (now + delays.uniform(0.04, 0.12), seq, "ok", contact.node_id)
                )
        for path in lookup.paths:
            assert 0 <= path.in_flight <= lookup.alpha
        assert lookup.hedges <= hedge_budget
        # a request leaves its slot only by an answer, a failure, a hedge, its timeout, or
        # its path finding the record: whatever is outstanding is one of those
        late = lookup.hedges + lookup.timeouts + lookup.released
        assert lookup.outstanding <= lookup.in_flight + late
        if lookup.done:
            break
        due = lookup.next_deadline()
        if not queue and due is None:
            break
        if due is not None and (not queue or due < queue[0][0]):
            now = max(now, due)  # nothing arrives before the next hedge or timeout
            steps += 1
            continue
        now, _, what, node_id = heapq.heappop(queue)
        steps += 1
        assert steps < 10_000, "the lookup does not terminate"
        if what == "fail":
            lookup.on_failure(node_id, now)
        else:
            found = [record] if node_id in holders else []
            closest = tables[node_id].closest(lookup.target, 8)
            lookup.on_response(node_id, closest, found, now)  # type: ignore[arg-type]
    return now, steps


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 3),
    silent_share=st.floats(0.0, 0.35),
    budget=st.integers(0, 12),
    paths=st.sampled_from([1, 4]),
    pick=st.randoms(use_true_random=False),
)
def test_lookups_with_hedging_stay_in_budget_terminate_and_find(
    seed: int, silent_share: float, budget: int, paths: int, pick: random.Random
) -> None:
    tables = _worlds(seed)
    ids = list(tables)
    target = hashlib.sha3_256(b"target %d" % pick.randrange(1000)).digest()
    origin = pick.choice(ids)
    silent = {i for i in ids if i != origin and pick.random() < silent_share}
    closest = sorted((i for i in ids if i != origin), key=lambda i: distance(i, target))[:8]
    holders = {i for i in closest if i not in silent}  # honest nodes among the 8 closest
    seeds = tables[origin].closest(target, 8)

    def run_one(rtt: LatencyTable | None, hedges: int) -> Lookup:
        lookup = Lookup(
            target,
            seeds,
            self_id=origin,
            k=8,
            paths=paths,
            want_value=True,
            rtt=rtt,
            hedge_budget=hedges,
        )
        lookup.consider = lambda record: setattr(lookup, "best", record)  # type: ignore[method-assign]
        end, _ = drive(
            lookup, tables, silent, holders, random.Random(pick.random()), hedge_budget=hedges
        )
        assert lookup.done
        assert end <= 2.0 * (len(ids) + 1)  # every request ends by its hard timeout at the latest
        return lookup

    plain = run_one(None, 0)  # Kademlia waiting for every answer: an honest path exists if
    timed = run_one(LatencyTable(ceiling=2.0), budget)  # it finds the record
    if plain.best is not None:
        assert timed.best is not None, "an honest path existed but nothing was found"


_WORLDS: dict[int, dict[bytes, RoutingTable]] = {}


def _worlds(seed: int) -> dict[bytes, RoutingTable]:
    if seed not in _WORLDS:
        _WORLDS[seed] = world(80, seed)
    return _WORLDS[seed]


def test_hedging_frees_the_slot_at_the_expected_rtt_not_the_timeout() -> None:
    """One silent seed among honest ones: with a budget its slot goes to the next candidate
    once the network's expected RTT has passed; without, only at its adaptive timeout."""
    tables = _worlds(0)
    ids = list(tables)
    origin, target = ids[0], hashlib.sha3_256(b"one silent").digest()
    seeds = tables[origin].closest(target, 8)
    freed = {}
    for budget in (0, 4):
        rtt = LatencyTable(ceiling=2.0)
        for i in range(60):
            rtt.observe(bytes([i % 20]) * 32, 0.05)  # the node has measured its network before
        lookup = Lookup(target, seeds, self_id=origin, k=8, rtt=rtt, hedge_budget=budget)
        asked = lookup.next_requests(0.0)
        assert seeds[0] in asked
        for contact in asked[1:]:  # the first seed is silent, the others answer
            lookup.on_response(contact.node_id, [], None, 0.05)
        t = 0.05
        while lookup.paths[0].candidates[0].state is State.IN_FLIGHT:
            t = lookup.next_deadline()
            assert t is not None
            lookup.next_requests(t)
        freed[budget] = t
        assert lookup.hedges == (1 if budget else 0)
        assert lookup.stalls == (0 if budget else 1)
    assert freed[4] < 0.1 < 0.2 <= freed[0] < 2.0


def test_without_a_clock_the_lookup_waits_as_plain_kademlia() -> None:
    tables = _worlds(1)
    ids = list(tables)
    target = hashlib.sha3_256(b"no clock").digest()
    lookup = Lookup(target, tables[ids[0]].closest(target, 8), self_id=ids[0], k=8)
    asked = lookup.next_requests()
    assert lookup.next_deadline() is None
    assert lookup.next_requests() == []  # every slot is held until an answer or a failure
    for contact in asked:
        lookup.on_failure(contact.node_id)
    assert lookup.hedges == lookup.timeouts == 0


def test_suspects_are_asked_last() -> None:
    tables = _worlds(2)
    ids = list(tables)
    target = hashlib.sha3_256(b"suspects").digest()
    seeds = tables[ids[0]].closest(target, 8)
    suspects = {seeds[0].node_id, seeds[1].node_id}
    lookup = Lookup(
        target, seeds, self_id=ids[0], k=8, alpha=3, avoid=lambda peer: peer in suspects
    )
    first = lookup.next_requests()
    assert not suspects & {c.node_id for c in first}


# ------------------------------------------------------------------ simulation


def _silent_network(share: float) -> tuple:
    net = build(300, seed=31, config=NetConfig(rtt=0.05, jitter=0.01, timeout=2.0))
    targets = Targets(net, 4, seed=31)
    targets.join_tables()
    targets.publish()
    rnd = random.Random(8)
    others = [n for n in net.nodes.values() if n.node_id not in targets.latest]
    for node in rnd.sample(others, int(share * len(net.nodes))):
        node.behaviour = Behaviour.DROP  # silent: never answers
    return net, targets


def _run(net, targets, **config) -> list:
    for name, value in config.items():
        setattr(net.config, name, value)
    for node in net.nodes.values():
        node.latency = None  # every run starts without measurements
    return resolve_many(net, targets, lookups=120, paths=4, seed=2)


def test_hedging_cuts_the_lookups_that_wait_a_full_timeout_in_simulation() -> None:
    net, targets = _silent_network(0.25)
    fixed = _run(net, targets, adaptive=False, hedge_budget=0)
    unhedged = _run(net, targets, adaptive=True, hedge_budget=0)
    hedged = _run(net, targets, adaptive=True, hedge_budget=8)
    for results in (fixed, unhedged, hedged):
        assert sum(ok for _, ok in results) >= 0.98 * len(results)
    # with the fixed timeout, a silent node on a path makes the lookup wait the full 2 s
    waited_fixed = sum(s.latency >= 2.0 for s, _ in fixed)
    assert waited_fixed >= len(fixed) // 10
    assert all(s.latency < 2.0 for s, _ in unhedged + hedged)
    # adaptive timeouts without hedging: a silent node holds its slot to its timeout;
    # hedging hands the slot on at the expected RTT in most of those lookups
    stalled_unhedged = sum(s.stalls > 0 for s, _ in unhedged)
    stalled_hedged = sum(s.stalls > 0 for s, _ in hedged)
    assert stalled_hedged < stalled_unhedged / 2
    assert sum(s.hedges for s, _ in hedged) > 0
    assert all(s.hedges <= 8 for s, _ in hedged)
    slow = sorted(s.latency for s, _ in hedged)[int(0.95 * len(hedged))]
    assert slow < sorted(s.latency for s, _ in fixed)[int(0.95 * len(fixed))] / 2


def test_a_node_learns_which_peers_are_silent() -> None:
    """Across lookups from one node, peers that went silent are asked last: once every key
    was looked up, later rounds over the same keys send far fewer requests to silent peers
    than the first round did."""
    net, targets = _silent_network(0.3)
    origin = next(
        n
        for n in net.nodes.values()
        if n.behaviour is Behaviour.HONEST and n.node_id not in targets.latest
    )
    asked_silent = [0]
    answer = net._answer

    def counting(node, target, kind):  # type: ignore[no-untyped-def]
        asked_silent[0] += node.behaviour is Behaviour.DROP
        return answer(node, target, kind)

    net._answer = counting  # type: ignore[method-assign]
    per_round: list[int] = []
    for _ in range(10):
        before = asked_silent[0]
        for key in targets.latest:
            net.lookup(origin, key, kind=RecordKind.PEER, paths=4, on_done=lambda s: None)
            net.run()  # every request ends, the silent ones at the 2 s hard timeout
        per_round.append(asked_silent[0] - before)
    assert origin.latency is not None and origin.latency.timeouts > 0
    # Rounds compared, not single lookups: one lookup's count swings with its key (measured
    # over 30 fresh networks: the last rounds ask at most 0.3 of the first round's silent
    # requests).
    assert per_round[0] > 0
    assert sum(per_round[-3:]) / 3 < per_round[0] / 2


# ------------------------------------------------------------------ the real DHT


def test_the_real_dht_hedges_past_silent_peers_without_waiting_for_them() -> None:
    """Over QMP on loopback, three of ten nodes stop answering DHT requests (their links stay
    up): lookups still find every record, measure RTTs, count what they went around (status,
    metrics), and end while the silent peers' requests are still unanswered, by hedging or by
    their adaptive timeout, never by the 2 s request timeout."""
    from qiz.identity import NodeIdentity
    from qiz.node import Node
    from qiz.resolve.dht import FIND_NODE, FIND_VALUE, DhtConfig
    from qiz.web.metrics import registry_for, render

    from .helpers import manager, run, start_mesh, stop_all

    def make(peers: list[str] | None, _index: int) -> Node:
        config = DhtConfig(request_timeout=2.0)
        return Node(NodeIdentity.generate(), peers=peers, config=manager(), dht_config=config)

    async def hang(ctx: object, body: object) -> object:
        await asyncio.Event().wait()

    async def scenario() -> None:
        nodes = await start_mesh(10, make)
        try:
            silent = nodes[2:5]
            for node in silent:
                node.handlers[FIND_NODE] = hang
                node.handlers[FIND_VALUE] = hang
            silent_ids = {n.node_id.digest for n in silent}
            asker = nodes[-1]
            waited_out = went_around = hedges = timeouts = 0
            for other in nodes[:-1]:
                lookup = await asker.dht.lookup(other.node_id.digest, RecordKind.PEER)
                assert lookup.best is not None and lookup.best.key == other.node_id.digest
                hedges += lookup.hedges
                timeouts += lookup.timeouts
                if silent_ids & set(lookup.asked_by()):
                    waited_out += 1
                    went_around += lookup.hedges + lookup.timeouts + lookup.released > 0
            assert waited_out > 0  # the silent nodes were asked
            # and lookups went around them (on a loaded machine an adaptive timeout may reach
            # the 2 s ceiling, where the request simply fails: not every lookup shows it)
            assert went_around > 0
            assert asker.dht.latency.network.samples > 0
            # the node's counters hold these lookups' (and its own background lookups'); a
            # lookup may also end with a silent request merely released (its path ended)
            assert asker.dht.hedged_requests >= hedges and asker.dht.lookup_timeouts >= timeouts
            # ... and says so: in its status (`qiz node status`) and its Prometheus metrics
            status = asker.status()["dht"]
            assert status["hedged_requests"] == asker.dht.hedged_requests
            assert status["lookup_timeouts"] == asker.dht.lookup_timeouts
            text = render(registry_for(asker.api)).decode()
            for name, value in (
                ("qiz_dht_hedged_requests_total", asker.dht.hedged_requests),
                ("qiz_dht_lookup_timeouts_total", asker.dht.lookup_timeouts),
            ):
                assert f"{name} {float(value)}" in text, name
        finally:
            await stop_all(nodes)

    run(scenario())
