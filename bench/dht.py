"""DHT benchmark: the simulator at 1,000 and 10,000 nodes (50 ms RTT with jitter), with and
without adversaries, for d = 1 and d = 4 disjoint paths; and a real 50-node mesh on loopback.

Figures: lookup rounds (mean, p95), messages per lookup, resolve latency (p50, p95), and the
share of lookups that found the *latest* record while 10, 20 or 30 % of the nodes drop requests,
serve stale or forged records, or answer only with colluders; with adversaries, for d = 4, the
hedged requests per lookup and the share of lookups that waited the full 2 s request timeout
(lookups use adaptive per-peer timeouts and hedging, docs/dht.md). The loopback figure stands
beside the whitepaper's "5 ms average, 20 ms peak".

    python bench/dht.py [--quick]
    python bench/dht.py --sim 10000 [400] [--malicious 0.2,0.3]   # only the simulated network
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Figure, machine, markdown_table, percentile
from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.resolve.dht import DhtConfig
from qiz.sim.network import Behaviour, NetConfig
from qiz.sim.scenarios import Targets, build, corrupt, resolve_many, summarize

MALICIOUS = (0.0, 0.1, 0.2, 0.3)


def simulate(
    nodes: int, lookups: int, malicious_levels: tuple[float, ...] = MALICIOUS
) -> list[Figure]:
    net = build(nodes, seed=nodes, config=NetConfig(rtt=0.050, jitter=0.010, timeout=2.0))
    targets = Targets(net, 20)
    targets.join_tables()
    targets.publish()
    group = f"simulated DHT, {nodes:,} nodes, 50 ms RTT"
    out: list[Figure] = []
    for malicious in malicious_levels:
        for node in net.nodes.values():
            node.behaviour = Behaviour.HONEST
        if malicious:
            corrupt(net, malicious, protect=set(targets.latest), seed=nodes + int(100 * malicious))
        for paths in (1, 4):
            results = resolve_many(net, targets, lookups=lookups, paths=paths, seed=paths)
            s = summarize(net, results, malicious=malicious, paths=paths)
            label = f"{int(malicious * 100)} % malicious, d={paths}"
            out.append(Figure(group, f"success, {label}", s.success * 100, "%"))
            if malicious in (0.0, 0.2, 0.3):
                out += [
                    Figure(
                        group,
                        f"rounds mean / p95, {label}",
                        s.rounds_mean,
                        "rounds",
                        extra={"p95": s.rounds_p95},
                    ),
                    Figure(group, f"messages per lookup, {label}", s.messages_mean, "msgs"),
                    Figure(group, f"resolve p50, {label}", s.latency_p50 * 1000, "ms"),
                    Figure(
                        group,
                        f"resolve p95, {label}",
                        s.latency_p95 * 1000,
                        "ms",
                        claim=500.0,
                        claim_text="0.5 s target (IPFS ~1.4 s p90)",
                    ),
                ]
            if malicious and paths == 4:
                stats = [r for r, _ in results]
                out += [
                    Figure(
                        group,
                        f"hedged requests per lookup, {label}",
                        statistics.mean(getattr(r, "hedges", 0) for r in stats),
                        "msgs",
                    ),
                    Figure(
                        group,
                        f"lookups that waited the 2 s timeout, {label}",
                        100 * sum(r.latency >= net.config.timeout for r in stats) / len(stats),
                        "%",
                    ),
                ]
    return out


async def loopback_mesh(size: int, resolves: int) -> list[float]:
    nodes = [Node(NodeIdentity.generate(), dht_config=DhtConfig(request_timeout=2.0))]
    await nodes[0].start()
    for _ in range(size - 1):
        node = Node(
            NodeIdentity.generate(),
            peers=[nodes[0].address],
            dht_config=DhtConfig(request_timeout=2.0),
        )
        await node.start()
        nodes.append(node)
    await asyncio.gather(*(n.joined.wait() for n in nodes))
    latencies = []
    try:
        for i in range(resolves):
            a, b = nodes[i % size], nodes[(i * 7 + 3) % size]
            if a is b:
                continue
            start = time.perf_counter()
            record = await a.dht.resolve_peer(b.node_id, use_cache=False)
            latencies.append(time.perf_counter() - start)
            assert record.node_id == b.node_id
    finally:
        for node in nodes:
            await node.stop()
    return latencies


def run(quick: bool = False) -> list[Figure]:
    figures: list[Figure] = []
    for nodes in (1_000, 10_000):
        figures += simulate(nodes, lookups=150 if quick else 400)
    latencies = asyncio.run(loopback_mesh(20 if quick else 50, 200 if quick else 1000))
    group = "real DHT on loopback, 50 nodes" if not quick else "real DHT on loopback, 20 nodes"
    figures += [
        Figure(
            group,
            "resolve p50 (d=4 value lookup over QMP)",
            statistics.median(latencies) * 1000,
            "ms",
            claim=5.0,
            claim_text="5 ms average",
        ),
        Figure(
            group,
            "resolve p95",
            percentile(latencies, 0.95) * 1000,
            "ms",
            claim=20.0,
            claim_text="20 ms peak",
        ),
    ]
    for f in figures:
        f.emit()
    return figures


def simulated_only(argv: list[str]) -> list[Figure]:
    """``--sim NODES [LOOKUPS] [--malicious 0.2,0.3]``: only the simulated network of that size
    (no loopback mesh), at the given shares of adversaries: the way to compare lookup changes
    at 10,000 nodes without the rest of the benchmark."""
    at = argv.index("--sim")
    nodes = int(argv[at + 1])
    lookups = int(argv[at + 2]) if len(argv) > at + 2 and argv[at + 2].isdigit() else 400
    levels = MALICIOUS
    if "--malicious" in argv:
        levels = tuple(float(x) for x in argv[argv.index("--malicious") + 1].split(","))
    figures = simulate(nodes, lookups, levels)
    for f in figures:
        f.emit()
    return figures


def main() -> None:
    if "--sim" in sys.argv:
        figures = simulated_only(sys.argv)
        print()
        print(markdown_table(figures))
        return
    figures = run("--quick" in sys.argv)
    print()
    print(f"## DHT ({machine()})\n")
    print(markdown_table(figures))


if __name__ == "__main__":
    main()
