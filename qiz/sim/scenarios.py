"""Ready-made simulations: a converged network, optional adversaries, real signed records,
and many lookups -- the numbers behind ``bench/dht.py`` and the simulation tests."""

from __future__ import annotations

import hashlib
import random
import statistics
from dataclasses import dataclass

from qiz.identity import NodeIdentity, PeerRecord
from qiz.resolve.records import RecordKind, validate
from qiz.sim.network import Behaviour, LookupStats, NetConfig, SimNetwork

ADVERSARY_MIX = (Behaviour.DROP, Behaviour.STALE, Behaviour.FORGE, Behaviour.ECLIPSE)


@dataclass
class ScenarioResult:
    nodes: int
    malicious: float
    paths: int
    lookups: int
    success: float
    rounds_mean: float
    rounds_p95: float
    messages_mean: float
    latency_p50: float
    latency_p95: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def build(nodes: int, *, seed: int = 1, config: NetConfig | None = None) -> SimNetwork:
    """A converged network of ``nodes`` honest nodes with random ids."""
    net = SimNetwork(config, seed=seed)
    for i in range(nodes):
        net.add_node(hashlib.sha3_256(b"sim node %d %d" % (seed, i)).digest())
    net.fill_tables()
    return net


class Targets:
    """Real identities whose peer records are published, with a stale and a forged copy."""

    def __init__(self, net: SimNetwork, count: int, *, seed: int | None = None) -> None:
        """``seed`` makes the identities (and so the looked-up keys) the same on every run;
        without one they are fresh."""
        self.net = net
        self.identities = [
            NodeIdentity.generate()
            if seed is None
            else NodeIdentity.derive(b"sim target %d %d" % (seed, i))
            for i in range(count)
        ]
        self.latest: dict[bytes, int] = {}
        self._new: dict[bytes, PeerRecord] = {}
        for identity in self.identities:
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

    def join_tables(self) -> None:
        """Let the targets into the converged tables (they joined like any node)."""
        for key in self.latest:
            node = self.net.nodes[key]
            for other in self.net.nodes.values():
                if other is not node:
                    other.table.add(node.node_id, node.address, 0.0)
                    node.table.add(other.node_id, other.address, 0.0)

    def publish(self) -> None:
        for key, record in self._new.items():
            valid = validate(RecordKind.PEER, record.raw, key=key, now=self.net.wall())
            self.net.publish(self.net.nodes[key], valid)


def corrupt(net: SimNetwork, fraction: float, *, protect: set[bytes], seed: int = 3) -> int:
    """Turn ``fraction`` of the nodes (not those in ``protect``) into adversaries, a mix of
    droppers, stale and forged record servers and eclipse colluders."""
    rnd = random.Random(seed)
    candidates = [n for n in net.nodes.values() if n.node_id not in protect]
    chosen = rnd.sample(candidates, int(fraction * len(net.nodes)))
    for i, node in enumerate(chosen):
        node.behaviour = ADVERSARY_MIX[i % len(ADVERSARY_MIX)]
    return len(chosen)


def resolve_many(
    net: SimNetwork, targets: Targets, *, lookups: int, paths: int, seed: int = 5
) -> list[tuple[LookupStats, bool]]:
    """Run ``lookups`` peer-record lookups from random honest nodes; each result is paired
    with whether it found the latest record."""
    rnd = random.Random(seed)
    honest = [
        n
        for n in net.nodes.values()
        if n.behaviour is Behaviour.HONEST and n.node_id not in targets.latest
    ]
    keys = list(targets.latest)
    results: list[tuple[LookupStats, bool]] = []
    for _ in range(lookups):
        origin = rnd.choice(honest)
        key = rnd.choice(keys)

        def done(stats: LookupStats, key: bytes = key) -> None:
            ok = stats.found is not None and stats.found.seq == targets.latest[key]
            results.append((stats, ok))

        net.lookup(origin, key, kind=RecordKind.PEER, paths=paths, on_done=done)
    net.run()
    return results


def summarize(
    net: SimNetwork, results: list[tuple[LookupStats, bool]], *, malicious: float, paths: int
) -> ScenarioResult:
    stats = [s for s, _ in results]
    return ScenarioResult(
        nodes=len(net.nodes),
        malicious=malicious,
        paths=paths,
        lookups=len(results),
        success=sum(1 for _, ok in results if ok) / len(results),
        rounds_mean=statistics.mean(s.rounds for s in stats),
        rounds_p95=_p95([s.rounds for s in stats]),
        messages_mean=statistics.mean(s.messages for s in stats),
        latency_p50=statistics.median(s.latency for s in stats),
        latency_p95=_p95([s.latency for s in stats]),
    )


def scenario(
    nodes: int,
    *,
    malicious: float = 0.0,
    paths: int = 1,
    lookups: int = 200,
    targets: int = 20,
    seed: int = 1,
    config: NetConfig | None = None,
) -> ScenarioResult:
    net = build(nodes, seed=seed, config=config)
    chosen = Targets(net, targets, seed=seed)
    chosen.join_tables()
    corrupt(net, malicious, protect=set(chosen.latest), seed=seed + 2)
    chosen.publish()
    results = resolve_many(net, chosen, lookups=lookups, paths=paths, seed=seed + 4)
    return summarize(net, results, malicious=malicious, paths=paths)
