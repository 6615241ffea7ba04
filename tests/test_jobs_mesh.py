"""Jobs over a real mesh: 8 nodes on loopback, QMP links, the DHT, worker processes.

A 64-point QAOA sweep spread over the nodes equals a local run point for point; two workers
killed mid-sweep do not stop it; a worker returning wrong results is outvoted and its score
falls; bad specs are refused with clear errors; a submitter that goes offline collects its
results when it returns; resubmission is idempotent; unseeded sampling is checked by chi-square.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from qiz.compute import execute
from qiz.compute import spec as specs
from qiz.compute.attest import verify_file
from qiz.compute.errors import JobError
from qiz.compute.service import ComputeConfig
from qiz.compute.status import JobStatus
from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.qmp.rpc import RpcError
from qiz.resolve.dht import DhtConfig
from qiz.trust.scores import INITIAL

from .helpers import async_eventually, manager, run

MESH = 8


def make(
    peers: list[str] | None = None,
    *,
    identity: NodeIdentity | None = None,
    home: Path | None = None,
    listen: str = "127.0.0.1:0",
    api_port: int | None = None,
    **compute: Any,
) -> Node:
    return Node(
        identity or NodeIdentity.generate(),
        listen=listen,
        peers=peers,
        config=manager(),
        dht_config=DhtConfig(request_timeout=1.0),
        control_dir=home,
        compute=ComputeConfig(slots=1, poll_after=1.0, warm_up=False, **compute),
        # the node lost ``api_port`` (the HTTP face now starts through ``http=``): passed on
        # only when a caller still asks for it
        **({"api_port": api_port} if api_port is not None else {}),
    )


async def start_mesh(size: int, tmp: Path | None = None, **node: Any) -> list[Node]:
    if tmp:
        (tmp / "n0").mkdir()
    first = make(home=tmp / "n0" if tmp else None, **node)
    await first.start()
    nodes = [first]
    for i in range(1, size):
        home = None
        if tmp:
            home = tmp / f"n{i}"
            home.mkdir()
        other = make([first.address], home=home, **node)
        await other.start()
        nodes.append(other)
    await asyncio.gather(*(asyncio.wait_for(n.joined.wait(), 30) for n in nodes))
    for node in nodes:  # every capacity record is in the DHT before the first job
        await node.compute.publish_capacity()
    return nodes


async def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        if not node.stopped.is_set():
            await node.stop()


def qaoa_sweep(n: int = 10, points: int = 8, shard: int = 8, **extra: Any) -> dict:
    return {
        "kind": "sweep",
        "params": {
            "over": "qaoa",
            "base": {"graph": f"random:{n},3", "p": 1, "gammas": [0.0], "betas": [0.0]},
            "axes": {
                "gammas.0": [round(0.1 * i, 3) for i in range(points)],
                "betas.0": [round(0.05 * i, 3) for i in range(points)],
            },
            "shard": shard,
        },
        **extra,
    }


def local_points(raw: bytes) -> list:
    spec = specs.parse(raw)
    return [
        p for t in spec.tasks for p in execute.run_points(t.kind, t.params, t.points, spec.seed)
    ]


async def wait_final(node: Node, job: bytes, timeout: float = 120.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = node.compute.coordinator.status(job)
        if state.state != "running":
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"job did not finish: {node.compute.coordinator.status(job)}")


async def submit(node: Node, doc: dict) -> tuple[bytes, bytes]:
    raw = specs.sign(specs.make_body(doc, node.identity), node.identity)
    state = await node.compute.coordinator.submit(raw)
    return raw, state.job


def test_a_64_point_sweep_spread_over_8_nodes_equals_a_local_run_and_verifies() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(MESH)
        try:
            raw, job = await submit(nodes[0], qaoa_sweep())
            state = await wait_final(nodes[0], job)
            assert state.state == "done", state
            assert state.tasks == 8 and state.decided == 8
            workers = {str(r.worker) for r in state.replicas if r.state == "done"}
            assert len(workers) >= 6  # spread, not piled on the submitter
            verified = verify_file(nodes[0].compute.coordinator.result(job))
            points = [p for task in verified.results for p in task]
            assert len(points) == 64
            assert points == local_points(raw)  # point for point, bit for bit
            # resubmitting the same spec (signed again) names the same finished job
            again = specs.sign(specs.make_body(qaoa_sweep(), nodes[0].identity), nodes[0].identity)
            assert again != raw
            repeat = await nodes[0].compute.coordinator.submit(again)
            assert repeat.job == job and repeat.state == "done"
            assert len(repeat.replicas) == len(state.replicas)
            # scores rose for the agreeing workers
            scores = nodes[0].compute.scores.table()
            assert scores and all(row["score"] > INITIAL for row in scores)
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=180)


def test_two_workers_killed_mid_sweep_and_the_sweep_completes_correctly() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(MESH)
        try:
            # heavier points (18 qubits, p = 1) so that the kill lands while tasks run
            raw, job = await submit(nodes[0], qaoa_sweep(n=18, points=8, shard=4))
            victims: list[Node] = []
            deadline = time.monotonic() + 60
            while len(victims) < 2 and time.monotonic() < deadline:
                for node in nodes[1:]:
                    busy = node.compute.worker is not None and node.compute.worker.queue_length
                    if busy and node not in victims and len(victims) < 2:
                        victims.append(node)
                await asyncio.sleep(0.05)
            assert len(victims) == 2
            for node in victims:
                await node.stop()  # its worker processes are killed, its links drop
            state = await wait_final(nodes[0], job, timeout=180)
            assert state.state == "done", state
            lost = [r for r in state.replicas if r.state == "lost"]
            assert lost, "the killed workers' replicas were placed again"
            dead = {str(v.node_id) for v in victims}
            assert {str(r.worker) for r in lost} <= dead
            verified = verify_file(nodes[0].compute.coordinator.result(job))
            assert not dead & {str(w) for w in verified.workers}
            assert [p for t in verified.results for p in t] == local_points(raw)
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=300)


def test_a_worker_returning_wrong_results_is_outvoted_and_its_score_falls() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(MESH)
        liar = nodes[3]

        def corrupt(result: Any) -> Any:
            for point in result:
                point["expectation"] += 0.5
            return result

        liar.compute.worker.corrupt = corrupt
        try:
            raw, job = await submit(nodes[0], qaoa_sweep(points=8, shard=4))
            state = await wait_final(nodes[0], job)
            assert state.state == "done", state
            liar_id = str(liar.node_id)
            assert any(str(r.worker) == liar_id for r in state.replicas), "the liar got work"
            verified = verify_file(nodes[0].compute.coordinator.result(job))
            assert liar.node_id not in verified.workers
            assert [p for t in verified.results for p in t] == local_points(raw)
            scores = {row["peer"]: row for row in nodes[0].compute.scores.table()}
            assert scores[liar.node_id.digest]["score"] < INITIAL
            assert scores[liar.node_id.digest]["disagreed"] >= 1
            honest = [row for peer, row in scores.items() if peer != liar.node_id.digest]
            assert all(row["score"] > scores[liar.node_id.digest]["score"] for row in honest)
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=180)


def test_bad_specs_are_refused_with_clear_errors_and_nothing_runs() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(4)
        small = make([nodes[0].address], memory=16 << 20)  # 16 MiB: at most 18 qubits
        await small.start()
        await small.joined.wait()
        nodes.append(small)
        try:
            coordinator = nodes[0].compute.coordinator
            identity = nodes[0].identity
            body = specs.make_body(
                {"kind": "qaoa", "params": {"graph": "random:8,3", "p": 1}}, identity
            )
            from qiz import wire

            with pytest.raises(JobError, match="not signed"):
                await coordinator.submit(wire.encode(body))
            with pytest.raises(JobError, match=r"params\.p: must be a whole number"):
                await submit(nodes[0], {"kind": "qaoa", "params": {"graph": "random:8,3", "p": 0}})
            with pytest.raises(JobError, match="needs 32 qubits; the largest worker known takes"):
                await submit(nodes[0], {"kind": "qaoa", "params": {"graph": "random:32,3", "p": 1}})
            # a worker checks again, against its own memory: offered directly, it refuses
            raw = specs.sign(
                specs.make_body(
                    {"kind": "qaoa", "params": {"graph": "random:20,3", "p": 1}}, identity
                ),
                identity,
            )
            rpc = await nodes[0].connect(small.address, small.node_id)
            with pytest.raises(
                RpcError, match=r"refused: .*20 qubits; this node.s memory allows at most 18"
            ):
                await rpc.call("job.offer", {"spec": raw, "task": 0, "seed": 0})
            with pytest.raises(RpcError, match="refused: the spec's signature does not verify"):
                await rpc.call("job.offer", {"spec": raw[:-3] + bytes(3), "task": 0, "seed": 0})
            with pytest.raises(
                RpcError, match="seeded job's replicas must run with the spec's seed"
            ):
                ok = {"kind": "qaoa", "params": {"graph": "random:10,3", "p": 1}}
                await rpc.call(
                    "job.offer",
                    {
                        "spec": specs.sign(specs.make_body(ok, identity), identity),
                        "task": 0,
                        "seed": 5,
                    },
                )
            assert coordinator.list() == []
            assert small.compute.worker.counters["accepted"] == 0
            assert small.compute.worker.counters["refused"] >= 2
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=180)


def test_unseeded_sampling_is_checked_by_chi_square(tmp_path) -> None:
    async def scenario() -> None:
        nodes = await start_mesh(4)
        try:
            qasm = (
                'OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[3] c; '
                "ry(1.1) q[0]; cx q[0], q[1]; ry(0.4) q[2]; c = measure q;"
            )
            doc = {
                "kind": "sampler",
                "params": {"qasm": qasm, "shots": 4000},
                "replicas": 3,
                "quorum": 2,
            }
            raw, job = await submit(nodes[0], doc)
            assert specs.parse(raw).seed is None
            state = await wait_final(nodes[0], job)
            assert state.state == "done", state
            data = nodes[0].compute.coordinator.result(job)
            verified = verify_file(data)
            assert verified.tests == ("chi2",)
            counts = verified.results[0]["counts"]
            assert sum(counts.values()) == 4000 and set(counts) <= {f"{i:03b}" for i in range(8)}
            (tmp_path / "sampler.att").write_bytes(data)
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=180)


def test_a_submitter_that_goes_offline_collects_its_results_when_it_returns(tmp_path) -> None:
    async def scenario() -> None:
        nodes = await start_mesh(5, tmp_path)
        submitter = nodes[0]
        identity, home = submitter.identity, tmp_path / "n0"
        try:
            submitter.compute.worker.limits = specs.Limits(max_qubits=0)  # it only coordinates
            raw, job = await submit(submitter, qaoa_sweep(n=16, points=4, shard=4))
            await async_eventually(
                lambda: submitter.compute.coordinator.status(job).replicas,
                30,
                "the job's replicas to be placed",
            )
            await submitter.stop()
            # the workers finish while the submitter is away; their results wait for it
            workers = nodes[1:]

            def all_done() -> bool:
                rows = [r for n in workers for r in n.compute.worker.tables.all()]
                return bool(rows) and all(r.state == "done" for r in rows)

            await async_eventually(all_done, 60, "the workers to finish every replica")
            assert all(not r.delivered for n in workers for r in n.compute.worker.tables.all())
            back = make([nodes[1].address], identity=identity, home=home)
            nodes[0] = back
            await back.start()
            await back.joined.wait()
            state = await wait_final(back, job, timeout=60)
            assert state.state == "done", state
            verified = verify_file(back.compute.coordinator.result(job))
            assert [p for t in verified.results for p in t] == local_points(raw)
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=240)


def test_a_cancelled_job_stops_on_its_workers() -> None:
    async def scenario() -> None:
        nodes = await start_mesh(3)
        try:
            doc = {
                "kind": "grover",
                "params": {"qubits": 26, "marked": [7], "iterations": 4000},
                "replicas": 2,
            }
            _, job = await submit(nodes[0], doc)
            await async_eventually(
                lambda: any(n.compute.worker.queue_length for n in nodes[1:]),
                30,
                "a worker to queue the job",
            )
            state = await nodes[0].compute.coordinator.cancel(job)
            assert state.state == "cancelled"
            await async_eventually(
                lambda: not any(n.compute.worker.queue_length for n in nodes),
                10,
                "the workers to drop the cancelled job",
            )
            assert sum(n.compute.worker.counters["cancelled"] for n in nodes) >= 1
            with pytest.raises(JobError, match="is cancelled; it has no attested result"):
                nodes[0].compute.coordinator.result(job)
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=120)


def test_a_coordinator_that_lost_its_records_collects_results_announced_in_the_dht(
    tmp_path,
) -> None:
    async def scenario() -> None:
        nodes = await start_mesh(4, tmp_path)
        submitter = nodes[0]
        identity, home = submitter.identity, tmp_path / "n0"
        try:
            submitter.compute.worker.limits = specs.Limits(max_qubits=0)  # it only coordinates
            doc = qaoa_sweep(n=14, points=2, shard=4)
            raw, job = await submit(submitter, doc)
            await async_eventually(
                lambda: submitter.compute.coordinator.status(job).replicas,
                30,
                "the job's replicas to be placed",
            )
            await submitter.stop()

            def published(node: Node) -> bool:
                """The node's provider record for the job is out (not only decided on)."""
                events, _ = node.event_log.since(0)
                return any(
                    e["kind"] == "record.published"
                    and e.get("record_kind") == "provider"
                    and e.get("key") == job.hex()
                    for e in events
                )

            def announced() -> bool:  # done, delivery failed, provider record published
                holders = [n for n in nodes[1:] if n.compute.worker.tables.all()]
                rows = [r for n in holders for r in n.compute.worker.tables.all()]
                return (
                    bool(rows)
                    and all(r.state == "done" for r in rows)
                    and all(published(n) for n in holders)
                )

            await async_eventually(announced, 60, "every holder's provider record published")
            ran = sum(n.compute.worker.counters["done"] for n in nodes[1:])
            for name in ("jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"):
                (home / name).unlink(missing_ok=True)  # the coordinator forgets everything
            back = make([nodes[1].address], identity=identity, home=home)
            nodes[0] = back
            await back.start()
            await back.joined.wait()
            back.compute.worker.limits = specs.Limits(max_qubits=0)
            again = specs.sign(specs.make_body(doc, identity), identity)
            state = await back.compute.coordinator.submit(again)
            assert state.job == job
            state = await wait_final(back, job, timeout=60)
            assert state.state == "done", state
            # the holder found through the DHT gives its result without running again; the
            # quorum's other replica runs again only if placed where nothing waited (one task)
            assert sum(n.compute.worker.counters["done"] for n in nodes[1:]) - ran <= 1
            events, _ = back.event_log.since(0)
            assert any(e["kind"] == "replica.collected" for e in events)  # found through the DHT
            verified = verify_file(back.compute.coordinator.result(job))
            assert [p for t in verified.results for p in t] == local_points(raw)
        finally:
            await stop_all(nodes)

    run(scenario(), timeout=240)
