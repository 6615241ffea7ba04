"""A real DHT mesh spread over processes, as real nodes would be: 50 nodes on loopback in 5
processes of 10 (``bench/dht.py`` runs its mesh in one process, so every node there shares one
event loop and a resolve waits behind the other nodes' work).

Each process starts its nodes (the first process's first node is everyone's bootstrap peer) and
reports their ids; once all have joined and the tables settled, the parent hands out resolves
one block at a time, so that exactly one resolve is in flight in the mesh (latency, not
throughput), sources and targets chosen as ``bench/dht.py`` chooses them. Each resolve is a
full d=4 value lookup over QMP (``resolve_peer(..., use_cache=False)``), timed in the process
that makes it; the record found must be the target's.

A busy machine makes these figures noise: a full run is refused when the 1-minute load average
is over ``MAX_LOAD`` (``--busy-ok`` measures anyway and says so; ``--quick`` never refuses).

    python bench/dht_procs.py [--quick] [--busy-ok]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    MAX_LOAD,  # noqa: F401 - the refusal threshold, as its docstring says
    Figure,
    check_quiet,
    machine,
    markdown_table,
    percentile,
)

SETTLE = 1.0  # seconds after every node joined, before the first resolve


# ----------------------------------------------------------------------------- worker


async def worker(count: int, boot: str | None) -> None:
    """Run ``count`` nodes; obey JSON lines on stdin; answer JSON lines on stdout."""
    from qiz.crypto.ids import NodeId
    from qiz.identity import NodeIdentity
    from qiz.node import Node
    from qiz.resolve.dht import DhtConfig

    loop = asyncio.get_running_loop()
    config = DhtConfig(request_timeout=2.0)
    nodes: list[Node] = []
    if boot is None:
        first = Node(NodeIdentity.generate(), dht_config=config)
        await first.start()
        nodes.append(first)
        boot = first.address
    while len(nodes) < count:
        node = Node(NodeIdentity.generate(), peers=[boot], dht_config=config)
        await node.start()
        nodes.append(node)
    await asyncio.gather(*(n.joined.wait() for n in nodes))
    say({"ready": [str(n.node_id) for n in nodes], "boot": boot})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            order = json.loads(line)
            if "stop" in order:
                break
            latencies = []
            cpu0 = time.process_time()
            for index, target in order["resolve"]:
                node_id = NodeId.parse(target)
                start = time.perf_counter()
                record = await nodes[index].dht.resolve_peer(node_id, use_cache=False)
                latencies.append(time.perf_counter() - start)
                if record.node_id != node_id:
                    raise SystemExit(f"resolve of {target} found {record.node_id}")
            say({"latencies": latencies, "cpu": time.process_time() - cpu0})
    finally:
        for node in nodes:
            await node.stop()


def say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- parent


class Worker:
    def __init__(self, count: int, boot: str | None) -> None:
        args = [sys.executable, __file__, "--worker", str(count)] + ([boot] if boot else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ids: list[str] = []
        self.boot = ""

    def read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a mesh worker exited (status {self.proc.wait()})")
        return json.loads(line)

    def ready(self) -> None:
        message = self.read()
        self.ids, self.boot = message["ready"], message["boot"]

    def send(self, message: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()


def mesh(processes: int, per_process: int, resolves: int) -> tuple[list[float], float]:
    """Latencies of ``resolves`` resolves, and the resolving processes' CPU per resolve."""
    workers = [Worker(per_process, None)]
    try:
        workers[0].ready()
        boot = workers[0].boot
        workers += [Worker(per_process, boot) for _ in range(processes - 1)]
        for w in workers[1:]:
            w.ready()
        time.sleep(SETTLE)
        everyone = [(w, i, node_id) for w in workers for i, node_id in enumerate(w.ids)]
        size = len(everyone)
        # sources and targets as bench/dht.py picks them; consecutive resolves from one
        # process go out as one block, and only one block runs at a time
        blocks: list[tuple[Worker, list]] = []
        for i in range(resolves):
            src, dst = everyone[i % size], everyone[(i * 7 + 3) % size]
            if src is dst:
                continue
            if not blocks or blocks[-1][0] is not src[0]:
                blocks.append((src[0], []))
            blocks[-1][1].append([src[1], dst[2]])
        latencies: list[float] = []
        cpu = 0.0
        for w, block in blocks:
            w.send({"resolve": block})
            answer = w.read()
            latencies += answer["latencies"]
            cpu += answer["cpu"]
        for w in workers:
            w.send({"stop": True})
        for w in workers:
            w.proc.wait(timeout=30)
        return latencies, cpu / len(latencies)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()


def run(quick: bool = False, busy_ok: bool = True) -> list[Figure]:
    load = check_quiet(quick, busy_ok)
    processes, per_process = (5, 4) if quick else (5, 10)
    latencies, cpu = mesh(processes, per_process, 200 if quick else 1000)
    group = f"real DHT on loopback, {processes * per_process} nodes in {processes} processes"
    figures = [
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
        Figure(group, "resolving process CPU per resolve", cpu * 1000, "ms"),
    ]
    end_load = os.getloadavg()[0]
    for f in figures:
        f.extra.update(
            resolves=len(latencies),
            load_average_1min=round(load, 2),
            load_average_1min_end=round(end_load, 2),
        )
        f.emit()
    return figures


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        asyncio.run(worker(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
        return
    figures = run("--quick" in sys.argv, busy_ok="--busy-ok" in sys.argv)
    print()
    print(f"## DHT mesh over processes ({machine()})\n")
    print(markdown_table(figures))
    extra = figures[0].extra
    print(
        f"\nLoad average (1 min) at the start {extra['load_average_1min']}, "
        f"at the end {extra['load_average_1min_end']}"
    )


if __name__ == "__main__":
    main()
