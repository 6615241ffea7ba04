"""The adversarial suite: six attacks run against the real parts, with only the network and
time simulated, each measured the same way (issue 19, item 4).

Every scenario returns :class:`Row` s: the share of honest users' attempts that succeeded, the
share of work, storage or routing that still reaches adversaries in the *last* round, and how
long the defences took to notice (rounds or simulated seconds, or why they never do).

What is real here: the routing tables (with their per-/24 limits), the iterative lookup
(disjoint paths, adaptive timeouts, hedging, candidates to avoid asked last), record signing
and validation, the S/Kademlia id puzzle's check, :class:`~qiz.trust.scores.PeerScores` on an
in-memory SQLite database per honest user, storage placement's ordering
(:func:`~qiz.store.placement.order_candidates`), erasure coding, and the jobs coordinator's
decision core (through :mod:`qiz.sim.jobs`, run as it is). What is simulated: the network's
latency and time (:mod:`qiz.sim.network`), holders' disks, and the workers.

The honest users of the DHT scenarios keep their score tables and RTT estimates across rounds,
as a live node does: like :class:`qiz.resolve.dht.Dht`, a lookup asks peers suspected of
silence or scoring under ``LOW_SCORE`` last and never sends to a peer under ``ROUTE``. Scores
move on what a user can see for itself: a record that fails validation (``invalid_record``), a
request that is never answered (``rpc_timeout``), a storage share whose hash is wrong
(``bad_share``), and a record older than the one the lookup ended with (``stale_record``; a
live node scores only *expired* records as stale today, see docs/adversary.md).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from qiz.identity import PeerRecord
from qiz.identity.puzzle import generate_identity, solves
from qiz.resolve.dht import LOW_SCORE
from qiz.resolve.keyspace import distance
from qiz.resolve.records import RecordError, RecordKind, validate
from qiz.sim.network import Behaviour, LookupStats, NetConfig, SimNetwork, SimNode
from qiz.store.erasure import decode_chunk, encode_chunk
from qiz.store.placement import order_candidates
from qiz.trust.latency import LatencyTable
from qiz.trust.scores import GIVE, ROUTE, PeerScores

ROUND_SECONDS = 60.0  # simulated time between two rounds of the DHT and storage scenarios
SLOW_FACTOR = 20.0  # a slow peer answers this many RTTs late (1 s at 50 ms)
ATTACKER_PREFIXES = 256  # /24 networks the attacker's ids come from (a /16)
ATTACKER_SEED = 7919  # added to a scenario's seed: the attacker's draws are not the honest ids


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    parameter: str
    honest_success: float | None  # share of honest users' attempts that succeeded
    adversary_share: float | None  # of work / storage / routing, in the last round
    detection: str  # rounds or simulated seconds to detection, or why not
    note: str = ""
    figures: dict[str, float] = field(default_factory=dict)  # the numbers behind the text


def table(rows: Iterable[Row]) -> str:
    """The rows as one markdown table."""
    lines = [
        "| scenario | parameter | honest success | share reaching adversaries (last round) "
        "| detection | notes |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        ok = "" if r.honest_success is None else f"{r.honest_success:.1%}"
        share = "" if r.adversary_share is None else f"{r.adversary_share:.1%}"
        lines.append(
            f"| {r.scenario} | {r.parameter} | {ok} | {share} | {r.detection} | {r.note} |"
        )
    return "\n".join(lines)


def new_scores(clock: Callable[[], float]) -> PeerScores:
    """A peer score table of one honest user, in memory, on the simulation's clock."""
    return PeerScores(sqlite3.connect(":memory:"), clock=clock)


def grind_ids(count: int, bits: int, rng: random.Random) -> list[bytes]:
    """``count`` random ids that solve the id puzzle at ``bits`` (the real check)."""
    out: list[bytes] = []
    while len(out) < count:
        node_id = rng.randbytes(32)
        if solves(node_id, bits):
            out.append(node_id)
    return out


def closest_ids(target: bytes, tries: int, bits: int, keep: int, rng: random.Random) -> list[bytes]:
    """What an attacker gets from ``tries`` key generations: the ``keep`` ids closest to
    ``target`` among those that solve the puzzle (about ``tries / 2**bits`` of them)."""
    found: list[tuple[int, bytes]] = []
    for _ in range(tries):
        node_id = rng.randbytes(32)
        if bits and not solves(node_id, bits):
            continue
        found.append((distance(node_id, target), node_id))
        if len(found) > 4 * keep:
            found.sort()
            del found[keep:]
    found.sort()
    return [node_id for _, node_id in found[:keep]]


def median_or(values: list[float], none: str, unit: str) -> str:
    if not values:
        return none
    return f"median {statistics.median(values):g} {unit}"


# ---------------------------------------------------------------------- the DHT


class AdversaryNet(SimNetwork):
    """The simulated network with honest *users* that keep peer scores.

    Lookups run one user at a time (``self.user``), so each request can be charged to the
    user who sent it: counted (to an adversary or not), and scored in that user's table."""

    def __init__(self, config: NetConfig | None = None, *, seed: int = 1) -> None:
        super().__init__(config, seed=seed)
        self.user: SimNode | None = None
        self.scores: dict[bytes, PeerScores] = {}
        self.slow: set[bytes] = set()
        self.requests = 0
        self.to_adversaries = 0
        self.refused = 0  # requests a user's scores kept from being sent (under ROUTE)
        self.served: dict[bytes, list[tuple[bytes, int]]] = {}  # target -> (node, seq) served
        self._slow_reply = False

    def is_adversary(self, node_id: bytes) -> bool:
        return self.nodes[node_id].behaviour is not Behaviour.HONEST or node_id in self.slow

    def _answer(
        self, node: SimNode, target: bytes, kind: RecordKind | None
    ) -> tuple[list, list[bytes]] | None:
        scores = self.scores.get(self.user.node_id) if self.user is not None else None
        if scores is not None and not scores.may(node.node_id, "route"):
            # a live node refuses to send it at all (Dht._ask); here it times out unasked
            self.refused += 1
            return None
        reply = super()._answer(node, target, kind)
        self.requests += 1
        self.to_adversaries += self.is_adversary(node.node_id)
        self._slow_reply = node.node_id in self.slow
        if reply is None:
            if scores is not None:  # with no loss configured, this request will time out
                scores.record(node.node_id, "rpc_timeout", "lookup request")
            return None
        for raw in reply[1] if kind is not None else ():
            try:
                record = validate(kind, raw, key=target, now=self.wall(), cache=self.records)
            except RecordError as exc:
                if scores is not None:
                    scores.record(node.node_id, "invalid_record", str(exc))
                continue
            self.served.setdefault(target, []).append((node.node_id, record.seq))
        return reply

    def _one_way(self) -> float:
        base = super()._one_way()
        if self._slow_reply:
            self._slow_reply = False
            return base * SLOW_FACTOR
        return base

    def _avoider(self, origin: SimNode, rtt: LatencyTable) -> Callable[[bytes], bool] | None:
        """As :meth:`SimNetwork._avoider` (suspects and slow peers, as the user's latency
        table says), with the user's low-score peers asked last too, as a live node does
        (:data:`qiz.resolve.dht.LOW_SCORE`)."""
        scores = self.scores.get(origin.node_id)
        by_latency = self.config.avoid_suspects

        def avoid(peer: bytes) -> bool:
            if by_latency and rtt.ask_last(peer, self.now):
                return True
            return scores is not None and scores.get(peer) < LOW_SCORE

        return avoid


class Published:
    """Real identities (solving the puzzle) whose peer records are published, with a stale
    and a forged copy of each for the adversaries to serve."""

    def __init__(self, net: SimNetwork, count: int, *, bits: int, seed: int) -> None:
        self.net = net
        self.latest: dict[bytes, int] = {}
        self._new: dict[bytes, PeerRecord] = {}
        for i in range(count):
            # derived from the seed: a scenario's figures are the same on every run
            identity = generate_identity(bits, seed=b"published %d %d " % (seed, i))
            key = identity.node_id.digest
            net.add_node(key)
            old = PeerRecord.create(identity, ["10.0.0.1:7450"], seq=1, now=net.wall())
            new = PeerRecord.create(identity, ["10.0.0.2:7450"], seq=2, now=net.wall())
            net.stale[key] = validate(RecordKind.PEER, old.raw, key=key, now=net.wall())
            forged = bytearray(new.raw)
            forged[-7] ^= 0x10
            net.forged[key] = bytes(forged)
            self.latest[key] = 2
            self._new[key] = new

    def publish(self) -> None:
        """Publish the owners' latest records (the owners were in the network when its
        tables were filled: they joined like any node, and nobody else knows them better)."""
        for key, record in self._new.items():
            valid = validate(RecordKind.PEER, record.raw, key=key, now=self.net.wall())
            self.net.publish(self.net.nodes[key], valid)


def honest_network(nodes: int, bits: int, seed: int) -> AdversaryNet:
    """An :class:`AdversaryNet` of ``nodes`` honest nodes whose ids solve the puzzle (tables
    not filled yet: the caller adds its adversaries first)."""
    net = AdversaryNet(NetConfig(rtt=0.050, jitter=0.010, timeout=2.0), seed=seed)
    for node_id in grind_ids(nodes, bits, random.Random(seed)):
        net.add_node(node_id)
    return net


def add_attackers(
    net: AdversaryNet, ids: Iterable[bytes], behaviour: Behaviour, rng: random.Random
) -> list[bytes]:
    """Adversary nodes at addresses in the attacker's ``ATTACKER_PREFIXES`` /24 networks."""
    out = []
    for node_id in ids:
        node = net.add_node(node_id, behaviour)
        node.address = (
            f"172.{16 + rng.randrange(ATTACKER_PREFIXES) // 256}."
            f"{rng.randrange(ATTACKER_PREFIXES) % 256}.{rng.randrange(1, 255)}:7450"
        )
        out.append(node_id)
    return out


@dataclass
class RoundsResult:
    """Lookups of many rounds by the same users: per round, found-the-latest and the share of
    requests that went to adversaries."""

    success: list[float] = field(default_factory=list)
    share: list[float] = field(default_factory=list)
    latency: list[list[float]] = field(default_factory=list)
    forged_accepted: int = 0
    stale_accepted: int = 0
    # (user, adversary) -> [round it first misbehaved to that user, round its score there fell
    # under LOW_SCORE (asked last), round it fell under ROUTE (never asked)]
    caught: dict[tuple[bytes, bytes], list[int | None]] = field(default_factory=dict)


def lookup_rounds(
    net: AdversaryNet,
    users: list[SimNode],
    keys: list[bytes],
    latest: dict[bytes, int],
    *,
    rounds: int,
    lookups: int,
    paths: int,
    seed: int,
) -> RoundsResult:
    """``rounds`` rounds; in each, every user looks up ``lookups`` random keys in turn."""
    rng = random.Random(seed + ATTACKER_SEED)
    out = RoundsResult()
    for user in users:
        net.scores.setdefault(user.node_id, new_scores(lambda: net.now))
    for r in range(rounds):
        ok = total = 0
        times: list[float] = []
        net.requests = net.to_adversaries = 0
        for user in users:
            net.user = user
            scores = net.scores[user.node_id]
            for _ in range(lookups):
                key = rng.choice(keys)
                net.served.pop(key, None)
                result: list[LookupStats] = []
                net.lookup(user, key, kind=RecordKind.PEER, paths=paths, on_done=result.append)
                net.run()
                stats = result[0]
                total += 1
                times.append(stats.latency)
                found = stats.found
                if found is not None and found.seq == latest[key]:
                    ok += 1
                elif found is not None:
                    out.stale_accepted += 1
                if found is not None and found.raw == net.forged.get(key):
                    out.forged_accepted += 1  # never: validate() refuses it
                for node_id, seq in net.served.get(key, ()):
                    if found is not None and seq < found.seq:
                        scores.record(node_id, "stale_record", "older than the lookup's best")
            for node_id in net.nodes:
                if net.is_adversary(node_id) and node_id in scores._peers:
                    mark = out.caught.setdefault((user.node_id, node_id), [r, None, None])
                    score = scores.get(node_id)
                    if mark[1] is None and score < LOW_SCORE:
                        mark[1] = r
                    if mark[2] is None and not scores.may(node_id, "route"):
                        mark[2] = r
        net.user = None
        out.success.append(ok / max(total, 1))
        out.share.append(net.to_adversaries / max(net.requests, 1))
        out.latency.append(times)
        net.now += ROUND_SECONDS
    return out


def _detected(result: RoundsResult, rounds: int) -> str:
    """Per (user, adversary that misbehaved to that user): rounds until the user asks it
    last, and how many pairs reached the point of never asking it."""
    pairs = len(result.caught)
    if not pairs:
        return "nobody seen misbehaving"
    low = [m[1] - m[0] + 1 for m in result.caught.values() if m[1] is not None]
    never = sum(m[2] is not None for m in result.caught.values())
    return (
        f"{median_or(low, 'never', 'rounds')} to asked last ({len(low)}/{pairs} pairs), "
        f"{never}/{pairs} never asked, within {rounds} rounds"
    )


def _pick_users(net: AdversaryNet, count: int, rng: random.Random, skip: set[bytes]) -> list:
    honest = [
        n
        for n in net.nodes.values()
        if n.behaviour is Behaviour.HONEST and n.node_id not in skip and n.node_id not in net.slow
    ]
    return rng.sample(honest, min(count, len(honest)))


def sybil_flood(
    nodes: int, *, budget: int, bits: int, users: int, lookups: int, rounds: int, seed: int = 11
) -> Row:
    """Scenario 1: an attacker spends ``budget`` key generations on ids and joins them all
    (they answer only with each other). Without the puzzle every try is an id; with it, one
    in ``2**bits``. Measured: their share of honest users' routing tables and lookup
    requests, and whether lookups still find the latest records."""
    rng = random.Random(seed + ATTACKER_SEED)
    net = honest_network(nodes, bits, seed)
    # with the puzzle, only the ids that solve it are admitted: about budget / 2**bits
    sybils = [s for s in (rng.randbytes(32) for _ in range(budget)) if solves(s, bits)]
    add_attackers(net, sybils, Behaviour.ECLIPSE, rng)
    published = Published(net, 10, bits=bits, seed=seed)
    net.fill_tables()
    published.publish()
    chosen = _pick_users(net, users, rng, set(published.latest))
    entries = sum(len(u.table) for u in chosen)
    flood = set(sybils)
    taken = sum(1 for u in chosen for c in u.table.contacts() if c.node_id in flood)
    result = lookup_rounds(
        net,
        chosen,
        list(published.latest),
        published.latest,
        rounds=rounds,
        lookups=lookups,
        paths=4,
        seed=seed,
    )
    cost = f"{2**bits} tries per id" if bits else "1 try per id"
    return Row(
        "1 sybil flood",
        f"{budget:,} key generations, puzzle {bits} bits ({cost}): {len(sybils):,} sybils "
        f"beside {nodes:,} honest",
        statistics.mean(result.success),
        result.share[-1],
        "none: sybils that follow the protocol are not misbehaving; the defence is their cost",
        f"sybils hold {taken / max(entries, 1):.1%} of users' routing-table entries; d=4",
        {"sybils": len(sybils), "table_share": taken / max(entries, 1)},
    )


def eclipse(
    nodes: int,
    *,
    tries: int,
    bits: int,
    paths: tuple[int, ...],
    users: int,
    lookups: int,
    seed: int = 13,
) -> list[Row]:
    """Scenario 2: the attacker grinds ``tries`` ids and joins the 2k closest to a chosen
    target's id that solve the puzzle; they answer only with each other, never with the
    record. Measured, for each number of disjoint paths: whether honest lookups still find
    the target's latest record."""
    rng = random.Random(seed + ATTACKER_SEED)
    net = honest_network(nodes, bits, seed)
    published = Published(net, 1, bits=bits, seed=seed)
    (target,) = published.latest
    k = net.config.k
    ids = closest_ids(target, tries, bits, 2 * k, rng)
    add_attackers(net, ids, Behaviour.ECLIPSE, rng)
    net.fill_tables()
    published.publish()
    honest_near = sorted(
        (n for n in net.nodes if not net.is_adversary(n) and n != target),
        key=lambda n: distance(n, target),
    )[:k]
    closer = sum(distance(a, target) < distance(honest_near[-1], target) for a in ids)
    holders = sum(1 for n in net.nodes.values() if (RecordKind.PEER, target) in n.store)
    chosen = _pick_users(net, users, rng, {target})
    rows = []
    for d in paths:
        result = lookup_rounds(
            net,
            chosen,
            [target],
            published.latest,
            rounds=1,
            lookups=lookups,
            paths=d,
            seed=seed + d,
        )
        rows.append(
            Row(
                "2 eclipse",
                f"{tries:,} tries, puzzle {bits} bits: {len(ids)} ids nearest the target "
                f"of {nodes:,}, d={d}",
                result.success[-1],
                result.share[-1],
                "none: eclipse nodes answer validly (contacts only)",
                f"{closer} adversaries nearer than the target's k-th nearest honest node; "
                f"{holders} honest nodes hold the record",
                {"closer": closer, "holders": holders},
            )
        )
    return rows


def slow_and_silent(
    nodes: int, *, fraction: float, users: int, lookups: int, rounds: int, seed: int = 17
) -> Row:
    """Scenario 4: ``fraction`` of the nodes never answer (half) or answer 20 RTTs late
    (half). Users keep their RTT estimates and scores across rounds."""
    rng = random.Random(seed + ATTACKER_SEED)
    net = honest_network(nodes, 0, seed)
    published = Published(net, 20, bits=0, seed=seed)
    net.fill_tables()
    published.publish()
    bad = rng.sample([n for n in net.nodes if n not in published.latest], int(fraction * nodes))
    for i, node_id in enumerate(bad):
        if i % 2:
            net.slow.add(node_id)
        else:
            net.nodes[node_id].behaviour = Behaviour.DROP
    chosen = _pick_users(net, users, rng, set(published.latest))
    result = lookup_rounds(
        net,
        chosen,
        list(published.latest),
        published.latest,
        rounds=rounds,
        lookups=lookups,
        paths=4,
        seed=seed,
    )
    first, last = sorted(result.latency[0]), sorted(result.latency[-1])

    def p95(values: list[float]) -> float:
        return values[min(len(values) - 1, int(0.95 * len(values)))]

    return Row(
        "4 slow and silent",
        f"{fraction:.0%} of {nodes:,} (half silent, half {SLOW_FACTOR:g}x RTT), d=4",
        statistics.mean(result.success),
        result.share[-1],
        f"share of requests {result.share[0]:.1%} in round 1 -> {result.share[-1]:.1%} in "
        f"round {rounds} (suspects and slow peers asked last); score: {_detected(result, rounds)}",
        f"p95 {p95(first) * 1000:.0f} ms round 1 -> {p95(last) * 1000:.0f} ms round {rounds}",
        {"first_share": result.share[0], "p95_last": p95(last)},
    )


def record_poisoning(
    nodes: int, *, fraction: float, users: int, lookups: int, rounds: int, seed: int = 19
) -> Row:
    """Scenario 5: ``fraction`` of the nodes serve forged (half) or stale (half) records and
    only each other as contacts. Forged records must never be accepted (the signature), stale
    ones must lose to the fresher record; both are scored."""
    rng = random.Random(seed + ATTACKER_SEED)
    net = honest_network(nodes, 0, seed)
    published = Published(net, 20, bits=0, seed=seed)
    net.fill_tables()
    published.publish()
    bad = rng.sample([n for n in net.nodes if n not in published.latest], int(fraction * nodes))
    for i, node_id in enumerate(bad):
        net.nodes[node_id].behaviour = Behaviour.FORGE if i % 2 else Behaviour.STALE
    chosen = _pick_users(net, users, rng, set(published.latest))
    result = lookup_rounds(
        net,
        chosen,
        list(published.latest),
        published.latest,
        rounds=rounds,
        lookups=lookups,
        paths=4,
        seed=seed,
    )
    forge = RoundsResult(
        caught={
            p: m for p, m in result.caught.items() if net.nodes[p[1]].behaviour is Behaviour.FORGE
        }
    )
    stale = RoundsResult(
        caught={
            p: m for p, m in result.caught.items() if net.nodes[p[1]].behaviour is Behaviour.STALE
        }
    )
    return Row(
        "5 record poisoning",
        f"{fraction:.0%} of {nodes:,} (half forged, half stale), d=4",
        statistics.mean(result.success),
        result.share[-1],
        f"forgers: {_detected(forge, rounds)}; stale: {_detected(stale, rounds)}",
        f"forged accepted {result.forged_accepted}, stale accepted {result.stale_accepted}; "
        f"share of requests round 1 {result.share[0]:.1%}",
        {
            "forged_accepted": result.forged_accepted,
            "stale_accepted": result.stale_accepted,
            "forgers_asked_last": sum(m[1] is not None for m in forge.caught.values()),
            "forger_pairs": len(forge.caught),
            "first_share": result.share[0],
        },
    )


# ---------------------------------------------------------------------- jobs


def colluding_liars(liars: float, *, jobs: int, adaptive: bool, seed: int = 1) -> Row:
    """Scenario 3: :class:`~qiz.sim.jobs.JobsSim` as it is (the real job core), 1000 workers
    of which ``liars`` collude on one wrong answer; one-task jobs, 2 replicas, quorum 2.
    Detection: when each liar was first caught disagreeing with a quorum (simulated s)."""
    from qiz.sim.jobs import Behaviour as WorkerBehaviour
    from qiz.sim.jobs import JobsConfig, JobsSim

    config = JobsConfig(
        workers=1000,
        jobs=jobs,
        tasks=(1, 1),
        replicas=(2, 2),
        quorum=2,
        deadline=3600,
        arrivals=jobs / 10,
        joins=0,
        dies=0.0,
        stragglers=0.0,
        slow=0.0,
        liars=liars,
        adaptive=adaptive,
    )
    sim = JobsSim(config, seed=seed)
    caught: dict[bytes, float] = {}
    disagreed = sim.scores.disagreed

    def observe(peer: bytes) -> None:  # when the core first caught this worker
        caught.setdefault(peer, sim.now)
        disagreed(peer)

    sim.scores.disagreed = observe  # type: ignore[method-assign]
    report = sim.run()
    liar_ids = {n for n, b in report.behaviours.items() if b is WorkerBehaviour.LIAR}
    decided = sum(len(d) for d in report.decisions.values())
    wrong = report.wrong_tasks()
    # the first and last tenth of the arrivals: work given while jobs keep coming
    span = config.arrivals
    last = [liar for t, liar in report.offers if 0.9 * span <= t < span]
    first = [liar for t, liar in report.offers if t < 0.1 * span]
    times = [caught[n] for n in liar_ids if n in caught]
    return Row(
        "3 colluding liars",
        f"{liars:.0%} of 1000 workers, {'adaptive replication' if adaptive else 'plain quorum 2'}"
        f", {jobs:,} one-task jobs",
        (decided - wrong) / max(jobs, 1),
        sum(last) / max(len(last), 1),
        f"{median_or(times, 'none', 'sim s')} to the first disagreement; "
        f"{len(times)}/{len(liar_ids)} liars caught",
        f"wrong accepted {wrong} of {decided} ({wrong / max(decided, 1):.2%}); "
        f"liar share of offers: first tenth of the arrivals {sum(first) / max(len(first), 1):.1%}"
        f", last tenth in the share column",
        {
            "wrong": wrong,
            "decided": decided,
            "caught": len(times),
            "first_share": sum(first) / max(len(first), 1),
        },
    )


# ---------------------------------------------------------------------- storage


@dataclass
class Holder:
    node_id: bytes
    kind: str  # "honest", "drop" (loses what it accepted), "corrupt" (serves flipped bytes)
    shares: dict[tuple[bytes, int], bytes] = field(default_factory=dict)

    def offer(self, key: tuple[bytes, int], share: bytes) -> None:
        if self.kind != "drop":
            self.shares[key] = share

    def read(self, key: tuple[bytes, int]) -> bytes | None:
        share = self.shares.get(key)
        if share is None or self.kind != "corrupt":
            return share
        return bytes([share[0] ^ 0xFF]) + share[1:]


def bad_holders(
    *,
    holders: int,
    fraction: float,
    owners: int,
    contents: int,
    rounds: int,
    k: int = 4,
    n: int = 8,
    seed: int = 23,
) -> Row:
    """Scenario 6: owners place each content's n erasure-coded shares on the first holders
    :func:`order_candidates` gives them (by their own scores), then audit every share they
    placed each round; a share whose hash is wrong is ``bad_share``, a share not served is
    ``rpc_timeout``. Half the bad holders drop what they accept, half corrupt it."""
    rng = random.Random(seed + ATTACKER_SEED)
    now = [0.0]
    pool = [Holder(rng.randbytes(32), "honest") for _ in range(holders)]
    for i, holder in enumerate(rng.sample(pool, int(fraction * holders))):
        holder.kind = "corrupt" if i % 2 else "drop"
    by_id = {h.node_id: h for h in pool}
    ids = list(by_id)
    users = [new_scores(lambda: now[0]) for _ in range(owners)]
    # content id -> (owner, original bytes, share hashes, holder of each index)
    stored: list[tuple[int, bytes, bytes, list[bytes], list[bytes]]] = []
    shares_to_bad: list[float] = []
    caught: dict[tuple[int, bytes], list[int | None]] = {}
    retrievable = 0.0
    for r in range(rounds):
        placed = to_bad = to_corrupt = 0
        for o, scores in enumerate(users):
            for _ in range(contents):
                data = rng.randbytes(256)
                cid = hashlib.sha3_256(data).digest()
                order = order_candidates(cid, ids, scores.get, exclude=set())[:n]
                pieces = [bytes(p) for p in encode_chunk(data, k, n)]
                for index, holder in enumerate(order):
                    by_id[holder].offer((cid, index), pieces[index])
                    placed += 1
                    to_bad += by_id[holder].kind != "honest"
                    to_corrupt += by_id[holder].kind == "corrupt"
                    if by_id[holder].kind != "honest":
                        caught.setdefault((o, holder), [r, None])
                hashes = [hashlib.sha3_256(p).digest() for p in pieces]
                stored.append((o, cid, data, hashes, order))
        shares_to_bad.append(to_bad / max(placed, 1))
        corrupt_last = to_corrupt / max(placed, 1)
        if r == 0:
            corrupt_first = corrupt_last
        ok = 0
        for o, cid, data, hashes, order in stored:  # every owner audits all it placed
            good: dict[int, bytes] = {}
            for index, holder in enumerate(order):
                share = by_id[holder].read((cid, index))
                if share is None:
                    users[o].record(holder, "rpc_timeout", "share not served on audit")
                elif hashlib.sha3_256(share).digest() != hashes[index]:
                    users[o].record(holder, "bad_share", "audit: hash mismatch")
                else:
                    good[index] = share
            if len(good) >= k and decode_chunk(good, k, n, len(data)) == data:
                ok += 1
        retrievable = ok / max(len(stored), 1)
        for (o, holder), mark in caught.items():
            if mark[1] is None and not users[o].may(holder, "give"):
                mark[1] = r
        now[0] += ROUND_SECONDS
    spans = {
        kind: [
            b - a + 1
            for (_, h), (a, b) in caught.items()
            if b is not None and by_id[h].kind == kind
        ]
        for kind in ("corrupt", "drop")
    }
    pairs = {kind: sum(by_id[h].kind == kind for _, h in caught) for kind in ("corrupt", "drop")}
    charged = {
        kind: sum(
            by_id[h].kind == kind and "bad_share" in users[o].explain(h)["reasons"]
            for o, h in caught
        )
        for kind in ("corrupt", "drop")
    }
    return Row(
        "6 bad storage holders",
        f"{fraction:.0%} of {holders} holders (half drop, half corrupt), k={k} of n={n}, "
        f"{owners} owners x {contents} contents/round",
        retrievable,
        shares_to_bad[-1],
        f"corrupt: {median_or(spans['corrupt'], 'never', 'rounds')} to < GIVE "
        f"({len(spans['corrupt'])}/{pairs['corrupt']} pairs); dropping: "
        f"{median_or(spans['drop'], 'never', 'rounds')} "
        f"({len(spans['drop'])}/{pairs['drop']} pairs)",
        f"new shares to bad holders: round 1 {shares_to_bad[0]:.1%}, to corrupt ones in the "
        f"last round {corrupt_last:.1%}; retrievable = contents "
        f"with >= k good shares after {rounds} rounds (no repair)",
        {
            "first_share": shares_to_bad[0],
            "corrupt_share_last": corrupt_last,
            "corrupt_pairs": pairs["corrupt"],
            "corrupt_caught": len(spans["corrupt"]),
            "drop_caught": len(spans["drop"]),
            "corrupt_share_first": corrupt_first,
            "corrupt_charged": charged["corrupt"],
            "drop_charged_bad_share": charged["drop"],
            "corrupt_score_max": max(
                (users[o].get(h) for o, h in caught if by_id[h].kind == "corrupt"), default=0.0
            ),
        },
    )


__all__ = [
    "GIVE",
    "ROUTE",
    "AdversaryNet",
    "Row",
    "bad_holders",
    "colluding_liars",
    "eclipse",
    "record_poisoning",
    "slow_and_silent",
    "sybil_flood",
    "table",
]
