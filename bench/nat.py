"""NAT traversal measured on real NATs in network namespaces (issue 18, item 7; docs/nat.md):

    sudo .venv/bin/python bench/nat.py [--quick] [--busy-ok] [--pairs N]

* **time to a direct link**: from the first dial (``connect ID``: the DHT record, a circuit
  through a relay, the punch) to the direct link through punched holes, over ``--pairs``
  fresh pairs of nodes behind two port-preserving NATs (median, p90, max);
* **relayed beside direct, same two hosts, same run**: RTT (p50 of ``ping`` over the node's
  link) and throughput (``bench.blob`` pulls over that link, bench/nat_node.py) on the relayed
  link, then on the direct one. To hold the pair on the relay while it is measured, the
  first home's router drops packets to the other's public address until then (an nftables
  rule inserted before the nodes start, deleted after the relayed figures): the first punch
  attempt fails, a later one (docs/nat.md §5.2: 3 tries, 6 s apart) makes the direct link;
* **punch success by NAT type pair**: port-preserving to port-preserving (the timed pairs),
  port-preserving to symmetric and symmetric to symmetric (fresh pairs dialled at once,
  given 25 s: three attempts and their timeouts).

Every node is a real ``qiz node start`` process (through bench/nat_node.py, which adds the
bulk hook only) in the namespaces of tests/netns.py: a public network with two relays and
home networks behind nftables masquerade routers. One JSON line per figure, then a markdown
table. A busy machine makes these figures noise: the run is refused when the 1-minute load
average is over ``MAX_LOAD`` (``--busy-ok`` measures anyway and says so), as bench/store.py.
Needs root, ``ip`` and ``nft``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import MAX_LOAD, Figure, emit_with_loads, machine, markdown_table, percentile
from tests.helpers import CLEAN_ENV, qiz_init
from tests.netns import (
    PORT_PRESERVING,
    SYMMETRIC,
    NetnsNode,
    Topology,
    home_networks,
    netns_unavailable,
)

PAIRS = 10  # fresh port-preserving pairs timed
QUICK_PAIRS = 3
ROUND = 5  # pairs started at once (2 cores: 10 node processes)
OTHER_PAIRS = 3  # pp-sym and sym-sym pairs each
PUNCH_WAIT = 25.0  # seconds a pair is given to go direct (3 attempts, 5 s each, 1 s apart)
SETTLE = 90.0  # seconds for home nodes to find themselves private and reserve
PINGS = 50
BULK_SECONDS = 2.0
# a quarter of what a relay forwards on one circuit (RelayConfig.circuit_bytes, 256 MiB), which
# a 2 s pull filled once links no longer waited on Nagle: the relay then closed the link
BULK_BYTES = 64 * 1024 * 1024
CHUNK = 32 * 1024
DEPTH = 8
PUBLIC_CONFIG = "\n[nat]\ncheck_every = 10\n\n[relay]\nmax_reservations_per_prefix = 128\n"
HOME_CONFIG = "\n[nat]\ncheck_every = 10\n"
REPO = Path(__file__).resolve().parent.parent


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def check_quiet(busy_ok: bool) -> float:
    """The 1-minute load average; a run on a busy machine is refused (its figures would be
    noise) unless ``busy_ok``."""
    load = os.getloadavg()[0]
    if load > MAX_LOAD:
        if not busy_ok:
            raise SystemExit(
                f"the machine is busy (1-minute load average {load:.2f} > {MAX_LOAD}): "
                "rerun when it is quiet, or pass --busy-ok to measure anyway"
            )
        log(f"WARNING: measuring on a busy machine (load average {load:.2f})")
    return load


def wait_for(check: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """``check()``'s first true value within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


class Bench:
    """The topology, the work directory and the node processes started in it."""

    def __init__(self, net: Topology, work: Path) -> None:
        self.net = net
        self.work = work
        self.env = {**CLEAN_ENV, "PYTHONPATH": str(REPO)}
        self.boot: NetnsNode | None = None

    def homes(self, names: list[str], config: str) -> dict[str, str]:
        ids = qiz_init(self.work, *names)
        for name in names:
            with (self.work / name / "config.toml").open("a") as toml:
                toml.write(config)
        return ids

    def start(self, host: str, names: list[str], peers: list[str]) -> dict[str, NetnsNode]:
        nodes = {
            name: self.net.start_node(
                host,
                name,
                cwd=self.work,
                peers=peers,
                args=("--no-worker", "--no-api"),
                env=self.env,
                ready=False,
                module="bench.nat_node",
            )
            for name in names
        }
        return nodes

    @staticmethod
    def nat(node: NetnsNode) -> dict[str, Any]:
        return ((node.status() or {}).get("nat")) or {}

    @staticmethod
    def link(node: NetnsNode, peer: str) -> dict[str, Any] | None:
        links = (node.status() or {}).get("links", [])
        return next((x for x in links if x["node_id"] == peer and x["state"] == "online"), None)

    def settle(self, nodes: dict[str, NetnsNode]) -> None:
        """Wait until every home node is private with a relay in its record."""
        for node in nodes.values():
            node.wait_ready(60)

        def ready() -> bool:
            return all(
                (n := self.nat(node)).get("reachability") == "private" and n.get("relays")
                for node in nodes.values()
            )

        if not wait_for(ready, SETTLE, step=0.5):
            states = {name: self.nat(node) for name, node in nodes.items()}
            raise SystemExit(f"home nodes did not become private with relays: {states}")


def dial(node: NetnsNode, target: str) -> tuple[float, dict[str, Any]]:
    """``connect`` over the control socket: (wall time at the request, its answer)."""
    started = time.time()
    answer = node.request("connect", 30.0, target=target)
    if not answer.get("ok", True) or "result" not in answer:
        raise RuntimeError(f"connect {target[:12]} from {node.name}: {answer}")
    return started, answer["result"]


def time_to_direct(
    bench: Bench, pairs: int
) -> tuple[list[float], list[float], int, int, list[dict]]:
    """Fresh pp-pp pairs, ROUND at a time: seconds from the dial to the direct link, seconds
    from the dial to the first (relayed) link (the DHT lookup, the circuit and the end-to-end
    handshake, as ``connect`` reports them), pairs that never went direct, pairs already
    linked before the dial (not timed)."""
    times: list[float] = []
    relayed: list[float] = []
    failed = already = 0
    notes: list[dict] = []
    done = 0
    round_no = 0
    while done < pairs:
        count = min(ROUND, pairs - done)
        left = [f"pa{round_no}x{i}" for i in range(count)]
        right = [f"pb{round_no}x{i}" for i in range(count)]
        ids = bench.homes(left + right, HOME_CONFIG)
        assert bench.boot is not None
        nodes = {
            **bench.start("a", left, [bench.boot.bootstrap]),
            **bench.start("b", right, [bench.boot.bootstrap]),
        }
        bench.settle(nodes)
        for a_name, b_name in zip(left, right, strict=True):
            a, target = nodes[a_name], ids[b_name]
            t0, answer = dial(a, target)
            if answer.get("already_linked"):
                already += 1
            else:
                relayed.append(
                    ((answer.get("resolve_ms") or 0.0) + (answer.get("handshake_ms") or 0.0)) / 1000
                )
            row = wait_for(
                lambda a=a, target=target: (
                    (x := bench.link(a, target)) is not None and x["path"] == "direct" and x
                ),
                PUNCH_WAIT,
                step=0.02,
            )
            seen = time.time()
            if not row:
                failed += 1
                notes.append({"pair": [a_name, b_name], "outcome": "relayed", "dial": answer})
                continue
            if answer.get("already_linked"):
                continue
            since = row.get("since") or row.get("connected_at")
            took = since - t0 if isinstance(since, (int, float)) and since - t0 > 0 else seen - t0
            times.append(took)
            log(f"  {a_name} -> {b_name}: direct after {took * 1000:.0f} ms")
        for node in nodes.values():
            node.stop()
        done += count
        round_no += 1
    return times, relayed, failed, already, notes


def punch_success(bench: Bench, kind: str, left_host: str, right_host: str, n: int) -> dict:
    """n fresh pairs between two hosts, dialled at once: how many end direct."""
    left = [f"{kind[:2]}l{i}" for i in range(n)]
    right = [f"{kind[:2]}r{i}" for i in range(n)]
    ids = bench.homes(left + right, HOME_CONFIG)
    assert bench.boot is not None
    nodes = {
        **bench.start(left_host, left, [bench.boot.bootstrap]),
        **bench.start(right_host, right, [bench.boot.bootstrap]),
    }
    bench.settle(nodes)
    for a_name, b_name in zip(left, right, strict=True):
        dial(nodes[a_name], ids[b_name])

    def direct() -> list[bool]:
        return [
            (x := bench.link(nodes[a], ids[b])) is not None and x["path"] == "direct"
            for a, b in zip(left, right, strict=True)
        ]

    wait_for(lambda: all(direct()), PUNCH_WAIT, step=0.5)
    outcome = direct()
    counters = {name: bench.nat(node) for name, node in nodes.items()}
    for node in nodes.values():
        node.stop()
    # the punch counters, when the node's status shows them (None: it does not)
    shown = [v["punch_attempts"] for v in counters.values() if "punch_attempts" in v]
    attempts = sum(shown) if shown else None
    return {"pairs": n, "direct": sum(outcome), "punch_attempts": attempts}


def relayed_beside_direct(bench: Bench) -> dict[str, Any]:
    """One pair on hosts e and f (port-preserving), the direct path blocked at e's router
    until the relayed figures are taken; then the direct ones."""
    net = bench.net
    rule = f"ip daddr {net.ip_of('rf')} drop"
    net.run_in("re", "nft", "insert", "rule", "inet", "qiznat", "forward", *rule.split())
    ids = bench.homes(["ex", "fx"], HOME_CONFIG)
    assert bench.boot is not None
    nodes = {
        **bench.start("e", ["ex"], [bench.boot.bootstrap]),
        **bench.start("f", ["fx"], [bench.boot.bootstrap]),
    }
    bench.settle(nodes)
    ex, target = nodes["ex"], ids["fx"]
    _t0, answer = dial(ex, target)
    result: dict[str, Any] = {"dial": answer}
    result["relayed"] = measure(ex, target)
    # unblock: a later punch attempt gets through
    listed = net.run_in("re", "nft", "-a", "list", "chain", "inet", "qiznat", "forward").stdout
    handle = next(
        line.rsplit("# handle ", 1)[1].strip()
        for line in listed.splitlines()
        if "daddr" in line and "# handle " in line
    )
    net.run_in("re", "nft", "delete", "rule", "inet", "qiznat", "forward", "handle", handle)
    row = wait_for(
        lambda: (x := bench.link(ex, target)) is not None and x["path"] == "direct" and x,
        PUNCH_WAIT,
        step=0.1,
    )
    result["direct"] = measure(ex, target) if row else None
    for node in nodes.values():
        node.stop()
    return result


def measure(node: NetnsNode, target: str) -> dict[str, Any]:
    pinged = node.request("ping", 60.0, target=target, count=PINGS)["result"]
    bulk = node.request(
        "bench_bulk",
        60.0,
        target=target,
        seconds=BULK_SECONDS,
        chunk=CHUNK,
        depth=DEPTH,
        max_bytes=BULK_BYTES,
    )["result"]
    rtts = sorted(pinged["rtt_ms"])
    return {
        "rtt_p50_ms": statistics.median(rtts),
        "rtt_p90_ms": percentile(rtts, 0.9),
        "mbit_s": bulk["mbit_s"],
        "path": bulk["path"],
        "path_after": bulk["still"],
        "bytes": bulk["bytes"],
    }


def run(quick: bool, busy_ok: bool, pairs: int) -> list[Figure]:
    load = check_quiet(busy_ok)
    reason = netns_unavailable()
    if reason is not None:
        raise SystemExit(reason)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="qiz-bench-nat-") as tmp, Topology() as net:
        work = Path(tmp)
        bench = Bench(net, work)
        for name in ("boot", "relay2"):
            net.public_host(name)
        home_networks(
            net,
            {
                "a": PORT_PRESERVING,
                "b": PORT_PRESERVING,
                "c": SYMMETRIC,
                "d": SYMMETRIC,
                "e": PORT_PRESERVING,
                "f": PORT_PRESERVING,
            },
        )
        bench.homes(["boot", "relay2"], PUBLIC_CONFIG)
        bench.boot = bench.start("boot", ["boot"], [])["boot"]
        bench.boot.wait_ready(60)
        relay2 = bench.start("relay2", ["relay2"], [bench.boot.bootstrap])["relay2"]
        relay2.wait_ready(60)

        log("relayed beside direct (hosts e, f) ...")
        side = relayed_beside_direct(bench)
        log(f"  {side['relayed']} / {side['direct']}")
        group = "NAT (namespaces)"
        for label, key in (("relayed", "relayed"), ("direct (punched)", "direct")):
            got = side[key]
            if got is None:
                log(f"  no {key} figures: the pair never went direct")
                continue
            extra = {"path_measured": got["path"], "rtt_p90_ms": round(got["rtt_p90_ms"], 3)}
            figures.append(
                Figure(
                    group,
                    f"RTT p50, {label} link, same hosts",
                    got["rtt_p50_ms"],
                    "ms",
                    extra=extra,
                )
            )
            figures.append(
                Figure(
                    group,
                    f"throughput, {label} link, same hosts",
                    got["mbit_s"],
                    "Mbit/s",
                    higher_is_better=True,
                    extra={"bytes": got["bytes"], "depth": DEPTH, "chunk": CHUNK},
                )
            )

        log(f"time to a direct link, {pairs} fresh pp-pp pairs ...")
        times, relayed, failed, already, notes = time_to_direct(bench, pairs)
        if relayed:
            figures.append(
                Figure(
                    group,
                    "first dial to relayed link (DHT lookup + circuit + handshake), median",
                    statistics.median(relayed),
                    "s",
                    extra={"timed": len(relayed), "max_s": round(max(relayed), 3)},
                )
            )
        if times:
            extra = {
                "pairs": pairs,
                "timed": len(times),
                "p90_s": round(percentile(sorted(times), 0.9), 3),
                "max_s": round(max(times), 3),
                "already_linked": already,
                "never_direct": failed,
            }
            figures.append(
                Figure(
                    group,
                    "first dial to direct link (pp-pp), median",
                    statistics.median(times),
                    "s",
                    extra=extra,
                )
            )
        success = {"pp-pp": {"pairs": pairs, "direct": pairs - failed}}
        if notes:
            log(f"  never direct: {notes}")
        n = 1 if quick else OTHER_PAIRS
        log(f"punch success, {n} pp-sym and {n} sym-sym pairs ...")
        success["pp-sym"] = punch_success(bench, "ps", "a", "c", n)
        success["sym-sym"] = punch_success(bench, "ss", "c", "d", n)
        for kind, got in success.items():
            figures.append(
                Figure(
                    group,
                    f"punch success {kind}",
                    100.0 * got["direct"] / got["pairs"],
                    "%",
                    higher_is_better=True,
                    extra={k: v for k, v in got.items() if k != "nat"},
                )
            )
    return emit_with_loads(figures, load, quick=quick)


def main() -> None:
    quick = "--quick" in sys.argv
    pairs = QUICK_PAIRS if quick else PAIRS
    if "--pairs" in sys.argv:
        pairs = int(sys.argv[sys.argv.index("--pairs") + 1])
    figures = run(quick, "--busy-ok" in sys.argv, pairs)
    print()
    print(f"## NAT traversal in namespaces ({machine()})\n")
    print(markdown_table(figures))
    loads = figures[0].extra if figures else {}
    print(
        f"\nLoad average (1 min) at the start {loads.get('load_average_1min')}, at the end "
        f"{loads.get('load_average_1min_end')}."
    )


if __name__ == "__main__":
    main()
