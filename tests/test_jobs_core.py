"""The compute layer's pure parts: specs, kinds, quorum and the chi-square test, placement,
attestations; and the worker process pool (real processes)."""

from __future__ import annotations

import asyncio
import itertools
import random

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from qiz import wire
from qiz.compute import core as jobcore
from qiz.compute import execute
from qiz.compute import spec as specs
from qiz.compute.attest import Claim, check_claim, make_attestation, verify_file
from qiz.compute.core import (
    EXTRA_ATTEMPTS,
    STRAGGLER_FLOOR,
    CancelAt,
    Emit,
    Fetch,
    Forget,
    JobCore,
    JobFailed,
    JobFinished,
    Offer,
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
from qiz.compute.status import job_status
from qiz.events import EventKind
from qiz.identity import NodeIdentity
from qiz.quantum.algorithms.qaoa import QaoaSimulator
from qiz.quantum.problems.graphs import random_regular
from qiz.quantum.problems.qubo import QuboProblem
from qiz.sim.jobs import sim_check_claim, sim_claim, sim_spec
from qiz.trust.scores import INITIAL, PeerScores

from .helpers import run

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
    "job", "state", "error", "kind", "over", "created", "updated", "deadline",
    "replicas_wanted", "quorum", "seed", "tasks", "decided", "progress", "replicas", "attested",
}  # fmt: skip


class Harness:
    """A JobCore over an in-memory database, with helpers that play the workers."""

    def __init__(self, *, tasks: int = 1, replicas: int = 2, deadline: int = 600) -> None:
        self.db = open_db(None)
        self.tables = CoordinatorTables(self.db)
        self.scores = PeerScores(self.db)
        self.attested: dict[bytes, list] = {}
        self.core = self.new_core()
        self.spec = sim_spec(1, tasks, replicas, 2, deadline, random.Random(3))
        self.job = self.spec.job_id
        self.views = [WorkerView(w, 2, 30, 0.0, 0.01) for w in WORKERS]

    def new_core(self) -> JobCore:
        def attest(spec, decisions, now) -> bytes:
            self.attested[spec.job_id] = list(decisions)
            return wire.encode([d.accepted.digest for d in decisions])

        return JobCore(
            self.tables, self.scores, self_id=ME, attest=attest, check_claim=sim_check_claim
        )

    def start(self, now: float = 0.0) -> list:
        actions = self.core.submit(self.spec, now)
        return actions + self.core.place(self.job, self.views, now)

    def done(self, worker: bytes, task: int, value: str = "right", seed: int | None = 1) -> dict:
        result = {"value": value}
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
