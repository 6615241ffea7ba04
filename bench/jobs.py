"""Jobs benchmark: scheduling overhead, tiny-job throughput, a CPU-heavy sweep, placement solvers.

    python bench/jobs.py [--quick]

* **Scheduling overhead per job**: on an 8-node loopback mesh (nodes in this process, each with
  one worker process), the coordinator's time from a signed spec to every replica offered
  (parse and check, placement, offers over QMP), median over many one-task jobs. The issue's
  target is 5 ms.
* **Tiny-job throughput**: 8-node mesh against running the same jobs locally, in this process,
  one after the other. Every job's attested result must equal the local one.
* **CPU-heavy sweep**: one QAOA sweep on a mesh of worker processes against one process
  (numba on one thread, as a worker runs). This machine has 2 cores: 2x is the ceiling.
* **Placement**: each solver (greedy, annealing, exact, QAOA) on random instances: makespan over
  the exact optimum and solve time.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Figure, machine, markdown_table, median
from qiz.compute import execute
from qiz.compute import spec as specs
from qiz.compute.attest import verify_file
from qiz.compute.placement import Item, PlacementError, PlacementProblem, WorkerInfo, solve
from qiz.compute.service import ComputeConfig
from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.qmp.manager import ManagerConfig
from qiz.resolve.dht import DhtConfig

TARGET_OVERHEAD = 0.005


async def start_mesh(size: int, slots: int = 1) -> list[Node]:
    def make(peers: list[str] | None = None) -> Node:
        return Node(
            NodeIdentity.generate(),
            peers=peers,
            config=ManagerConfig(),
            dht_config=DhtConfig(request_timeout=1.0),
            compute=ComputeConfig(slots=slots, poll_after=5.0),
        )

    first = make()
    await first.start()
    nodes = [first]
    for _ in range(size - 1):
        node = make([first.address])
        await node.start()
        nodes.append(node)
    await asyncio.gather(*(n.joined.wait() for n in nodes))
    for node in nodes:
        await node.compute.publish_capacity()
    deadline = time.monotonic() + 120
    while not all(n.compute.pool.ready for n in nodes):  # imports and kernel warm-up done
        if time.monotonic() > deadline:
            raise RuntimeError("the worker processes did not start")
        await asyncio.sleep(0.1)
    return nodes


def tiny(i: int) -> dict:
    return {"kind": "grover", "params": {"qubits": 4, "marked": [i % 16], "shots": 64}, "seed": i}


async def wait_done(node: Node, jobs: list[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    coordinator = node.compute.coordinator
    while time.monotonic() < deadline:
        if all(coordinator.status(j).state != "running" for j in jobs):
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("jobs did not finish")


async def mesh_part(quick: bool) -> list[Figure]:
    figures: list[Figure] = []
    nodes = await start_mesh(8)
    try:
        submitter = nodes[0]
        coordinator = submitter.compute.coordinator
        identity = submitter.identity
        # scheduling overhead: one job at a time, measured inside the coordinator
        count = 30 if quick else 100
        walls = []
        coordinator.schedule_seconds.clear()
        for i in range(count):
            raw = specs.sign(
                specs.make_body({**tiny(10_000 + i), "replicas": 1}, identity), identity
            )
            began = time.perf_counter()
            state = await coordinator.submit(raw)
            walls.append(time.perf_counter() - began)
            await wait_done(submitter, [state.job])
        placement = median(coordinator.schedule_seconds)
        figures.append(
            Figure(
                "jobs",
                "scheduling overhead per job (placement + offer)",
                placement * 1000,
                "ms",
                TARGET_OVERHEAD * 1000,
                "<= 5 ms (issue)",
                extra={"jobs": count},
            )
        )
        figures.append(
            Figure(
                "jobs",
                "submit call per job (check spec + placement + offer)",
                median(walls) * 1000,
                "ms",
                TARGET_OVERHEAD * 1000,
                "<= 5 ms (issue)",
                extra={"jobs": count},
            )
        )
        # throughput: many tiny jobs at once, replicas 1 and 2
        n_jobs = 60 if quick else 200
        local_started = time.perf_counter()
        local = [execute.run("grover", tiny(i)["params"], tiny(i)["seed"]) for i in range(n_jobs)]
        local_rate = n_jobs / (time.perf_counter() - local_started)
        figures.append(
            Figure(
                "jobs",
                "tiny jobs, one process, locally",
                local_rate,
                "jobs/s",
                higher_is_better=True,
            )
        )
        for replicas in (1, 2):
            raws = [
                specs.sign(specs.make_body({**tiny(i), "replicas": replicas}, identity), identity)
                for i in range(n_jobs)
            ]
            began = time.perf_counter()
            states = await asyncio.gather(*(coordinator.submit(raw) for raw in raws))
            jobs = [s.job for s in states]
            await wait_done(submitter, jobs)
            rate = n_jobs / (time.perf_counter() - began)
            for i, job in enumerate(jobs):
                results = verify_file(coordinator.result(job)).results
                if results[0] != local[i]:
                    raise RuntimeError(f"job {i}: the mesh's result differs from the local one")
            figures.append(
                Figure(
                    "jobs",
                    f"tiny jobs on 8 nodes, {replicas} replica(s), attested",
                    rate,
                    "jobs/s",
                    higher_is_better=True,
                    extra={"vs_local": rate / local_rate, "jobs": n_jobs},
                )
            )
    finally:
        for node in nodes:
            await node.stop()
    return figures


async def heavy_part(quick: bool) -> list[Figure]:
    n, points = (20, 8) if quick else (22, 16)
    doc = {
        "kind": "sweep",
        "params": {
            "over": "qaoa",
            "base": {"graph": f"random:{n},3", "p": 2, "gammas": [0.2, 0.4], "betas": [0.3, 0.1]},
            "axes": {"gammas.0": [round(0.05 * i, 3) for i in range(points)]},
            "shard": 1,
        },
        "replicas": 1,
    }
    identity = NodeIdentity.generate()
    raw = specs.sign(specs.make_body(doc, identity), identity)
    spec = specs.parse(raw)
    # one process, one numba thread: what one worker process does (its own interpreter)
    script = (
        "import sys,time; sys.path.insert(0, '.');"
        "from qiz.compute import spec as s, execute as e;"
        f"p=s.parse(bytes.fromhex('{raw.hex()}'));"
        "e.warm_up();"  # as a worker process does when it starts
        "t=time.perf_counter();"
        "r=[x for k in p.tasks for x in e.run_points(k.kind,k.params,k.points,p.seed)];"
        "print(time.perf_counter()-t)"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=str(Path(__file__).resolve().parent.parent),
        env={**os.environ, "NUMBA_NUM_THREADS": "1"},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    one_process = float(out.decode().strip().splitlines()[-1])
    local = [
        x for t in spec.tasks for x in execute.run_points(t.kind, t.params, t.points, spec.seed)
    ]
    figures = [
        Figure("sweep", f"QAOA sweep {points} points, n={n}, p=2: one process", one_process, "s")
    ]
    for workers in (2, 4):
        nodes = await start_mesh(workers)
        try:
            coordinator = nodes[0].compute.coordinator
            began = time.perf_counter()
            state = await coordinator.submit(raw)
            job = state.job
            await wait_done(nodes[0], [job])
            seconds = time.perf_counter() - began
            results = [x for t in verify_file(coordinator.result(job)).results for x in t]
            if results != local:
                raise RuntimeError("the mesh's sweep differs from the local run")
            await coordinator.submit(raw)  # idempotent: the same job, not a second run
        finally:
            for node in nodes:
                await node.stop()
        figures.append(
            Figure(
                "sweep",
                f"same sweep on {workers} nodes x 1 worker process",
                seconds,
                "s",
                extra={
                    "speedup": one_process / seconds,
                    "ceiling": min(workers, os.cpu_count() or 1),
                },
            )
        )
    return figures


def placement_part(quick: bool) -> list[Figure]:
    rng = random.Random(1)
    figures: list[Figure] = []
    sizes = {
        "small (4 replicas x 3 workers)": (2, 2, 3, 20 if quick else 40),
        "medium (16 replicas x 6 workers)": (8, 2, 6, 5 if quick else 20),
    }
    for label, (tasks, replicas, workers, instances) in sizes.items():
        ratios: dict[str, list[float]] = {}
        times: dict[str, list[float]] = {}
        for _ in range(instances):
            items = tuple(
                Item(t, rng.uniform(0.5, 10), 8) for t in range(tasks) for _ in range(replicas)
            )
            ws = tuple(
                WorkerInfo(
                    rng.choice([1, 2]),
                    10,
                    rng.uniform(0, 5),
                    rng.uniform(0, 0.05),
                    rng.uniform(0.5, 1),
                )
                for _ in range(workers)
            )
            problem = PlacementProblem(items, ws)
            try:
                exact = solve(problem, "exact")
            except PlacementError:
                continue
            for method in ("greedy", "annealing", "exact", "qaoa"):
                try:
                    placement = (
                        exact
                        if method == "exact"
                        else solve(problem, method, seed=rng.randrange(1000))
                    )
                except PlacementError:
                    continue  # QAOA: too many variables for a simulated quantum solve
                ratios.setdefault(method, []).append(placement.makespan / exact.makespan)
                times.setdefault(method, []).append(placement.seconds)
        for method, values in ratios.items():
            figures.append(
                Figure(
                    "placement",
                    f"{label}: {method}, makespan / optimum (mean)",
                    statistics.mean(values),
                    "x",
                    extra={
                        "worst": max(values),
                        "solve_ms_median": median(times[method]) * 1000,
                        "instances": len(ratios[method]),
                    },
                )
            )
    return figures


def run(quick: bool = False) -> list[Figure]:
    figures = asyncio.run(mesh_part(quick))
    figures += asyncio.run(heavy_part(quick))
    figures += placement_part(quick)
    for f in figures:
        f.emit()
    return figures


def markdown(figures: list[Figure]) -> str:
    lines = [
        markdown_table([f for f in figures if f.group != "placement"]),
        "",
        "| placement instance and solver | makespan / optimum, mean | worst "
        "| solve time (median) |",
        "|---|---:|---:|---:|",
    ]
    for f in figures:
        if f.group == "placement":
            lines.append(
                f"| {f.name.split(', makespan')[0]} | {f.value:.4f} | {f.extra['worst']:.4f} | "
                f"{f.extra['solve_ms_median']:.3f} ms |"
            )
    extras = [f for f in figures if "vs_local" in f.extra or "speedup" in f.extra]
    lines.append("")
    for f in extras:
        if "vs_local" in f.extra:
            lines.append(f"- {f.name}: {f.extra['vs_local']:.2f}x the local rate")
        else:
            lines.append(
                f"- {f.name}: {f.extra['speedup']:.2f}x one process "
                f"(ceiling {f.extra['ceiling']}x: the cores)"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    figures = run("--quick" in sys.argv)
    print()
    print(f"jobs on {machine()}")
    print(markdown(figures))


if __name__ == "__main__":
    main()
