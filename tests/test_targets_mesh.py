"""Device targets on the mesh (qiz/compute/devices.py; docs/targets.md, "On the mesh").

A sampler job (a circuits entry, a sampler sweep) may name a shipped target: the check on
arrival refuses an unknown name (listing the known ones), a circuit wider than the device, bad
field types, and a circuit that must fit as written but does not; the work it declares grows
with the noisy trajectories. A worker's run is ``qiz.quantum.targets.run``'s for the same
seeds. Nodes advertise their targets, Qiskit and adapters in bounded capacity records, and
placement offers a target job only to workers that advertise what it needs. A Qiskit-transpiled
target job is compared by the chi-square test even when seeded; one run as written keeps the
exact quorum. On a loopback mesh of two ``qiz node start`` processes an unseeded noisy job
runs on both, is accepted by the statistical quorum, and agrees with ``qiz run --target``.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.compute import circuits, devices, execute
from qiz.compute import spec as specs
from qiz.compute.actions import Offer
from qiz.compute.attest import Claim, make_attestation, verify_file
from qiz.compute.core import JobCore, WorkerView, check_capacity
from qiz.compute.directory import (
    MAX_CAPACITY_TEXT,
    checked_capacity,
    decode_capacity,
    encode_capacity,
)
from qiz.compute.errors import AttestationError, JobError, SpecError
from qiz.compute.jobdb import CoordinatorTables, open_db
from qiz.compute.placement import Item, PlacementError, PlacementProblem, WorkerInfo, solve
from qiz.compute.pool import WorkerPool
from qiz.compute.quorum import CHI2, EXACT, Replica, decide, result_digest
from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity
from qiz.quantum import qasm
from qiz.quantum.targets import catalog
from qiz.quantum.targets.run import run as run_on_target
from qiz.sim.jobs import sim_check_claim
from qiz.trust.scores import PeerScores

from .helpers import eventually, node_processes, node_state, ok_json, qiz, qiz_init

GHZ3 = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[3] c; '
    "h q[0]; cx q[0], q[1]; cx q[1], q[2]; c = measure q;"
)
# already in fake_manila's basis and on its coupled pairs (0-1, 1-2): runs with transpile none
FITS = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
    "sx q[0]; x q[1]; cx q[0], q[1]; c = measure q;"
)
# one qubit through an input angle: rz and sx are fake_manila basis gates
ROT = (
    'OPENQASM 3.0; include "stdgates.inc"; input float[64] ang; qubit[1] q; bit[1] c; '
    "rz(ang) q[0]; sx q[0]; c = measure q;"
)
DELTA = 1e-6
KNOWN = catalog.names()


def signed(doc: dict, who: NodeIdentity) -> bytes:
    return specs.sign(specs.make_body(doc, who), who)


def sampler(params: dict, seed: int | None = 3, **extra: object) -> dict:
    return {
        "kind": "sampler",
        "params": {"qasm": GHZ3, "shots": 500, **params},
        "seed": seed,
        **extra,
    }


def refusal(doc: dict, who: NodeIdentity) -> str:
    with pytest.raises(SpecError) as refused:
        specs.parse(signed(doc, who))
    return str(refused.value)


def wide(n: int) -> str:
    return f"OPENQASM 3.0; qubit[{n}] q; bit[{n}] c; x q[{n - 1}]; c = measure q;"


def eps(shots: int, bits: int, delta: float = DELTA) -> float:
    """TVD bound of ``shots`` draws over 2^bits outcomes (docs/noise.md, the statistics)."""
    return math.sqrt((2**bits * math.log(2) + math.log(1 / delta)) / (2 * shots))


def tvd(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


# ----------------------------------------------------------------------------- the spec check


@given(st.text(min_size=1, max_size=40).filter(lambda s: s not in KNOWN))
@settings(max_examples=40, deadline=None)
def test_an_unknown_target_is_refused_with_the_known_ones_listed(alice, name: str) -> None:
    message = refusal(sampler({"target": name}), alice)
    assert message.startswith("params.target: ")
    assert all(known in message for known in KNOWN)


@given(
    st.sampled_from(["target", "transpile", "transpile_seed"]),
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.text(max_size=12),
    ),
)
@settings(max_examples=120, deadline=None)
def test_bad_target_fields_are_refused_by_name(alice, field: str, value: object) -> None:
    params: dict = {"target": "fake_manila", field: value}
    good = (
        (field == "target" and value in KNOWN)
        or (field == "transpile" and value in devices.TRANSPILERS)
        or (
            field == "transpile_seed"
            and isinstance(value, int)
            and not isinstance(value, bool)
            and 0 <= value < 2**63
        )
    )
    if good:
        specs.parse(signed(sampler(params), alice))
        return
    message = refusal(sampler(params), alice)
    assert message.startswith(f"params.{field}"), message  # (or an element of it)


def test_a_circuit_wider_than_the_target_is_refused_plainly(alice) -> None:
    assert refusal(sampler({"qasm": wide(6), "target": "fake_manila"}), alice) == (
        "params.qasm: the circuit has 6 qubits; fake_manila has 5"
    )
    spec = specs.parse(signed(sampler({"qasm": wide(5), "target": "fake_manila"}), alice))
    assert spec.num_qubits == 5
    # inside a circuits job and a sweep's base the path names the entry
    entries = [{"qasm": GHZ3}, {"qasm": wide(6), "target": "fake_manila", "shots": 10}]
    doc = {"kind": "circuits", "params": {"circuits": entries}, "seed": 1}
    assert refusal(doc, alice).startswith("params.circuits[1].qasm: the circuit has 6 qubits")


def test_other_refusals_name_their_field(alice) -> None:
    assert refusal(sampler({"transpile": "none"}), alice) == (
        "params.transpile: only with a target (give params.target)"
    )
    message = refusal(sampler({"target": "fake_manila", "transpile": "none"}), alice)
    assert message.startswith("params.qasm: gate h is not a basis gate")
    assert "leave transpile at qiskit" in message
    dynamic = (
        "OPENQASM 3.0; qubit[1] q; bit[1] c; h q[0]; c[0] = measure q[0]; "
        "if (c[0]) { x q[0]; } c[0] = measure q[0];"
    )
    assert "classical control" in refusal(
        sampler({"qasm": dynamic, "target": "fake_manila"}), alice
    )
    specs.parse(
        signed(sampler({"qasm": FITS, "target": "fake_manila", "transpile": "none"}), alice)
    )


def test_a_target_run_declares_its_trajectories_as_work(alice) -> None:
    plain = specs.parse(signed(sampler({}), alice))
    noisy = specs.parse(signed(sampler({"target": "fake_sherbrooke"}), alice))
    assert noisy.tasks[0].shape.evaluations == 500 * devices.NOISY_PASSES
    assert noisy.tasks[0].work == plain.tasks[0].work * 500 * devices.NOISY_PASSES
    # and the work limit sees it: what a plain sampler may do, a noisy one may not
    small = specs.Limits(max_work=plain.tasks[0].work * 10)
    specs.parse(signed(sampler({}), alice), small)
    with pytest.raises(SpecError, match="units of work"):
        specs.parse(signed(sampler({"target": "fake_sherbrooke"}), alice), small)


def test_target_entries_of_a_circuits_job_and_a_sampler_sweep_are_checked_and_run(alice) -> None:
    entries = [
        {"qasm": GHZ3, "shots": 50, "target": "fake_manila", "seed": 4},
        {"qasm": GHZ3, "shots": 50, "seed": 4},
    ]
    doc = {"kind": "circuits", "params": {"circuits": entries}, "seed": 1}
    spec = specs.parse(signed(doc, alice))
    assert devices.needs(spec) == {"target:fake_manila", "qiskit"}
    assert spec.tasks[0].shape.evaluations == 50 * devices.NOISY_PASSES + 1
    got = circuits.run(spec.tasks[0].params, spec.seed)
    assert got == [execute.run("sampler", circuits.sampler_params(e), 4) for e in entries]
    assert set(got[1]["counts"]) == {"000", "111"} and len(got[0]["counts"]) > 2  # noisy
    # a sampler sweep's base: checked as a sampler's params, every point run on the target
    base = {"qasm": ROT, "inputs": {"ang": 0.0}, "target": "fake_manila", "transpile": "none"}
    sweep = {
        "kind": "sweep",
        "params": {"over": "sampler", "base": base, "axes": {"inputs.ang": [0.0, math.pi]}},
        "seed": 2,
    }
    spec = specs.parse(signed(sweep, alice))
    assert devices.needs(spec) == {"target:fake_manila"} and not devices.statistical(spec)
    points = execute.run_points("sampler", base, spec.tasks[0].points, 2)
    for point in points:
        params = {**base, "inputs": {"ang": point["point"]["inputs.ang"]}}
        assert {k: v for k, v in point.items() if k != "point"} == execute.run("sampler", params, 2)
    wide_base = {**base, "qasm": ROT.replace("qubit[1]", "qubit[6]").replace("bit[1]", "bit[6]")}
    sweep["params"] = {"over": "sampler", "base": wide_base, "axes": {"inputs.ang": [0.1]}}
    assert refusal(sweep, alice) == "params.base.qasm: the circuit has 6 qubits; fake_manila has 5"


# ----------------------------------------------------------------------------- the run


def test_a_worker_process_runs_what_qiz_quantum_targets_run_gives_for_the_same_seeds() -> None:
    params = {"qasm": GHZ3, "shots": 3000, "target": "fake_sherbrooke", "transpile_seed": 9}
    local = run_on_target(
        qasm.loads(GHZ3), catalog.load("fake_sherbrooke"), 3000, 17, transpile_seed=9
    )
    expected = {"counts": dict(sorted(local.result.counts.items())), "shots": 3000}
    assert execute.run("sampler", params, 17) == expected

    async def in_a_worker_process() -> object:
        pool = WorkerPool(1, warm_up=False, memory_limit=1 << 30)
        try:
            job = {"kind": "sampler", "params": params, "points": None, "seed": 17}
            return await pool.run(job)
        finally:
            await pool.close()

    assert asyncio.run(in_a_worker_process()) == expected
    assert local.transpiler.startswith("qiskit") and len(local.physical_qubits) == 3
    # another sampling seed, the same transpiled circuit: the same distribution
    other = execute.run("sampler", params, 18)
    bound = 2 * eps(3000, 3, DELTA / 2)
    assert other != expected and tvd(other["counts"], expected["counts"]) < bound


# ----------------------------------------------------------------------------- advertising


def test_a_node_advertises_its_targets_qiskit_and_adapters_in_a_bounded_record() -> None:
    mine = devices.advertised()
    assert mine["targets"] == KNOWN and mine["qiskit"] == devices.qiskit_version()
    figures = {"qubits": 20, "cores": 2, "slots": 2, "queue": 0, "backlog": 0.5, "engine": "e"}
    record = {**figures, **mine}
    text = encode_capacity(record)
    assert decode_capacity(text) == record and len(text) < MAX_CAPACITY_TEXT
    assert devices.features(record) >= {f"target:{n}" for n in KNOWN}
    assert decode_capacity(encode_capacity(figures)) == figures  # an older node's: no features
    longest = {
        **figures,
        "targets": [f"t{i:02d}".ljust(devices.MAX_FEATURE_NAME, "x") for i in range(16)],
        "adapters": ["a".ljust(devices.MAX_FEATURE_NAME, str(i)) for i in range(4)],
        "qiskit": "9" * devices.MAX_FEATURE_NAME,
    }
    assert len(encode_capacity(longest)) <= MAX_CAPACITY_TEXT  # the most a node may say fits
    bad = [
        {"targets": [f"t{i}" for i in range(devices.MAX_ADVERTISED_TARGETS + 1)]},
        {"adapters": ["a", "b", "c", "d", "e"]},
        {"targets": ["x" * (devices.MAX_FEATURE_NAME + 1)]},
        {"targets": ["Fake Manila"]},
        {"targets": ["fake_manila", "fake_manila"]},
        {"targets": "fake_manila"},
        {"qiskit": 2},
        {"qiskit": "2.6; rm"},
        {"unknown": 1},
    ]
    for extra in bad:
        assert checked_capacity({**figures, **extra}) is None, extra


@given(
    st.dictionaries(
        st.sampled_from(["targets", "adapters", "qiskit"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=30),
            lambda inner: st.lists(inner, max_size=20),
            max_leaves=40,
        ),
    )
)
@settings(max_examples=200, deadline=None)
def test_advertised_features_check_to_bounded_names_or_none(extra: dict) -> None:
    figures = {"qubits": 20, "cores": 2, "slots": 2, "queue": 0, "backlog": 0.5, "engine": "e"}
    checked = checked_capacity({**figures, **extra})
    if checked is not None:
        assert len(checked.get("targets", [])) <= devices.MAX_ADVERTISED_TARGETS
        assert len(checked.get("adapters", [])) <= devices.MAX_ADVERTISED_ADAPTERS
        for word in devices.features(checked):
            assert len(word.partition(":")[2] or word) <= devices.MAX_FEATURE_NAME


def test_a_node_without_qiskit_advertises_none_and_refuses_what_needs_it(alice) -> None:
    """In a process where importing qiskit fails: the node advertises its targets, no Qiskit
    and no IBM adapter; its worker refuses an offer of a transpiled target job, by name, and
    takes one run as written."""
    doc = sampler({"qasm": FITS, "target": "fake_manila", "transpile": "none"})
    offers = [signed(sampler({"target": "fake_manila"}), alice).hex(), signed(doc, alice).hex()]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_QISKIT],
        input=json.dumps(offers),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    braket = ["braket"] if devices.installed("braket") else []  # needs no qiskit; ibm does
    assert out["capacity"] == {"targets": KNOWN, "qiskit": None, "adapters": braket}
    code, message = out["refused"]
    assert code == "refused" and "this worker cannot run qiskit (to transpile)" in message
    assert out["accepted"] == "queued" and out["qiskit_loaded"] == []


WITHOUT_QISKIT = """
import asyncio, json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "qiskit" or name.startswith(("qiskit.", "qiskit_")):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from qiz.compute import spec as specs
from qiz.compute.jobdb import WorkerTables, open_db
from qiz.compute.pool import WorkerPool
from qiz.compute.worker import Worker
from qiz.identity import NodeIdentity
from qiz.qmp.rpc import CallContext, RpcError

async def main(transpiled, as_written):
    me = NodeIdentity.generate()
    async def nowhere(*args, **kwargs):
        raise ConnectionError("no coordinator here")
    pool = WorkerPool(1, warm_up=False)
    worker = Worker(me, WorkerTables(open_db(None)), pool, specs.Limits(), nowhere)
    ctx = CallContext(me.node_id, None)
    out = {"capacity": {k: worker.capacity()[k] for k in ("targets", "qiskit", "adapters")}}
    try:
        await worker._rpc_offer(ctx, {"spec": transpiled, "task": 0, "seed": 3})
    except RpcError as exc:
        out["refused"] = [exc.code, exc.message]
    reply = await worker._rpc_offer(ctx, {"spec": as_written, "task": 0, "seed": 3})
    out["accepted"] = reply["state"]
    await worker.close()
    await pool.close()
    out["qiskit_loaded"] = sorted(m for m in sys.modules if m.startswith("qiskit"))
    print(json.dumps(out))

asyncio.run(main(*(bytes.fromhex(h) for h in json.load(sys.stdin))))
"""


# ----------------------------------------------------------------------------- placement


ME = b"\x00" * 32
WITH, WITHOUT, NO_QISKIT = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def views() -> list[WorkerView]:
    full = frozenset({"target:fake_manila", "qiskit"})
    return [
        WorkerView(WITHOUT, 4, 30, 0.0, 0.001),  # idle and close: greedy's first choice
        WorkerView(WITH, 1, 30, 5.0, 0.05, full),
        WorkerView(NO_QISKIT, 4, 30, 0.0, 0.001, frozenset({"target:fake_manila"})),
        WorkerView(b"\x04" * 32, 1, 30, 5.0, 0.05, full),
    ]


def core() -> JobCore:
    db = open_db(None)
    return JobCore(
        CoordinatorTables(db),
        PeerScores(db),
        self_id=ME,
        attest=lambda spec, decisions, now: b"",
        check_claim=sim_check_claim,
    )


def test_placement_offers_a_target_job_only_to_workers_that_advertise_it(alice) -> None:
    spec = specs.parse(signed(sampler({"target": "fake_manila"}, replicas=2), alice))
    c = core()
    actions = c.submit(spec, 0.0) + c.place(spec.job_id, views(), 0.0)
    assert sorted(a.worker for a in actions if isinstance(a, Offer)) == [WITH, b"\x04" * 32]
    # run as written it needs no qiskit: the idle worker without it is taken first
    doc = sampler({"qasm": FITS, "target": "fake_manila", "transpile": "none"}, replicas=2)
    spec = specs.parse(signed(doc, alice))
    c = core()
    actions = c.submit(spec, 0.0) + c.place(spec.job_id, views(), 0.0)
    assert NO_QISKIT in {a.worker for a in actions if isinstance(a, Offer)}
    assert WITHOUT not in {a.worker for a in actions if isinstance(a, Offer)}
    # a plain job goes anywhere
    plain = specs.parse(signed(sampler({}, replicas=2), alice))
    c = core()
    actions = c.submit(plain, 0.0) + c.place(plain.job_id, views(), 0.0)
    assert WITHOUT in {a.worker for a in actions if isinstance(a, Offer)}


def test_a_target_no_known_worker_offers_is_refused_at_submission(alice) -> None:
    spec = specs.parse(signed(sampler({"target": "fake_torino"}, replicas=2), alice))
    with pytest.raises(JobError) as refused:
        check_capacity(spec, views())
    assert str(refused.value) == (
        "the job needs a worker with qiskit (to transpile) and target fake_torino; "
        "none of the 4 known offers it"
    )
    spec = specs.parse(signed(sampler({"target": "fake_manila"}, replicas=3), alice))
    with pytest.raises(JobError, match=r"quorum is 3 distinct workers .* target fake_manila; 2"):
        check_capacity(spec, views())


def test_every_solver_keeps_an_item_off_workers_without_its_needs() -> None:
    workers = (
        WorkerInfo(4, 30),
        WorkerInfo(1, 30, features=frozenset({"target:a"})),
        WorkerInfo(1, 30, features=frozenset({"target:a", "qiskit"})),
    )
    items = tuple(Item(t, 1.0, 3, frozenset({"target:a"})) for t in range(3))
    problem = PlacementProblem(items, workers)
    for method in ("greedy", "annealing", "exact", "qaoa"):
        placement = solve(problem, method)
        assert problem.valid(placement.assignment) and 0 not in placement.assignment, method
    needy = PlacementProblem((Item(0, 1.0, 3, frozenset({"qiskit", "target:b"})),), workers)
    with pytest.raises(PlacementError, match="needs 3 qubits and qiskit, target:b"):
        solve(needy)


# ----------------------------------------------------------------------------- the quorum


def replica(who: NodeIdentity, spec: specs.JobSpec, result: dict, seed: int) -> Replica:
    """A replica as a worker would report it: its claim signed by ``who``."""
    digest = result_digest(result)
    sig = Claim(spec.job_id, 0, seed, execute.ENGINE, digest).sign(who)
    key = who.public_key.raw
    worker = NodeId.from_public_key(key).digest
    return Replica(worker, key, seed, execute.ENGINE, result, digest, sig)


def test_a_seeded_target_job_is_decided_statistically_unless_run_as_written(alice, bob) -> None:
    transpiled = specs.parse(signed(sampler({"target": "fake_manila"}, seed=5), alice))
    doc = sampler({"qasm": FITS, "target": "fake_manila", "transpile": "none"}, seed=5)
    as_written = specs.parse(signed(doc, alice))
    unseeded = specs.parse(signed(sampler({"target": "fake_manila"}, seed=None), alice))
    plain = specs.parse(signed(sampler({}, seed=5), alice))
    assert devices.statistical(transpiled) and devices.statistical(unseeded)
    assert not devices.statistical(as_written) and not devices.statistical(plain)
    # a replica whose transpiled circuit differs in its gates (another Qiskit) draws other
    # counts of the same distribution; another sampling stream stands in for it here: honest,
    # it disagrees by digest and agrees by chi-square
    params = transpiled.tasks[0].params
    a = execute.run("sampler", params, 5)
    b = execute.run("sampler", params, 6)
    assert a != b
    both = [replica(alice, transpiled, a, 5), replica(bob, transpiled, b, 5)]
    assert decide(both, 2, False) is None
    decision = decide(both, 2, devices.statistical(transpiled))
    assert decision is not None and decision.test == CHI2
    # the attestation's test must fit the spec: chi2 for the transpiled seeded job, exact as
    # written; a file claiming the other test is refused
    for spec, test in ((transpiled, CHI2), (as_written, EXACT)):
        result = execute.run("sampler", spec.tasks[0].params, 5)
        same = [replica(alice, spec, result, 5), replica(bob, spec, result, 5)]
        decision = decide(same, 2, devices.statistical(spec))
        assert decision is not None and decision.test == test
        assert verify_file(make_attestation(alice, spec, [decision], "e", 0.0)).tests == (test,)
        other = replace(decision, test=EXACT if test == CHI2 else CHI2, p_value=1.0)
        with pytest.raises(AttestationError, match="does not fit the spec's seed and target"):
            verify_file(make_attestation(alice, spec, [other], "e", 0.0))


# ----------------------------------------------------------------------------- on a mesh


@pytest.mark.timeout(180)
def test_an_unseeded_noisy_job_runs_on_two_workers_and_agrees_with_qiz_run(
    tmp_path: Path,
) -> None:
    from qiz.client import Mesh

    shots = 20_000
    (tmp_path / "ghz.qasm").write_text(GHZ3)
    qiz_init(tmp_path, "A", "B")
    with node_processes(tmp_path) as start:
        a = start("A", args=["--slots", "1"])
        b = start("B", [a.bootstrap], args=["--slots", "1"])
        eventually(lambda: (node_state(a) or {}).get("dht", {}).get("contacts", 0) >= 1, 60, "B")
        for node in (a, b):
            worker = (node_state(node) or {})["compute"]["worker"]
            assert worker["targets"] == KNOWN and worker["qiskit"] == devices.qiskit_version()
        doc = {
            "kind": "sampler",
            "params": {"qasm": GHZ3, "shots": shots, "target": "fake_manila"},
        }
        job = Mesh(tmp_path / "A").submit(doc, replicas=2)
        result = job.result(timeout=150)
        local = ok_json(
            qiz(tmp_path, "run", "ghz.qasm", "--target", "fake_manila", "--shots", str(shots),
                "--seed", "0", "--json")
        )  # fmt: skip
    assert result.attestation.tests == (CHI2,) and len(set(result.attestation.workers)) == 2
    counts = result.value["counts"]
    assert sum(counts.values()) == shots
    bound = 2 * eps(shots, 3, DELTA / 2)
    assert tvd(counts, local["counts"]) <= bound
    # the noise was simulated: a noiseless GHZ (half 000, half 111) is farther than the bound
    assert tvd(counts, {"000": 1, "111": 1}) > bound
    assert json.loads(json.dumps(local["target"]))["transpiler"].startswith("qiskit")
