"""The compute layer's pure parts: specs, kinds, quorum and the chi-square test, placement,
attestations; and the worker process pool (real processes)."""

from __future__ import annotations

import asyncio
import itertools
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz import wire
from qiz.compute import execute
from qiz.compute import spec as specs
from qiz.compute.attest import Claim, make_attestation, verify_file
from qiz.compute.errors import AttestationError, SpecError, TaskFailed
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
from qiz.identity import NodeIdentity
from qiz.quantum.graphs import random_regular
from qiz.quantum.qaoa import QaoaSimulator
from qiz.quantum.qubo import QuboProblem

from .test_qmp_network import run

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
            await asyncio.sleep(1.0)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            assert pool.started_processes == 1 and pool.busy == 0
            assert await pool.run(job) == execute.run("qaoa", job["params"], 0)  # a fresh process
            assert pool.started_processes == 2
            runner = asyncio.ensure_future(pool.run(slow))
            await asyncio.sleep(1.0)
            next(iter(pool._all)).process.kill()
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
        await asyncio.sleep(0.5)
        await worker.close()
        await pool.close()
        (row,) = WorkerTables(db).all()
        assert row.state in ("queued", "running")  # not cancelled: a restart runs it again
        pool = WorkerPool(1, warm_up=False)
        again = Worker(bob, WorkerTables(db), pool, specs.Limits(), nowhere)
        again.resume()
        assert len(again._tasks) == 1
        await again.close()
        WorkerTables(db).update(job, 0, bob.node_id.digest, 0.0, state="failed", error="x")
        rerun = Worker(bob, WorkerTables(db), pool, specs.Limits(), nowhere)
        reply = await rerun._rpc_offer(ctx, {"spec": raw, "task": 0, "seed": 6})
        assert reply["state"] == "queued" and WorkerTables(db).all()[0].seed == 6
        await rerun.close()
        await pool.close()

    run(scenario(), timeout=120)
