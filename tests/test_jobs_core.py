"""The compute layer's pure parts: specs, kinds, quorum and the chi-square test, placement,
attestations; and the worker process pool (real processes)."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from qiz import wire
from qiz.compute import core as jobcore
from qiz.compute import execute, quorum, results
from qiz.compute import spec as specs
from qiz.compute.actions import (
    CancelAt,
    Emit,
    Fetch,
    Forget,
    JobFailed,
    JobFinished,
    Offer,
)
from qiz.compute.attest import Claim, check_claim, make_attestation, verify_file
from qiz.compute.core import (
    EXTRA_ATTEMPTS,
    STRAGGLER_FLOOR,
    JobCore,
    WorkerView,
)
from qiz.compute.errors import AttestationError, SpecError, TaskFailed
from qiz.compute.jobdb import CoordinatorTables, open_db
from qiz.compute.placement import (
    METHODS,
    Item,
    PlacementError,
    PlacementProblem,
    WorkerInfo,
    solve,
)
from qiz.compute.pool import WorkerPool
from qiz.compute.quorum import ALPHA, Replica, chi2_homogeneity, decide, result_digest
from qiz.compute.status import CUT_TEXT, job_status, spec_summary
from qiz.events import EventKind
from qiz.identity import NodeIdentity
from qiz.quantum.algorithms.qaoa import QaoaSimulator
from qiz.quantum.problems.graphs import random_regular
from qiz.quantum.problems.qubo import QuboProblem
from qiz.sim.jobs import sim_check_claim, sim_claim, sim_spec
from qiz.trust.scores import INITIAL, PeerScores

from .helpers import async_eventually, run

BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
    "h q[0]; cx q[0], q[1]; c = measure q;"
)


@pytest.fixture(scope="module")
def carol() -> NodeIdentity:
    return NodeIdentity.generate()


def sweep_doc(n: int = 8, points: int = 4, shard: int = 2) -> dict:
    return {
        "kind": "sweep",
        "params": {
            "over": "qaoa",
            "base": {"graph": f"random:{n},3", "p": 1, "gammas": [0.0], "betas": [0.0]},
            "axes": {
                "gammas.0": [0.1 * i for i in range(points)],
                "betas.0": [0.2 + 0.1 * i for i in range(points)],
            },
            "shard": shard,
        },
    }


def signed(doc: dict, who: NodeIdentity) -> bytes:
    return specs.sign(specs.make_body(doc, who), who)


# ----------------------------------------------------------------------------- specs


def test_spec_round_trip_and_the_job_id_ignores_the_randomised_signature(alice) -> None:
    raw1, raw2 = signed(sweep_doc(), alice), signed(sweep_doc(), alice)
    assert raw1 != raw2  # ML-DSA signatures are randomised
    a, b = specs.parse(raw1), specs.parse(raw2)
    assert a.job_id == b.job_id and a.submitter == alice.node_id
    assert len(a.tasks) == 8 and all(len(t.points) == 2 for t in a.tasks)
    assert a.seed == 0 and a.replicas == 2 and a.quorum == 2
    # the last axis (canonical order: gammas.0 after betas.0) varies fastest
    assert a.tasks[0].points[0] == {"betas.0": 0.2, "gammas.0": 0.0}
    assert a.tasks[0].points[1] == {"betas.0": 0.2, "gammas.0": 0.1}


def test_two_submitters_of_the_same_spec_have_different_jobs(alice, bob) -> None:
    assert (
        specs.parse(signed(sweep_doc(), alice)).job_id
        != specs.parse(signed(sweep_doc(), bob)).job_id
    )


def test_unsigned_and_altered_specs_are_refused(alice) -> None:
    body = specs.make_body(sweep_doc(), alice)
    with pytest.raises(SpecError, match="not signed"):
        specs.parse(wire.encode(body))
    envelope = wire.decode(signed(sweep_doc(), alice))
    changed = wire.decode(envelope["body"])
    changed["replicas"] = 1
    changed["quorum"] = 1
    forged = wire.encode({"body": wire.encode(changed), "sig": envelope["sig"]})
    with pytest.raises(SpecError, match="signature does not verify"):
        specs.parse(forged)
    with pytest.raises(SpecError, match="byte string"):
        specs.parse("not bytes")


@given(st.data())
def test_no_single_byte_change_yields_another_valid_spec(alice, data) -> None:
    raw = bytearray(signed({"kind": "grover", "params": {"qubits": 3, "marked": [5]}}, alice))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SpecError):
        specs.parse(bytes(raw))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_spec_errors(data) -> None:
    with pytest.raises(SpecError):
        specs.parse(data)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "teleport", "params": {}}, "kind: 'teleport' is not one of"),
        ({"kind": "qaoa", "params": {"graph": "random:8,3"}}, r"params.p: is required"),
        (
            {"kind": "qaoa", "params": {"graph": "random:8,3", "p": 1, "colour": 1}},
            "params.colour: is not a qaoa field",
        ),
        (
            {"kind": "qaoa", "params": {"graph": "random:7,3", "p": 1}},
            "no 3-regular graph on 7 nodes",
        ),
        (
            {"kind": "qaoa", "params": {"graph": "random:8,3", "p": 1, "gammas": [0.1]}},
            "give both gammas and betas",
        ),
        (
            {"kind": "sampler", "params": {"qasm": "OPENQASM 3.0; qubit[2] q; h q[5];"}},
            r"params.qasm: .*line 1",
        ),
        (
            {"kind": "sampler", "params": {"qasm": BELL, "shots": 10**8}},
            "params.shots: must be a whole number from 1 to 1000000",
        ),
        ({"kind": "sampler", "params": {"qasm": BELL}, "seed": -1}, "seed: must be"),
        (
            {"kind": "grover", "params": {"qubits": 3, "marked": [9]}},
            r"params.marked\[0\]: must be an index",
        ),
        ({"kind": "vqe", "params": {"hamiltonian": "tfim:4", "ansatz": "hea:x"}}, "params.ansatz"),
        (
            {"kind": "vqe", "params": {"hamiltonian": "tfim:4"}, "seed": None},
            "only for sampler and grover",
        ),
        (
            {"kind": "qaoa", "params": {"graph": "random:8,3", "p": 1}, "replicas": 2, "quorum": 3},
            "quorum: must be a whole number from 1 to 2",
        ),
        (
            {"kind": "qaoa", "params": {"graph": "random:8,3", "p": 1}, "replicas": 99},
            "replicas: must be",
        ),
        (
            {"kind": "qaoa", "params": {"graph": "random:8,3", "p": 1}, "priority": 9},
            "priority: not a job spec field",
        ),
        (
            {
                "kind": "estimator",
                "params": {
                    "qasm": BELL.replace(" c = measure q;", "").replace(" bit[2] c;", ""),
                    "observables": ["1.0 ZZZ"],
                },
            },
            "acts on 3 qubits; the circuit has 2",
        ),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(alice, doc, message) -> None:
    with pytest.raises(SpecError, match=message):
        specs.parse(signed(doc, alice))


def test_limits_refuse_oversized_work(alice) -> None:
    big = {"kind": "qaoa", "params": {"graph": "random:24,3", "p": 1}}
    with pytest.raises(SpecError, match="24 qubits; this node's memory allows at most 20"):
        specs.parse(signed(big, alice), specs.Limits(max_qubits=20))
    with pytest.raises(SpecError, match="bytes; this node takes at most 1000"):
        specs.parse(signed(sweep_doc(), alice), specs.Limits(max_spec_bytes=1000))
    many = sweep_doc(points=70)
    with pytest.raises(SpecError, match="more than 4096 points"):
        specs.parse(signed(many, alice))
    with pytest.raises(SpecError, match="units of work"):
        specs.parse(signed(sweep_doc(), alice), specs.Limits(max_work=10.0))
    nan = sweep_doc()
    nan["params"]["axes"]["gammas.0"][0] = float("nan")
    with pytest.raises(SpecError, match="finite"):
        specs.make_body(nan, alice)


def test_a_sweep_axis_must_name_a_parameter(alice) -> None:
    doc = sweep_doc()
    doc["params"]["axes"] = {"gammas.3": [0.1]}
    with pytest.raises(SpecError, match=r"axes\.gammas\.3"):
        specs.parse(signed(doc, alice))


# ----------------------------------------------------------------------------- kinds


def test_a_qaoa_point_equals_the_simulator_and_results_are_canonical() -> None:
    g = random_regular(10, 3, 0)
    sim = QaoaSimulator(QuboProblem.maxcut(g.num_nodes, g.edges, g.weights))
    expected = sim.expectation([0.3], [0.2])
    result = execute.run(
        "qaoa", {"graph": "random:10,3", "p": 1, "gammas": [0.3], "betas": [0.2]}, 0
    )
    assert result == {"expectation": float(f"{expected:.12g}")}
    assert execute.canonical({"a": [1 / 3, 2.0, "x"]}) == {"a": [0.333333333333, 2.0, "x"]}


def test_sampler_results_repeat_with_a_seed() -> None:
    params = {"qasm": BELL, "shots": 500}
    a, b = execute.run("sampler", params, 7), execute.run("sampler", params, 7)
    assert a == b and set(a["counts"]) == {"00", "11"} and sum(a["counts"].values()) == 500


# ----------------------------------------------------------------------------- quorum


def _replica(result, worker: bytes = b"w", seed=0) -> Replica:
    return Replica(worker, b"k", seed, execute.ENGINE, result, result_digest(result), b"s")


def test_exact_quorum_outvotes_a_wrong_result() -> None:
    good, bad = {"expectation": 1.5}, {"expectation": 1.25}
    decision = decide([_replica(good, b"a"), _replica(bad, b"b"), _replica(good, b"c")], 2, False)
    assert decision is not None and decision.accepted.result == good
    assert [r.worker for r in decision.disagreeing] == [b"b"]
    assert decide([_replica(good, b"a"), _replica(bad, b"b")], 2, False) is None


def test_chi2_accepts_samples_of_one_distribution_and_rejects_different_ones() -> None:
    rng = np.random.default_rng(1)
    probs = np.array([0.5, 0.3, 0.15, 0.05])

    def counts(p: np.ndarray, n: int = 4000) -> dict[str, int]:
        sample = rng.multinomial(n, p)
        return {format(i, "02b"): int(c) for i, c in enumerate(sample) if c}

    same = [chi2_homogeneity(counts(probs), counts(probs)) for _ in range(200)]
    assert sum(p < ALPHA for p in same) <= 2  # false alarms at about ALPHA
    shifted = np.array([0.45, 0.35, 0.15, 0.05])
    assert chi2_homogeneity(counts(probs), counts(shifted)) < ALPHA
    assert chi2_homogeneity({"0": 10}, {"0": 10}) == 1.0


def test_sampled_quorum_groups_consistent_replicas() -> None:
    rng = np.random.default_rng(3)

    def run_once(p: float) -> dict:
        ones = int(rng.binomial(2000, p))
        return {"counts": {"0": 2000 - ones, "1": ones}, "shots": 2000}

    replicas = [
        _replica(run_once(0.5), b"a", 1),
        _replica(run_once(0.5), b"b", 2),
        _replica(run_once(0.8), b"c", 3),
    ]
    decision = decide(replicas, 2, True)
    assert decision is not None and decision.test == "chi2"
    assert {r.worker for r in decision.agreeing} == {b"a", b"b"}
    assert [r.worker for r in decision.disagreeing] == [b"c"]
    assert decision.p_value is not None and decision.p_value >= ALPHA


# ----------------------------------------------------------------------------- placement


def random_problem(
    rng: random.Random, items: int, workers: int, replicas: int = 1
) -> PlacementProblem:
    its = tuple(
        Item(t, rng.uniform(1, 10), rng.choice([4, 8]))
        for t in range(items)
        for _ in range(replicas)
    )
    ws = tuple(
        WorkerInfo(
            rng.choice([1, 2]),
            10 if w < replicas else rng.choice([6, 10]),  # feasible: enough big workers
            rng.uniform(0, 4),
            rng.uniform(0, 0.5),
            rng.uniform(0.3, 1),
        )
        for w in range(workers)
    )
    return PlacementProblem(its, ws)


def brute_force(problem: PlacementProblem) -> float:
    best = float("inf")
    for assignment in itertools.product(range(len(problem.workers)), repeat=len(problem.items)):
        if problem.valid(assignment):
            best = min(best, problem.makespan(assignment))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_every_solver_gives_valid_placements_and_exact_is_optimal(seed) -> None:
    rng = random.Random(seed)
    problem = random_problem(rng, 2, 3, replicas=2)  # 12 QUBO variables for QAOA
    optimum = brute_force(problem)
    results = {m: solve(problem, m, seed=seed) for m in METHODS}
    for method, placement in results.items():
        assert problem.valid(placement.assignment), method
        assert placement.makespan >= optimum - 1e-9, method
    assert results["exact"].makespan == pytest.approx(optimum)
    assert results["exact"].optimal
    assert results["annealing"].makespan <= results["greedy"].makespan + 1e-9


def test_greedy_and_annealing_scale_and_stay_valid() -> None:
    problem = random_problem(random.Random(9), 40, 8, replicas=2)
    for method in ("greedy", "annealing"):
        placement = solve(problem, method)
        assert problem.valid(placement.assignment)


def test_placement_refuses_what_cannot_be_placed() -> None:
    ws = (WorkerInfo(1, 10), WorkerInfo(1, 4))
    with pytest.raises(PlacementError, match="needs 8 qubits on a distinct worker"):
        solve(PlacementProblem((Item(0, 1.0, 8), Item(0, 1.0, 8)), ws))
    with pytest.raises(PlacementError, match="at most 16 variables"):
        solve(PlacementProblem(tuple(Item(i, 1.0, 2) for i in range(9)), ws), "qaoa")
    with pytest.raises(PlacementError, match="unknown placement method"):
        solve(PlacementProblem((Item(0, 1.0, 2),), ws), "oracle")


def test_a_low_score_worker_gets_less_work() -> None:
    ws = (WorkerInfo(1, 10, score=1.0), WorkerInfo(1, 10, score=0.1))
    items = tuple(Item(i, 1.0, 2) for i in range(10))
    placement = solve(PlacementProblem(items, ws), "exact")
    assert placement.assignment.count(1) < placement.assignment.count(0)


# ----------------------------------------------------------------------------- attestations


def _attested(alice, bob, carol, *, sampled: bool = False) -> bytes:
    doc = sweep_doc(points=2, shard=2)
    spec = specs.parse(signed(doc, alice))
    decisions = []
    for task in spec.tasks:
        result = execute.run_points(task.kind, task.params, task.points, spec.seed)
        digest = result_digest(result)
        replicas = [
            Replica(
                w.node_id.digest,
                w.public_key.raw,
                0,
                execute.ENGINE,
                result,
                digest,
                Claim(spec.job_id, task.index, 0, execute.ENGINE, digest).sign(w),
            )
            for w in (bob, carol)
        ]
        decision = decide(replicas, 2, sampled)
        assert decision is not None
        decisions.append(decision)
    return make_attestation(alice, spec, decisions, execute.ENGINE, 1.7e9)


def test_an_attestation_verifies_offline(alice, bob, carol) -> None:
    verified = verify_file(_attested(alice, bob, carol))
    assert verified.coordinator == alice.node_id
    assert set(verified.workers) == {bob.node_id, carol.node_id}
    assert len(verified.results) == 2 and verified.tests == ("exact", "exact")


def _tamper(data: bytes, change) -> bytes:
    outer = wire.decode(data)
    body = wire.decode(outer["attestation"]["body"])
    change(outer, body)
    outer["attestation"]["body"] = wire.encode(body)
    return wire.encode(outer)


def test_tampered_attestations_fail(alice, bob, carol) -> None:
    good = _attested(alice, bob, carol)

    def result(outer, body):
        outer["results"][0][0]["expectation"] += 1.0

    def drop_claim(outer, body):
        body["tasks"][0]["claims"].pop()

    cases = {
        "the results do not match": result,
        "coordinator's signature does not verify": lambda o, b: b.__setitem__("quorum", 1),
        "coordinator's signature does not verify ": drop_claim,
    }
    for message, change in cases.items():
        with pytest.raises(AttestationError, match=message.strip()):
            verify_file(_tamper(good, change))
    # re-signed by the coordinator after tampering: the workers' claims still catch it
    outer = wire.decode(good)
    body = wire.decode(outer["attestation"]["body"])
    body["tasks"][0]["claims"][0]["sig"] = bytes(len(body["tasks"][0]["claims"][0]["sig"]))
    body_bytes = wire.encode(body)
    outer["attestation"] = {"body": body_bytes, "sig": alice.sign(body_bytes, "qiz/attestation/v1")}
    with pytest.raises(AttestationError, match="claim signature does not verify"):
        verify_file(wire.encode(outer))
    body = wire.decode(wire.decode(good)["attestation"]["body"])
    body["tasks"][0]["claims"].pop()
    body_bytes = wire.encode(body)
    outer["attestation"] = {"body": body_bytes, "sig": alice.sign(body_bytes, "qiz/attestation/v1")}
    with pytest.raises(AttestationError, match="1 distinct worker"):
        verify_file(wire.encode(outer))
    with pytest.raises(AttestationError):
        verify_file(good[:-5])


# ----------------------------------------------------------------------------- the pool


def test_the_pool_runs_cancels_and_survives_a_killed_process() -> None:
    async def scenario() -> None:
        pool = WorkerPool(1)
        try:
            job = {
                "kind": "qaoa",
                "params": {"graph": "random:10,3", "p": 1, "gammas": [0.3], "betas": [0.2]},
                "points": None,
                "seed": 0,
            }
            assert await pool.run(job) == execute.run("qaoa", job["params"], 0)
            slow = {
                "kind": "grover",
                "params": {"qubits": 24, "marked": [3], "shots": 10},
                "points": None,
                "seed": 0,
            }
            runner = asyncio.ensure_future(pool.run(slow))
            await async_eventually(lambda: pool.busy == 1, 30, "the slow task to start")
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            assert pool.started_processes == 1 and pool.busy == 0
            assert await pool.run(job) == execute.run("qaoa", job["params"], 0)  # a fresh process
            assert pool.started_processes == 2
            runner = asyncio.ensure_future(pool.run(slow))
            await async_eventually(lambda: pool.busy == 1, 30, "the slow task to start")
            (slot,) = pool._all
            slot.process.kill()
            with pytest.raises(TaskFailed, match="killed by SIGKILL"):
                await runner
            bad = {
                "kind": "qaoa",
                "params": {"graph": "random:7,3", "p": 1},
                "points": None,
                "seed": 0,
            }
            with pytest.raises(TaskFailed, match="no 3-regular graph"):
                await pool.run(bad)
        finally:
            await pool.close()

    run(scenario(), timeout=120)


def test_a_task_over_the_memory_limit_fails_alone() -> None:
    async def scenario() -> None:
        pool = WorkerPool(1, memory_limit=0)  # only the interpreter's baseline address space
        try:
            # 2^30 float64 amplitudes: 8 GiB, over the 3 GiB baseline the limit allows
            job = {
                "kind": "grover",
                "params": {"qubits": 30, "marked": [1]},
                "points": None,
                "seed": 0,
            }
            with pytest.raises(TaskFailed, match=r"[mM]emory"):
                await pool.run(job)
            small = {
                "kind": "grover",
                "params": {"qubits": 4, "marked": [1], "shots": 5},
                "points": None,
                "seed": 0,
            }
            assert (await pool.run(small))["shots"] == 5
        finally:
            await pool.close()

    run(scenario(), timeout=120)


# ----------------------------------------------------------------------------- from review


def test_a_sweep_may_only_vary_angles_and_inputs(alice) -> None:
    doc = {
        "kind": "sweep",
        "params": {
            "over": "grover",
            "base": {"qubits": 2, "marked": [1]},
            "axes": {"qubits": [2, 38]},
        },
    }
    with pytest.raises(SpecError, match=r"params\.axes\.qubits: a grover job has nothing a sweep"):
        specs.parse(signed(doc, alice), specs.Limits(max_qubits=20))
    doc = sweep_doc()
    doc["params"]["axes"]["p"] = [1, 30]
    with pytest.raises(SpecError, match=r"params\.axes\.p: a qaoa sweep may only vary gammas"):
        specs.parse(signed(doc, alice))
    doc = sweep_doc()
    doc["params"]["axes"] = {"gammas": [0.1]}
    with pytest.raises(SpecError, match=r"params\.axes\.gammas: name one value, e\.g\. gammas\.0"):
        specs.parse(signed(doc, alice))
    doc = sweep_doc()
    doc["params"]["over"] = "sweep"
    with pytest.raises(SpecError, match=r"params\.over: 'sweep' is not one of"):
        specs.parse(signed(doc, alice))
    doc = sweep_doc()
    doc["params"]["axes"]["gammas.0"] = ["x"]
    with pytest.raises(SpecError, match="list of numbers"):
        specs.parse(signed(doc, alice))


def test_an_attestation_listing_one_worker_twice_fails(alice, bob, carol) -> None:
    good = _attested(alice, bob, carol)
    outer = wire.decode(good)
    body = wire.decode(outer["attestation"]["body"])
    body["workers"][1] = body["workers"][0]
    for task in body["tasks"]:
        for claim in task["claims"]:
            claim["sig"] = task["claims"][0]["sig"]
            claim["worker"] = task["claims"][0]["worker"]
        task["claims"][1]["worker"] = 1
    body_bytes = wire.encode(body)
    outer["attestation"] = {"body": body_bytes, "sig": alice.sign(body_bytes, "qiz/attestation/v1")}
    with pytest.raises(AttestationError, match="listed twice"):
        verify_file(wire.encode(outer))


def test_capacity_records_with_impossible_figures_are_ignored() -> None:
    from qiz.compute.directory import decode_capacity, encode_capacity

    good = {"qubits": 20, "cores": 2, "slots": 2, "queue": 0, "backlog": 0.5, "engine": "e"}
    assert decode_capacity(encode_capacity(good)) == good
    for backlog in ("-1e308", "NaN", "Infinity", "-1", "true"):
        text = encode_capacity(good).replace('"backlog":0.5', f'"backlog":{backlog}')
        assert decode_capacity(text) is None, backlog
    assert decode_capacity('{"qubits": 1}') is None
    assert decode_capacity("not json") is None


def test_a_worker_stopping_keeps_its_tasks_for_the_restart_and_reruns_on_a_new_seed(bob) -> None:
    from qiz.compute.jobdb import WorkerTables, open_db
    from qiz.compute.worker import Worker
    from qiz.qmp.rpc import CallContext

    async def scenario() -> None:
        db = open_db(None)
        doc = {
            "kind": "grover",
            "params": {"qubits": 24, "marked": [3], "iterations": 3000},
            "seed": None,
        }
        raw = signed(doc, bob)
        job = specs.parse(raw).job_id
        ctx = CallContext(bob.node_id, None)  # type: ignore[arg-type]

        async def nowhere(*args, **kwargs):
            raise ConnectionError("no coordinator in this test")

        pool = WorkerPool(1, warm_up=False)
        worker = Worker(bob, WorkerTables(db), pool, specs.Limits(), nowhere)
        reply = await worker._rpc_offer(ctx, {"spec": raw, "task": 0, "seed": 5})
        assert reply["state"] == "queued"
        assert (await worker._rpc_offer(ctx, {"spec": raw, "task": 0, "seed": 5}))["state"] in (
            "queued",
            "running",
        )
        await async_eventually(lambda: pool.busy == 1, 30, "the task to run in the pool")
        await worker.close()
        await pool.close()
        (row,) = WorkerTables(db).all()
        assert row.state in ("queued", "running")  # not cancelled: a restart runs it again
        pool = WorkerPool(1, warm_up=False)
        again = Worker(bob, WorkerTables(db), pool, specs.Limits(), nowhere)
        again.resume()
        assert again.queue_length == 1
        await again.close()
        WorkerTables(db).update(job, 0, bob.node_id.digest, 0.0, state="failed", error="x")
        rerun = Worker(bob, WorkerTables(db), pool, specs.Limits(), nowhere)
        reply = await rerun._rpc_offer(ctx, {"spec": raw, "task": 0, "seed": 6})
        assert reply["state"] == "queued" and WorkerTables(db).all()[0].seed == 6
        await rerun.close()
        await pool.close()

    run(scenario(), timeout=120)


# ----------------------------------------------------------------------------- the job core
# The coordinator's decisions without sockets, event loop or wall clock: specs and claims are
# the simulator's (sized tasks, keyed-hash claims), the tables and scores the real ones.

ME = b"\x00" * 32
WORKERS = [bytes([i]) * 32 for i in range(1, 9)]
STATUS_KEYS = {
    "job_id", "state", "reason", "kind", "over", "submitted_at", "updated_at",
    "finished_at", "duration_s", "deadline_at", "replicas_wanted", "quorum", "seed", "tasks",
    "decided", "progress", "replicas", "attested",
}  # fmt: skip


class Harness:
    """A JobCore over an in-memory database, with helpers that play the workers."""

    def __init__(
        self,
        *,
        tasks: int = 1,
        replicas: int = 2,
        deadline: int = 600,
        spec: specs.JobSpec | None = None,
    ) -> None:
        self.db = open_db(None)
        self.tables = CoordinatorTables(self.db)
        self.scores = PeerScores(self.db)
        self.attested: dict[bytes, list] = {}
        self.core = self.new_core()
        self.spec = spec or sim_spec(1, tasks, replicas, 2, deadline, random.Random(3))
        self.job = self.spec.job_id
        self.views = [WorkerView(w, 2, 30, 0.0, 0.01) for w in WORKERS]

    def new_core(self) -> JobCore:
        def attest(spec, decisions, now) -> bytes:
            self.attested[spec.job_id] = list(decisions)
            return wire.encode([d.accepted.digest for d in decisions])

        # the plain quorum's rules; adaptive replication's are in tests/test_adaptive.py
        return JobCore(
            self.tables,
            self.scores,
            self_id=ME,
            attest=attest,
            check_claim=sim_check_claim,
            adaptive=False,
        )

    def start(self, now: float = 0.0) -> list:
        actions = self.core.submit(self.spec, now)
        return actions + self.core.place(self.job, self.views, now)

    def done(
        self, worker: bytes, task: int, value: Any = "right", seed: int | None = 1, *, raw=False
    ) -> dict:
        """A finished report with a valid (simulated) claim over ``{"value": value}``, or over
        ``value`` itself with ``raw``."""
        result = value if raw else {"value": value}
        digest = result_digest(result)
        return {
            "job": self.job, "task": task, "state": "done", "seed": seed, "engine": "sim",
            "key": worker, "result": result, "digest": digest,
            "sig": sim_claim(worker, self.job, task, seed, digest),
        }  # fmt: skip

    def placed(self, task: int | None = None) -> list[bytes]:
        rows = self.core.jobs[self.job].replicas.values()
        return [r.worker for r in rows if task is None or r.task == task]

    def accept_all(self, actions: list, now: float) -> list:
        out = []
        for a in actions:
            if isinstance(a, Offer):
                out += self.core.offer_accepted(a.job, a.task, a.worker, {"state": "queued"}, now)
        return out


def offers(actions: list) -> list[Offer]:
    return [a for a in actions if isinstance(a, Offer)]


def kinds(actions: list) -> list[EventKind]:
    return [a.kind for a in actions if isinstance(a, Emit)]


def test_the_core_imports_no_event_loop_and_no_network() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(jobcore))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    forbidden = ("asyncio", "socket", "qiz.qmp", "qiz.resolve", "qiz.compute.coordinator")
    assert names and not [n for n in names if n.startswith(forbidden)], names


def test_submit_places_each_replica_on_a_distinct_worker_and_a_quorum_finishes_the_job() -> None:
    h = Harness(tasks=2)
    actions = h.start(now=0.0)
    assert kinds(actions)[0] == EventKind.JOB_SUBMITTED
    sent = offers(actions)
    assert len(sent) == 4 and kinds(actions).count(EventKind.REPLICA_PLACED) == 4
    for task in (0, 1):
        workers = [o.worker for o in sent if o.task == task]
        assert len(set(workers)) == 2 and all(o.seed == 1 for o in sent)  # the spec's seed
    assert h.accept_all(actions, 0.1) == []
    status = job_status(h.tables.job(h.job), h.tables.replicas(h.job), h.core.live(h.job))
    assert set(status.as_dict()) == STATUS_KEYS and status.state == "running"
    assert status.tasks == 2 and status.decided == 0
    assert {r["state"] for r in status.as_dict()["replicas"]} == {"queued"}
    a, b = (o.worker for o in sent if o.task == 0)
    assert h.core.report(a, h.done(a, 0), 1.0) == []  # one opinion: no quorum yet
    decided = h.core.report(b, h.done(b, 0), 1.1)
    assert kinds(decided) == [EventKind.TASK_DECIDED]
    assert h.core.live(h.job).decided == {0}
    for o in sent:
        if o.task == 1:
            last = h.core.report(o.worker, h.done(o.worker, 1), 2.0)
    assert kinds(last) == [EventKind.TASK_DECIDED, EventKind.JOB_DONE]
    assert any(isinstance(x, JobFinished) for x in last)
    row = h.tables.job(h.job)
    assert row.state == "done" and row.attestation is not None and h.job not in h.core.jobs
    assert h.scores.get(a) > INITIAL
    final = job_status(row, h.tables.replicas(h.job), None).as_dict()
    assert final["attested"] and final["decided"] == 2 and final["progress"] == 1.0


def test_a_liar_is_outvoted_its_score_halves_and_a_bad_claim_never_counts() -> None:
    h = Harness(replicas=3)
    actions = h.start()
    a, b, c = (o.worker for o in offers(actions))
    forged = {**h.done(a, 0), "sig": b"\x00" * 32}
    assert h.core.report(a, forged, 1.0) == []
    assert h.core.jobs[h.job].replicas[(0, a)].state == "failed"
    assert "bad claim: the signature does not verify" in h.core.jobs[h.job].replicas[(0, a)].error
    assert h.core.report(b, h.done(b, 0, "wrong"), 1.0) == []
    decided = h.core.report(c, h.done(c, 0), 1.0)
    assert decided == []  # one right and one wrong: no quorum of 2 yet
    more = h.core.place(h.job, h.views, 1.5)  # the bad claim and the disagreement want more
    (extra,) = offers(more)
    assert extra.worker not in (a, b, c)
    end = h.core.report(extra.worker, h.done(extra.worker, 0), 2.0)
    assert EventKind.JOB_DONE in kinds(end)
    (decision,) = h.attested[h.job]
    assert {r.worker for r in decision.agreeing} == {c, extra.worker}
    assert [r.worker for r in decision.disagreeing] == [b]
    assert h.scores.get(b) == pytest.approx(INITIAL / 2)


def test_a_busy_worker_costs_no_attempt_and_other_refusals_do() -> None:
    h = Harness()
    actions = h.start()
    first, second = offers(actions)
    h.core.offer_refused(h.job, 0, first.worker, code="busy", message="full", now=0.1)
    assert first.worker not in h.placed(0)  # the row is gone: not an attempt
    h.core.offer_refused(h.job, 0, second.worker, code="refused", message="too big", now=0.1)
    assert h.core.jobs[h.job].replicas[(0, second.worker)].state == "failed"
    assert h.core.placement_due() == [h.job]
    again = offers(h.core.place(h.job, h.views, 0.2))
    assert len(again) == 2 and second.worker not in {o.worker for o in again}
    assert len(h.tables.replicas(h.job)) == 3  # the refusal stays an attempt


def test_when_every_worker_is_busy_the_job_waits_for_one_instead_of_failing() -> None:
    """Both workers answer busy (they are left out of the directory for a few seconds): the
    task has no replica and nobody to take it *now*. That is retried like a failed placement,
    and places once a worker is back; only nobody for PLACEMENT_TRIES rounds fails the job,
    with the reason."""
    h = Harness()
    for offer in offers(h.start()):
        h.core.offer_refused(h.job, 0, offer.worker, code="busy", message="full", now=0.1)
    assert h.placed(0) == []
    nobody: list[WorkerView] = []
    assert not [a for a in h.core.place(h.job, nobody, 0.2) if isinstance(a, JobFailed)]
    assert h.job in h.core.jobs and h.core.jobs[h.job].placement_failures == 1
    retry = 0.2 + jobcore.PLACEMENT_RETRY
    assert h.core.placement_due(retry) == [h.job]
    assert len(offers(h.core.place(h.job, h.views, retry))) == 2  # the workers are back
    assert h.core.jobs[h.job].placement_failures == 0

    h = Harness()
    now, actions = 0.0, []
    for offer in offers(h.start(now)):
        h.core.offer_refused(h.job, 0, offer.worker, code="busy", message="full", now=now)
    for _ in range(jobcore.PLACEMENT_TRIES):  # nobody, round after round
        actions = h.core.place(h.job, nobody, now)
        now += jobcore.PLACEMENT_RETRY
    (failed,) = [a for a in actions if isinstance(a, JobFailed)]
    assert failed.reason == (
        f"placement failed {jobcore.PLACEMENT_TRIES} times: task 0: no worker can take it"
    )


def test_a_replica_is_lost_when_unreachable_or_twice_silent_never_once() -> None:
    h = Harness()
    actions = h.start()
    h.accept_all(actions, 0.0)
    a, b = h.placed(0)
    assert h.core.tick(1.0) == []  # heard of at 0.0; silent only after poll_after
    checks = h.core.tick(3.5)
    assert sorted((f.task, f.worker) for f in checks) == sorted([(0, a), (0, b)])
    assert h.core.tick(3.6) == []  # fetches in flight are not sent twice
    assert h.core.fetch_failed(h.job, 0, a, "timeout", unreachable=False, now=8.5) == []
    assert h.core.jobs[h.job].replicas[(0, a)].state == "queued"
    lost = h.core.fetch_failed(h.job, 0, b, "no route", unreachable=True, now=8.5)
    assert Forget(b) in lost and kinds(lost) == [EventKind.REPLICA_LOST]
    assert h.core.fetched(h.job, 0, a, {"state": "running", "progress": 0.5}, 8.6) == []
    assert h.core.jobs[h.job].replicas[(0, a)].state == "running"  # an answer resets misses
    assert len(h.core.tick(12.0)) == 1
    assert h.core.fetch_failed(h.job, 0, a, "timeout", unreachable=False, now=17.0) == []
    assert len(h.core.tick(20.1)) == 1
    lost = h.core.fetch_failed(h.job, 0, a, "timeout", unreachable=False, now=25.0)
    assert kinds(lost) == [EventKind.REPLICA_LOST]
    assert "no answer 2 times" in h.core.jobs[h.job].replicas[(0, a)].error
    assert h.core.counters["lost"] == 2 and h.scores.get(a) < INITIAL


def test_a_fetch_that_fails_at_once_is_tried_again_poll_after_later_not_next_tick() -> None:
    """A refusal answers in milliseconds, and its answer wakes the driver: unless the failure
    counts as the time last heard of, the next tick fetches again at once and the two misses
    that lose a replica (MAX_MISSES) come ~100 ms apart instead of ``poll_after``."""
    h = Harness()
    h.accept_all(h.start(), 0.0)
    a, b = h.placed(0)
    assert {f.worker for f in h.core.tick(3.0)} == {a, b}
    h.core.fetched(h.job, 0, b, {"state": "running"}, 3.05)
    assert h.core.fetch_failed(h.job, 0, a, "refused", unreachable=False, now=3.01) == []
    assert h.core.next_deadline() == pytest.approx(3.01 + h.core.poll_after)
    assert h.core.tick(3.1) == []  # the wake's tick: no second fetch yet
    assert h.core.tick(5.9) == []
    (again,) = h.core.tick(6.01)
    assert again == Fetch(h.job, 0, a)
    lost = h.core.fetch_failed(h.job, 0, a, "refused", unreachable=False, now=6.02)
    assert kinds(lost) == [EventKind.REPLICA_LOST]  # the second miss, poll_after after the first


def test_a_job_parses_its_circuit_once_not_once_per_task(alice, monkeypatch) -> None:
    """The width cannot vary within a sweep: shard=1 over many points must not parse the same
    circuit once per task in the event loop."""
    calls = []
    real = execute.outcome_width

    def counted(kind: str, params: dict) -> int | None:
        calls.append(kind)
        return real(kind, params)

    monkeypatch.setattr(execute, "outcome_width", counted)
    spec = specs.parse(signed(sweep_doc(n=6, points=5, shard=1), alice))
    h = Harness(spec=spec)
    h.start()
    state = h.core.jobs[h.job]
    for task in spec.tasks:
        point = execute.canonical(dict(task.points[0]))
        assert "not for point 0" in state.result_problem(task.index, [{"point": {}}])
        assert "fields" in state.result_problem(task.index, [{"point": point}])
        assert state.shapes[task.index] == results.shape_of(task)  # the same as built alone
    tasks = len(spec.tasks)  # a grid: 25 one-point shards
    assert tasks == 25 and calls.count("qaoa") == 1 + tasks  # once, then once per shape_of


def test_an_unlinked_worker_is_fetched_at_once_and_a_forgotten_task_is_lost() -> None:
    h = Harness()
    h.accept_all(h.start(), 0.0)
    a, _ = h.placed(0)
    (check,) = h.core.tick(0.5, linked=lambda w: w != a)
    assert check == Fetch(h.job, 0, a)
    lost = h.core.fetched(h.job, 0, a, {"state": "unknown"}, 0.6)
    assert kinds(lost) == [EventKind.REPLICA_LOST]


def test_a_job_fails_at_its_deadline_with_the_reason_and_its_replicas_are_cancelled() -> None:
    h = Harness(deadline=100)
    h.accept_all(h.start(), 0.0)
    workers = set(h.placed())
    assert h.core.next_deadline() == pytest.approx(3.0)  # the first poll
    actions = h.core.tick(100.0)
    (failed,) = [a for a in actions if isinstance(a, JobFailed)]
    assert "deadline (100 s)" in failed.reason
    assert {a.worker for a in actions if isinstance(a, CancelAt)} == workers
    assert h.tables.job(h.job).state == "failed" and h.core.jobs == {}
    assert {r.state for r in h.tables.replicas(h.job)} == {"cancelled"}
    assert h.core.next_deadline() is None


def test_a_straggler_gets_one_spare_and_stragglers_never_hold_a_task() -> None:
    h = Harness()
    h.accept_all(h.start(), 0.0)
    a, b = h.placed(0)
    for t in (3.0, 6.0):  # both keep saying "running"
        for f in h.core.tick(t):
            h.core.fetched(h.job, 0, f.worker, {"state": "running", "progress": 0.1}, t)
    late = h.core.jobs[h.job].budgets[0] + 1
    assert late > STRAGGLER_FLOOR
    actions = h.core.tick(late)
    assert kinds(actions).count(EventKind.REPLICA_STRAGGLING) == 1
    for f in (x for x in actions if isinstance(x, Fetch)):
        h.core.fetched(h.job, 0, f.worker, {"state": "running"}, late)
    (spare,) = offers(h.core.place(h.job, h.views, late))
    assert spare.worker not in (a, b)
    # the spare answers; the two stragglers still "run": one more opinion, not the deadline
    assert h.core.report(spare.worker, h.done(spare.worker, 0), late + 1) == []
    (more,) = offers(h.core.place(h.job, h.views, late + 1))
    end = h.core.report(more.worker, h.done(more.worker, 0), late + 2)
    assert EventKind.JOB_DONE in kinds(end)
    assert {x.worker for x in end if isinstance(x, CancelAt)} == {a, b}


def test_without_agreement_the_job_fails_after_the_extra_attempts_with_a_reason() -> None:
    h = Harness()
    actions = h.start()
    now, answered = 1.0, 0
    while h.job in h.core.jobs:
        for o in offers(actions):
            h.core.report(o.worker, h.done(o.worker, 0, f"opinion {answered}"), now)
            answered += 1
        actions = h.core.place(h.job, h.views, now)
        now += 1
    assert answered == 2 + EXTRA_ATTEMPTS
    assert h.tables.job(h.job).error == f"task 0: no 2 of {2 + EXTRA_ATTEMPTS} replicas agreed"


def test_a_restarted_core_resumes_and_decides_from_stored_results() -> None:
    h = Harness()
    actions = h.start()
    a, b = (o.worker for o in offers(actions))
    h.core.report(a, h.done(a, 0), 1.0)
    h.tables.update_replica(
        h.job,
        0,
        b,
        1.0,
        state="done",
        **{
            k: v
            for k, v in h.done(b, 0).items()
            if k in ("result", "digest", "sig", "key", "engine")
        },
    )  # fmt: skip  - b's result reached the table just before the crash
    fresh = h.new_core()
    limits = specs.Limits()
    import unittest.mock

    with unittest.mock.patch.object(specs, "parse", return_value=h.spec):
        actions = fresh.resume(limits, 5.0)
    assert EventKind.JOB_DONE in kinds(actions) and h.tables.job(h.job).state == "done"


def test_the_real_claim_check_names_what_is_wrong(alice, bob) -> None:
    job, seed = b"j" * 32, 7
    result = {"value": 1}
    digest = result_digest(result)
    sig = Claim(job, 0, seed, "e", digest).sign(alice)
    report = {"key": alice.public_key.raw, "digest": digest, "sig": sig, "engine": "e",
              "seed": seed, "result": result}  # fmt: skip
    me = alice.node_id.digest
    assert check_claim(report, job=job, task=0, seed=seed, worker=me) is None
    cases = [
        ({**report, "sig": None}, me, "missing fields"),
        (report, bob.node_id.digest, "not the worker's"),
        ({**report, "seed": 8}, me, "another seed"),
        ({**report, "result": {"value": 2}}, me, "does not match its digest"),
        ({**report, "engine": "other"}, me, "does not verify"),
    ]
    for bad, worker, why in cases:
        assert why in check_claim(bad, job=job, task=0, seed=seed, worker=worker)


peer_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=8)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)  # fmt: skip


@given(st.lists(peer_values, max_size=6), st.data())
def test_bad_peer_input_never_raises(values, data) -> None:
    h = Harness()
    h.start()
    worker = h.placed(0)[0]
    for value in values:
        keys = data.draw(st.sampled_from(["job", "task", "state", "progress", "result", "seed"]))
        report = {"job": h.job, "task": 0, keys: value}
        for body in (value, report, {**h.done(worker, 0), keys: value}):
            assert isinstance(h.core.report(worker, body, 1.0), list)
            assert isinstance(h.core.progress(worker, body, 1.0), list)
            assert isinstance(h.core.fetched(h.job, 0, worker, body, 1.0), list)
            assert isinstance(h.core.collected(h.job, 0, worker, body, 1.0), list)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["right", "wrong", "running", "fail", "silent", "unreachable", "busy"]),
        st.integers(0, 7),  # which replica (modulo the live ones)
        st.floats(0.1, 40.0),  # time passing before it
    ),
    max_size=40,
)


@given(OPS, st.integers(1, 3), st.integers(2, 3))
def test_random_reports_timeouts_and_failures_keep_the_core_consistent(
    ops, tasks, replicas
) -> None:
    h = Harness(tasks=tasks, replicas=replicas, deadline=300)
    now = 0.0
    pending: list = list(h.start(now))
    decided: dict[int, bytes] = {}
    offered: set[tuple[int, bytes]] = set()

    def absorb(actions: list) -> None:
        for a in actions:
            if isinstance(a, Offer):
                key = (a.task, a.worker)
                assert key not in offered, "a worker was offered a task it already holds"
                offered.add(key)
                pending.append(a)

    absorb([a for a in pending if isinstance(a, Offer)])
    pending = [a for a in pending if isinstance(a, Offer)]
    for op, pick, dt in [*ops, ("end", 0, 400.0)]:
        now += dt
        state = h.core.jobs.get(h.job)
        if state is not None:
            for task, d in state.decisions.items():
                assert decided.setdefault(task, d.accepted.digest) == d.accepted.digest
        if op == "end" or state is None:
            absorb(h.core.tick(now))
            break
        # answer one outstanding offer, or act as one replica
        if pending and op == "busy":
            o = pending.pop(pick % len(pending))
            offered.discard((o.task, o.worker))  # busy: no replica there, it may come back
            absorb(h.core.offer_refused(o.job, o.task, o.worker, code="busy", message="", now=now))
        elif pending:
            o = pending.pop(pick % len(pending))
            absorb(h.core.offer_accepted(o.job, o.task, o.worker, {"state": "queued"}, now))
        live = [r for r in state.replicas.values() if r.state in ("queued", "running")]
        if live:
            r = live[pick % len(live)]
            if op in ("right", "wrong"):
                absorb(h.core.report(r.worker, h.done(r.worker, r.task, op), now))
            elif op == "running":
                absorb(
                    h.core.report(r.worker, {"job": h.job, "task": r.task, "state": "running"}, now)
                )
            elif op == "fail":
                absorb(
                    h.core.report(r.worker, {"job": h.job, "task": r.task, "state": "failed"}, now)
                )
        for a in h.core.tick(now):
            if isinstance(a, Fetch):
                if op == "silent":
                    absorb(
                        h.core.fetch_failed(
                            a.job, a.task, a.worker, "t", unreachable=False, now=now
                        )
                    )
                elif op == "unreachable":
                    absorb(
                        h.core.fetch_failed(a.job, a.task, a.worker, "u", unreachable=True, now=now)
                    )
                else:
                    absorb(h.core.fetched(a.job, a.task, a.worker, {"state": "running"}, now))
        for job in h.core.placement_due():
            absorb(h.core.place(job, h.views, now))
    # by its deadline every job has ended, with a reason if it failed
    assert h.job not in h.core.jobs
    row = h.tables.job(h.job)
    assert row.state in ("done", "failed") and (row.state == "done" or row.error)
    event(f"job {row.state}")
    if row.state == "done":
        assert [d.accepted.digest for d in h.attested[h.job]] == [
            decided.get(t, h.attested[h.job][t].accepted.digest) for t in range(tasks)
        ]


def test_a_placement_method_that_refuses_a_round_falls_back_to_greedy() -> None:
    h = Harness(replicas=3)
    h.core.placement = "qaoa"  # 3 items x 8 workers: over QAOA's 16 variables
    sent = offers(h.start())
    assert len({o.worker for o in sent}) == 3
    h.core.placement = "nonsense"
    h.core.offer_refused(h.job, 0, sent[0].worker, code="refused", message="no", now=1.0)
    (again,) = offers(h.core.place(h.job, h.views, 1.0))
    assert again.worker not in {o.worker for o in sent}


# ----------------------------------------------------------------------------- lying results
# A valid claim proves who said a result, not that it is one: the core refuses a result of the
# wrong shape before the quorum sees it, and a quorum that still cannot compare fails a replica.

UNSEEDED_BELL = {"kind": "sampler", "params": {"qasm": BELL, "shots": 1024}, "replicas": 3}


def unseeded_harness(alice, doc: dict | None = None) -> Harness:
    spec = specs.parse(signed(doc or UNSEEDED_BELL, alice))
    assert spec.seed is None and spec.quorum == 3
    # quorum 2 of 3: the attack needs only one honest worker to "agree" with
    body = {**spec.body, "quorum": 2}
    spec = specs.parse(specs.sign(body, alice))
    h = Harness(spec=spec)
    h.core.new_seed = itertools.count(11).__next__  # fixed seeds: honest pairs agree every run
    return h


def sampled(h: Harness, worker: bytes, result: Any, seed: int) -> dict:
    return h.done(worker, 0, result, seed=seed, raw=True)


def test_a_liar_with_overflowing_counts_cannot_win_the_vote(alice) -> None:
    h = unseeded_harness(alice)
    liar, a, b = (o.worker for o in offers(h.start()))
    seeds = {r.worker: r.seed for r in h.core.jobs[h.job].replicas.values()}
    params = h.spec.tasks[0].params
    huge = {"counts": {"00": 1e308, "11": 1e308}, "shots": 1024}
    assert h.core.report(liar, sampled(h, liar, huge, seeds[liar]), 1.0) == []
    row = h.core.jobs[h.job].replicas[(0, liar)]
    assert row.state == "failed" and "bad result" in row.error and "1e+308" in row.error
    assert h.scores.get(liar) < INITIAL
    for n, w in enumerate((a, b)):
        honest = execute.run("sampler", params, seeds[w])
        end = h.core.report(w, sampled(h, w, honest, seeds[w]), 2.0 + n)
    assert EventKind.JOB_DONE in kinds(end)
    (decision,) = h.attested[h.job]
    assert {r.worker for r in decision.agreeing} == {a, b} and decision.accepted.worker != liar


@pytest.mark.parametrize(
    ("result", "why"),
    [
        ({"counts": {"00": "x"}, "shots": 1024}, "count of '00'"),
        ({"counts": 5, "shots": 1024}, "counts must be a map"),
        ({"counts": {"00": 1024}}, "missing shots;"),
        ({"counts": {"00": 1000, "11": 24}, "shots": 1024, "extra": 1}, "unexpected 'extra'"),
        ({"counts": {"00": 1025, "11": -1}, "shots": 1024}, "count of '11'"),
        ({"counts": {"00": 1024, "11": 0}, "shots": 1024}, "count of '11' is 0, not a whole"),
        ({"counts": {"00": 1020, "01": 1, "10": 1, "11": 1, "x": 1}, "shots": 1024}, "5 outcomes"),
        ({"counts": {"00": 1000, "11": 23}, "shots": 1024}, "sum to 1023"),
        ({"counts": {"00": 1023, "11": True}, "shots": 1024}, "count of '11'"),
        ({"counts": {"000": 1024}, "shots": 1024}, "2 bits"),
        ({"counts": {"0x": 1024}, "shots": 1024}, "2 bits"),
        ({"counts": {"00": 8}, "shots": 8}, "spec asks for 1024"),
        ([{"counts": {"00": 1024}, "shots": 1024}], "is a map, not list"),
        (None, "is a map, not NoneType"),
    ],
)
def test_a_malformed_sampled_result_fails_its_replica_and_never_blocks_the_task(
    alice, result, why
) -> None:
    h = unseeded_harness(alice)
    bad, a, b = (o.worker for o in offers(h.start()))
    seeds = {r.worker: r.seed for r in h.core.jobs[h.job].replicas.values()}
    assert h.core.report(bad, sampled(h, bad, result, seeds[bad]), 1.0) == []
    row = h.core.jobs[h.job].replicas[(0, bad)]
    assert row.state == "failed" and why in row.error, row.error
    params = h.spec.tasks[0].params
    h.core.report(a, sampled(h, a, execute.run("sampler", params, seeds[a]), seeds[a]), 2.0)
    end = h.core.report(b, sampled(h, b, execute.run("sampler", params, seeds[b]), seeds[b]), 3.0)
    assert EventKind.JOB_DONE in kinds(end)


def test_a_report_without_its_result_fails_the_replica_instead_of_raising() -> None:
    h = Harness()
    a, _ = (o.worker for o in offers(h.start()))
    signed_none = h.done(a, 0, None, raw=True)  # a claim over the digest of None...
    del signed_none["result"]  # ...and no result at all
    assert h.core.report(a, signed_none, 1.0) == []
    assert "missing fields: result" in h.core.jobs[h.job].replicas[(0, a)].error
    # the same report answering a fetch inside a tick's round: an answer, not an exception
    h2 = Harness()
    a2, _ = (o.worker for o in offers(h2.start()))
    fetched = h2.done(a2, 0, None, raw=True)
    del fetched["result"]
    assert h2.core.fetched(h2.job, 0, a2, fetched, 1.0) == []
    assert h2.core.jobs[h2.job].replicas[(0, a2)].state == "failed"
    for field in ("engine", "key", "digest", "sig"):
        h3 = Harness()
        a3, _ = (o.worker for o in offers(h3.start()))
        report = h3.done(a3, 0)
        del report[field]
        assert h3.core.report(a3, report, 1.0) == []
        assert h3.core.jobs[h3.job].replicas[(0, a3)].state == "failed"


def test_a_quorum_that_raises_fails_the_offending_replica_and_the_task_goes_on(
    monkeypatch,
) -> None:
    real = jobcore.decide

    def fragile(replicas, quorum, sampled):
        if any(r.result == {"value": "boom"} for r in replicas):
            raise TypeError("unsupported operand")
        return real(replicas, quorum, sampled)

    monkeypatch.setattr(jobcore, "decide", fragile)
    h = Harness()
    a, b = (o.worker for o in offers(h.start()))
    assert h.core.report(a, h.done(a, 0), 1.0) == []
    assert h.core.report(b, h.done(b, 0, "boom"), 1.1) == []  # no exception out of the core
    row = h.core.jobs[h.job].replicas[(0, b)]
    assert row.state == "failed" and "cannot be compared: TypeError" in row.error
    assert h.core.jobs[h.job].replicas[(0, a)].state == "done"  # the honest one stays
    assert h.scores.get(b) < INITIAL and h.core.placement_due() == [h.job]
    (again,) = offers(h.core.place(h.job, h.views, 1.2))
    assert again.worker not in (a, b)
    end = h.core.report(again.worker, h.done(again.worker, 0), 2.0)
    assert EventKind.JOB_DONE in kinds(end)


def test_overflowing_or_malformed_counts_never_agree() -> None:
    honest = {"00": 512, "11": 512}
    assert chi2_homogeneity(honest, {"00": 500, "11": 524}) > ALPHA
    for bad in ({"00": 1e308, "11": 1e308}, {"00": 10**400, "11": 1}, {"00": "x"}, {"00": -5}):
        assert chi2_homogeneity(honest, bad) == 0.0
        assert chi2_homogeneity(bad, honest) == 0.0
    assert quorum.sampled_agreement({"counts": 5}, {"counts": honest}) == 0.0
    assert quorum.sampled_agreement({"counts": {"00": math.nan}}, {"counts": honest}) == 0.0
    liar = Replica(b"l", b"", None, "e", {"counts": {"00": 1e308, "11": 1e308}}, b"l", b"")
    a = Replica(b"a", b"", None, "e", {"counts": honest}, b"a", b"")
    b = Replica(b"b", b"", None, "e", {"counts": {"00": 520, "11": 504}}, b"b", b"")
    decision = decide([liar, a, b], 2, True)
    assert decision is not None and decision.accepted is not liar
    assert decision.disagreeing == (liar,)


class NoKeysPlease(dict):
    """A counts map that says how many keys it has but fails if they are looked at."""

    def __iter__(self):
        raise AssertionError("the keys were looked at before their number")

    def items(self):
        raise AssertionError("the keys were looked at before their number")


def test_counts_must_be_drawn_so_a_map_has_at_most_shots_and_2_to_the_width_keys() -> None:
    """Zero counts padded a map to any size (600,000 keys took one chi-square test seconds in
    the event loop): every count is >= 1 now, and the number of keys is checked first."""
    wide = results.ResultShape("sampler", frozenset({"counts", "shots"}), 20, 1024, None, None)
    padded = {format(i, "020b"): 0 for i in range(600_000)}
    padded["0" * 20] = 1024
    assert results.problem(wide, {"counts": padded, "shots": 1024}) == (
        "600000 outcomes; 1024 shots of 20 bits give at most 1024"
    )
    many = NoKeysPlease({format(i, "020b"): 1 for i in range(1025)})
    assert "1025 outcomes" in results.counts_problem(many, 1024, wide)
    narrow = results.ResultShape("sampler", frozenset({"counts", "shots"}), 1, 1024, None, None)
    three = NoKeysPlease({"0": 1000, "1": 23, "x": 1})
    assert "3 outcomes; 1024 shots of 1 bits give at most 2" in results.counts_problem(
        three, 1024, narrow
    )
    one_zero = {"0": 1024, "1": 0}
    assert "not a whole number >= 1" in results.counts_problem(one_zero, 1024, narrow)
    assert results.counts_problem({"0": 1000, "1": 24}, 1024, narrow) is None


def test_honest_samples_never_list_an_outcome_with_a_zero_count() -> None:
    """What the >= 1 rule relies on: both sampler paths and grover count draws only."""
    terminal = {"qasm": BELL, "shots": 64}
    per_shot = {
        "qasm": "OPENQASM 3.0; qubit[2] q; bit[2] c; h q[0]; c[0] = measure q[0]; "
        "x q[0]; c[1] = measure q[0];",
        "shots": 64,
    }
    grover = {"qubits": 4, "marked": [3, 5], "shots": 64}
    for kind, params in (("sampler", terminal), ("sampler", per_shot), ("grover", grover)):
        for seed in range(5):
            counts = execute.run(kind, params, seed)["counts"]
            assert counts and min(counts.values()) >= 1, (kind, counts)


def _shape(alice, doc: dict) -> results.ResultShape:
    shape = results.shape_of(specs.parse(signed(doc, alice)).tasks[0])
    assert shape is not None
    return shape


def test_every_kind_s_real_result_has_the_shape_the_core_checks(alice) -> None:
    """The check must never refuse an honest result: run each kind small and check it."""
    for kind, params in execute.WARM_UP:
        shape = _shape(alice, {"kind": kind, "params": params})
        assert results.problem(shape, execute.run(kind, params, 3)) is None, kind
    optimised = {"kind": "qaoa", "params": {"graph": "random:6,3", "p": 1, "maxiter": 6}}
    result = execute.run("qaoa", optimised["params"], 3)
    assert results.problem(_shape(alice, optimised), result) is None
    vqe = {
        "kind": "vqe",
        "params": {"hamiltonian": "tfim:2", "ansatz": "hea:1", "theta": [0.1] * 2},
    }
    assert results.problem(_shape(alice, vqe), execute.run("vqe", vqe["params"], 0)) is None
    estimator = {
        "kind": "estimator",
        "params": {"qasm": BELL.replace(" c = measure q;", ""), "observables": ["1 ZZ", "0.5 XX"]},
    }
    shape = _shape(alice, estimator)
    assert results.problem(shape, execute.run("estimator", estimator["params"], 0)) is None
    assert "2 numbers" in results.problem(shape, {"values": [1.0]})
    # no measure: the sampler measures every qubit, widening the register (measure_all)
    for qasm, width in (
        ("OPENQASM 3.0; qubit[2] q; h q[0];", 2),
        ("OPENQASM 3.0; qubit[2] q; bit[1] c; h q[0];", 2),
        ("OPENQASM 3.0; qubit[2] q; bit[3] c; h q[0];", 3),
        ("OPENQASM 3.0; qubit[2] q; bit[1] c; h q[0]; reset q[1];", 1),  # reset: not widened
    ):
        params = {"qasm": qasm, "shots": 64}
        shape = _shape(alice, {"kind": "sampler", "params": params})
        result = execute.run("sampler", params, 3)
        assert shape.width == width and {len(k) for k in result["counts"]} == {width}, qasm
        assert results.problem(shape, result) is None, qasm
    none_marked = {"kind": "grover", "params": {"qubits": 2, "cnf": "p cnf 2 2\n1 0\n-1 0\n"}}
    shape = _shape(alice, none_marked)
    assert results.problem(shape, execute.run("grover", none_marked["params"], 0)) is None
    spec = specs.parse(signed(sweep_doc(n=6, points=3, shard=2), alice))
    for task in spec.tasks:
        shard = execute.run_points(task.kind, task.params, task.points, 0)
        shape = results.shape_of(task)
        assert shape is not None and results.problem(shape, shard) is None
        assert "not for point 0" in results.problem(shape, [{**shard[0], "point": {}}, *shard[1:]])
        assert f"list of {len(task.points)} results" in results.problem(shape, shard[1:])
    assert results.shape_of(sim_spec(1, 1, 2, 2, 60, random.Random(1)).tasks[0]) is None


def test_a_placement_that_fails_is_retried_then_fails_the_job_with_its_reason(
    monkeypatch,
) -> None:
    def refuse(problem, method="greedy", **_):
        raise PlacementError("task 0 needs 30 qubits on a distinct worker; none is left")

    monkeypatch.setattr(jobcore, "solve", refuse)
    h = Harness()
    now = 0.0
    assert offers(h.start(now)) == []
    for failed_rounds in range(1, jobcore.PLACEMENT_TRIES):
        assert h.core.jobs[h.job].placement_failures == failed_rounds
        assert h.core.placement_due(now) == []  # not before the retry time...
        retry = now + jobcore.PLACEMENT_RETRY
        assert h.core.next_deadline() == pytest.approx(retry)  # ...which wakes the driver
        assert h.core.placement_due(retry) == [h.job]
        now = retry
        actions = h.core.place(h.job, h.views, now)
    (failed,) = [a for a in actions if isinstance(a, JobFailed)]
    assert failed.reason == (
        f"placement failed {jobcore.PLACEMENT_TRIES} times: "
        "task 0 needs 30 qubits on a distinct worker; none is left"
    )
    assert h.tables.job(h.job).error == failed.reason and h.job not in h.core.jobs


def test_a_placement_that_fails_once_places_on_the_retry(monkeypatch) -> None:
    real, calls = jobcore.solve, []

    def once(problem, method="greedy", **kw):
        calls.append(method)
        if len(calls) <= 2:  # the configured method and its greedy fallback, once
            raise PlacementError("no eligible worker")
        return real(problem, method, **kw)

    monkeypatch.setattr(jobcore, "solve", once)
    h = Harness()
    assert offers(h.start(0.0)) == []
    later = jobcore.PLACEMENT_RETRY
    assert h.core.placement_due(later) == [h.job]
    assert len(offers(h.core.place(h.job, h.views, later))) == 2
    assert h.core.jobs[h.job].placement_failures == 0


# what the wire can carry (no non-finite float, no integer beyond 64 bits): all a peer can send
wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=8) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)  # fmt: skip
count_maps = st.dictionaries(
    st.sampled_from(["00", "11", "01", "0", "000", "x"]) | st.text(max_size=3),
    wire_values | st.integers(-3, 2000) | st.sampled_from([1e308, -1e308, 2**63 - 1]),
    max_size=4,
)
sampled_results = (
    st.fixed_dictionaries(
        {
            "counts": count_maps | wire_values,
            "shots": st.sampled_from([1024, 0, -1, 1e3]) | wire_values,
        },
        optional={"extra": wire_values},
    )
    | wire_values
)
CLAIMED = ("job", "task", "state", "seed", "engine", "key", "result", "digest", "sig")


@given(
    st.lists(
        st.tuples(st.integers(0, 2), sampled_results, st.sets(st.sampled_from(CLAIMED))), max_size=8
    )
)
def test_junk_under_valid_claims_never_raises_out_of_the_core(alice, reports) -> None:
    """Results a peer signed properly but shaped as anything at all, some fields left out, as
    pushed reports, fetched answers and collected ones, then the clock: the core answers."""
    h = unseeded_harness(alice)
    workers = [o.worker for o in offers(h.start())]
    seeds = {r.worker: r.seed for r in h.core.jobs[h.job].replicas.values()}
    now = 1.0
    for pick, result, dropped in reports:
        worker = workers[pick]
        report = sampled(h, worker, result, seeds.get(worker))
        for name in dropped:
            report.pop(name, None)
        now += 1.0
        for answer in (
            h.core.report(worker, report, now),
            h.core.fetched(h.job, 0, worker, report, now),
            h.core.collected(h.job, 0, bytes([pick + 40]) * 32, report, now),
            h.core.tick(now),
            h.core.place(h.job, h.views, now),
        ):
            assert isinstance(answer, list)
        h.core.next_deadline()
    state = h.core.jobs.get(h.job)
    if state is not None:  # whatever was accepted as a result has the kind's shape
        for r in state.replicas.values():
            assert r.state != "done" or state.result_problem(0, r.result) is None


# ----------------------------------------------------------------------------- the live driver


def test_the_coordinator_sleeps_until_the_core_s_deadline_and_wakes_on_input(alice) -> None:
    """No polling: the watch loop waits for what ``next_deadline`` says (bounded) or for an
    input (a report, progress, a link going down), never a fixed quarter second."""
    from qiz.compute.coordinator import Coordinator
    from qiz.events import EventBus
    from qiz.qmp.rpc import CallContext

    async def scenario() -> None:
        db = open_db(None)
        bus = EventBus()
        clock = [100.0]
        coordinator = Coordinator(
            alice,
            CoordinatorTables(db),
            PeerScores(db),
            directory=None,  # type: ignore[arg-type] - an idle tick never asks it
            send=None,  # type: ignore[arg-type]
            events=bus,
            clock=lambda: clock[0],
        )
        assert coordinator.sleep_for(0.05, 3600.0) == 3600.0  # nothing runs: the ceiling
        h = Harness(deadline=60)
        coordinator.core.submit(h.spec, clock[0])
        assert coordinator.sleep_for(0.05, 3600.0) == pytest.approx(60.0)  # the job's deadline
        clock[0] = 170.0  # past it: the floor, not a spin
        assert coordinator.sleep_for(0.05, 3600.0) == 0.05
        coordinator.core.cancel(h.job, clock[0])

        ticks: list[float] = []
        delays: list[float] = []
        real_tick, real_sleep_for = coordinator.tick, coordinator.sleep_for

        async def tick() -> None:
            ticks.append(clock[0])
            await real_tick()

        def sleep_for(tick_min: float, tick_max: float) -> float:
            delays.append(real_sleep_for(tick_min, tick_max))
            return delays[-1]

        coordinator.tick, coordinator.sleep_for = tick, sleep_for  # type: ignore[method-assign]
        watch = asyncio.ensure_future(coordinator.watch(tick_min=0.0, tick_max=3600.0))
        try:
            await async_eventually(lambda: delays, what="the first tick and its sleep")
            assert len(ticks) == 1 and delays == [3600.0]  # idle: it sleeps the whole ceiling
            ctx = CallContext(alice.node_id, None)  # type: ignore[arg-type]
            await coordinator._rpc_progress(ctx, {"job": b"x", "task": 0, "progress": 0.5})
            # progress only pushes a replica's next check later: nothing to tick for
            assert not coordinator.wake.is_set() and len(ticks) == 1
            await coordinator._rpc_done(ctx, {"job": b"x", "task": 0, "state": "done"})
            await async_eventually(lambda: len(ticks) == 2, what="a tick after a report")
            bus.emit(EventKind.PEER_UNLINKED, peer="someone", reason="closed")
            await async_eventually(lambda: len(ticks) == 3, what="a tick after a link drops")
            await async_eventually(lambda: len(delays) == 3, what="the loop to sleep again")
            assert set(delays) == {3600.0}  # no job: each sleep is the ceiling, not a poll
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await coordinator.close()
            db.close()

    run(scenario())


class FakeDirectory:
    """The directory as the driver uses it for placement: two workers, nothing else."""

    def __init__(self, workers: list[bytes]) -> None:
        self.nodes = workers

    async def refresh(self) -> None:
        return None

    def workers(self) -> list[tuple[bytes, dict]]:
        return [(w, {"slots": 2, "qubits": 30, "backlog": 0.0}) for w in self.nodes]

    def rtt(self, node: bytes) -> float:
        return 0.01

    def note(self, node: bytes, reply: Any) -> None:
        return None

    def forget(self, node: bytes) -> None:
        return None

    def busy(self, node: bytes) -> None:
        return None


def test_a_worker_that_never_answers_an_offer_holds_up_no_other_job(alice) -> None:
    """One watch loop serves every job: a tick that awaited its offers (60 s timeout each) let
    one silent worker stop every other job's deadline, poll and straggler check. The sends run
    in the background now, and the core still never offers or fetches a replica twice."""
    from qiz.compute.coordinator import Coordinator
    from qiz.events import EventBus

    silent, other = WORKERS[0], WORKERS[1]
    doc = {"kind": "sampler", "params": {"qasm": BELL, "shots": 16}, "replicas": 2, "seed": 5}
    slow = specs.parse(signed({**doc, "deadline": 600}, alice))
    short = specs.parse(signed({**doc, "deadline": 10}, alice))
    job_of = {slow.raw: slow.job_id, short.raw: short.job_id}

    async def scenario() -> None:
        db = open_db(None)
        tables = CoordinatorTables(db)
        clock = [100.0]
        sent: list[tuple[str, bytes, bytes]] = []

        async def send(peer: bytes, method: str, body: dict, *, timeout: float) -> Any:
            job = job_of[body["spec"]] if method == "job.offer" else body["job"]
            sent.append((method, peer, job))
            if method == "job.offer" and peer == silent:
                await asyncio.get_running_loop().create_future()  # never answers
            return {"state": "queued" if method == "job.offer" else "running"}

        coordinator = Coordinator(
            alice,
            tables,
            PeerScores(db),
            directory=FakeDirectory([silent, other]),  # type: ignore[arg-type]
            send=send,
            events=EventBus(),
            clock=lambda: clock[0],
        )
        coordinator._linked = lambda worker: True  # type: ignore[method-assign]
        for spec in (slow, short):  # running jobs of a previous run: the first tick places them
            tables.add_job(spec.job_id, spec.raw, clock[0])
        coordinator.resume()
        watch = asyncio.ensure_future(coordinator.watch(tick_min=0.0, tick_max=3600.0))
        try:
            await async_eventually(
                lambda: len({(p, j) for m, p, j in sent if m == "job.offer"}) == 4,
                what="both jobs offered to both workers",
            )
            clock[0] = 111.0  # past the short job's deadline (110)
            coordinator.wake.set()  # what the loop's timer does at that deadline
            await async_eventually(
                lambda: tables.job(short.job_id).state == "failed",
                what="the short job failing at its deadline while an offer hangs",
            )
            assert "deadline (10 s)" in tables.job(short.job_id).error
            clock[0] = 120.0  # more ticks: the silent worker's replica is only ever offered
            coordinator.wake.set()
            await async_eventually(
                lambda: sent.count(("job.fetch", other, slow.job_id)) >= 2,
                what="the answering worker polled on later ticks",
            )
            offered = [(p, j) for m, p, j in sent if m == "job.offer"]
            assert sorted(offered) == sorted(
                [(w, j) for w in (silent, other) for j in (slow.job_id, short.job_id)]
            )  # once each: the hanging offer is not sent again
            assert ("job.fetch", silent, slow.job_id) not in sent  # nor fetched meanwhile
            assert slow.job_id in coordinator.core.jobs
            assert (0, silent) in coordinator.core.jobs[slow.job_id].offering
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await coordinator.close()
            db.close()

    run(scenario())


def test_progress_is_the_quorums_replica_and_never_one_before_a_replica_is_done() -> None:
    """Issue 14: a job showed 100% while its one replica still ran (an optimizer's estimate
    overshoots, and the status took the best replica although the quorum waits for the
    q-th)."""
    h = Harness(replicas=2)
    actions = h.start()
    h.accept_all(actions, 0.1)
    a, b = h.placed(0)

    def push(worker: bytes, value: float) -> dict:
        h.core.progress(worker, {"job": h.job, "task": 0, "progress": value}, 0.2)
        return job_status(h.tables.job(h.job), h.tables.replicas(h.job), h.core.live(h.job))

    status = push(a, 1.0)  # a worker's estimate says all; it has not reported done
    assert [r.progress for r in status.replicas if r.worker.digest == a] == [0.99]
    assert status.progress == 0.0  # the quorum of 2 waits for b, which has not started
    assert push(b, 0.5).progress == 0.5
    h.core.report(a, h.done(a, 0), 1.0)
    status = job_status(h.tables.job(h.job), h.tables.replicas(h.job), h.core.live(h.job))
    assert status.progress == 0.5 and status.as_dict()["replicas"][0]["reason"] is None
    h.core.report(b, h.done(b, 0), 1.1)
    final = job_status(h.tables.job(h.job), h.tables.replicas(h.job), h.core.live(h.job))
    assert final.state == "done" and final.progress == 1.0
    # the optimizer's own estimate: evaluations over its iteration budget, capped
    seen: list[float] = []
    report = execute._per_evaluation(seen.append, 10)
    assert report is not None
    for done in (5, 10, 50):
        report(done, 0.0)
    assert seen == [0.5, 0.99, 0.99]


_SUBMITTER: list[NodeIdentity] = []


@given(st.text(min_size=0, max_size=5000))
def test_a_status_spec_cuts_long_strings_and_says_their_length(text) -> None:
    if not _SUBMITTER:  # one identity for every example (key generation is slow)
        _SUBMITTER.append(NodeIdentity.generate())
    alice = _SUBMITTER[0]
    body = specs.make_body(
        {"kind": "sampler", "params": {"qasm": text, "shots": 10}, "replicas": 1}, alice
    )
    summary = spec_summary(body)
    assert summary["submitter"] == str(alice.node_id) and summary["deadline_s"] == 3600
    assert (summary["replicas"], summary["quorum"], summary["kind"]) == (1, 1, "sampler")
    shown = summary["params"]["qasm"]
    if len(text) <= CUT_TEXT:
        assert shown == text
    else:
        assert shown == f"{text[:CUT_TEXT]}\u2026  ({len(text):,} characters)"
