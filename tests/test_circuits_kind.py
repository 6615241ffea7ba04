"""The ``circuits`` job kind: many sampler runs as one signed job (qiz/compute/circuits.py).

Each circuit runs exactly as a sampler job with its entry's seed would, a task's result is the
list of its circuits' results in order, every bound and malformed entry is refused with its
path named, and unseeded replicas are compared statistically circuit by circuit.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.compute import circuits, execute, results
from qiz.compute import spec as specs
from qiz.compute.errors import SpecError
from qiz.compute.quorum import ALPHA, Replica, decide, result_digest, sampled_agreement
from qiz.identity import NodeIdentity

BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
    "h q[0]; cx q[0], q[1]; c = measure q;"
)
ROT = (
    'OPENQASM 3.0; include "stdgates.inc"; input float[64] ang; qubit[1] q; bit[1] c; '
    "rx(ang) q[0]; c = measure q;"
)


def signed(doc: dict, who: NodeIdentity) -> bytes:
    return specs.sign(specs.make_body(doc, who), who)


def doc_of(entries: list[dict], shard: int | None = None, seed: int | None = 5) -> dict:
    params: dict = {"circuits": entries}
    if shard is not None:
        params["shard"] = shard
    return {"kind": "circuits", "params": params, "seed": seed}


def test_each_circuit_runs_as_its_own_sampler_job_would(alice) -> None:
    entries = [
        {"qasm": BELL, "shots": 300, "seed": 11},
        {"qasm": ROT, "shots": 200, "inputs": {"ang": math.pi}, "seed": 12},
        {"qasm": ROT, "shots": 100, "inputs": {"ang": 0.7}},  # the job's seed
    ]
    spec = specs.parse(signed(doc_of(entries, shard=2), alice))
    assert spec.kind == "circuits" and spec.sampled and len(spec.tasks) == 2
    assert [len(t.params["circuits"]) for t in spec.tasks] == [2, 1]
    got = [r for task in spec.tasks for r in circuits.run(task.params, spec.seed)]
    expected = [
        execute.run("sampler", circuits.sampler_params(e), e.get("seed", spec.seed))
        for e in entries
    ]
    assert got == expected
    assert got[1]["counts"] == {"1": 200}  # rx(pi) turns the qubit over
    assert sum(got[0]["counts"].values()) == 300 and set(got[0]["counts"]) <= {"00", "11"}
    for task in spec.tasks:  # the coordinator's shape check takes them
        shape = results.shape_of(task)
        assert shape is not None and results.problem(shape, circuits.run(task.params, 5)) is None
    assert circuits.summarise([got[:2], got[2:]]) == "3 circuits, 600 shots in all"


def test_a_task_result_of_the_wrong_form_is_named(alice) -> None:
    spec = specs.parse(signed(doc_of([{"qasm": BELL, "shots": 10}] * 2), alice))
    shape = results.shape_of(spec.tasks[0])
    assert shape is not None
    good = circuits.run(spec.tasks[0].params, 1)
    assert "needs a list of 2 results" in (results.problem(shape, good[:1]) or "")
    assert "needs a list of 2 results" in (results.problem(shape, {"counts": {}}) or "")
    bad = [good[0], {"counts": {"00": 3}, "shots": 10}]  # counts that do not add up
    assert (results.problem(shape, bad) or "").startswith("circuit 1:")
    wide = [good[0], {"counts": {"000": 10}, "shots": 10}]  # an outcome wider than the circuit
    assert (results.problem(shape, wide) or "").startswith("circuit 1:")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"circuits": []}, r"params.circuits: must be a list of 1 to 256"),
        ({"circuits": [{"qasm": BELL}] * 257}, r"params.circuits: must be a list of 1 to 256"),
        ({"circuits": "x"}, r"params.circuits: must be a list"),
        ({"circuits": [{"qasm": BELL}], "colour": 1}, r"params.colour: is not a circuits field"),
        ({"circuits": [{"qasm": BELL}], "shard": 0}, r"params.shard: must be a whole number"),
        ({"circuits": [{"qasm": BELL}], "shard": True}, r"params.shard: must be a whole number"),
        ({"circuits": [{"qasm": BELL}, 3]}, r"params.circuits\[1\]: must be a map"),
        (
            {"circuits": [{"qasm": BELL, "gate": "h"}]},
            r"params.circuits\[0\].gate: is not a circuit field",
        ),
        (
            {"circuits": [{"qasm": BELL}, {"qasm": "OPENQASM 3.0; qubit[2] q; h q[5];"}]},
            r"params.circuits\[1\]",
        ),
        (
            {"circuits": [{"qasm": BELL, "shots": 0}]},
            r"params.circuits\[0\].shots: must be a whole number from 1",
        ),
        (
            {"circuits": [{"qasm": BELL, "shots": 600_000}] * 2},
            "more than 1000000 shots in all",
        ),
        (
            {"circuits": [{"qasm": BELL + " " * 100_000}] * 2},
            "the programs together are over 196608 bytes",
        ),
        (
            {"circuits": [{"qasm": BELL, "seed": -1}]},
            r"params.circuits\[0\].seed: must be a whole number",
        ),
    ],
)
def test_malformed_circuits_jobs_are_refused_with_the_path_named(alice, params, message) -> None:
    raw = signed({"kind": "circuits", "params": params, "seed": 1}, alice)
    with pytest.raises(SpecError, match=message):
        specs.parse(raw, specs.Limits(max_spec_bytes=1 << 20))


def test_an_unseeded_job_may_not_seed_its_circuits_and_its_replicas_compare_statistically(
    alice,
) -> None:
    with pytest.raises(SpecError, match="seed null samples every circuit independently"):
        specs.parse(signed(doc_of([{"qasm": BELL, "seed": 3}], seed=None), alice))
    spec = specs.parse(signed(doc_of([{"qasm": BELL, "shots": 2000}] * 3, seed=None), alice))
    assert spec.seed is None and spec.sampled
    task = spec.tasks[0].params
    a, b, c = (circuits.run(task, s) for s in (1, 2, 3))
    assert a != b and sampled_agreement(a, b) >= ALPHA
    wrong = [a[0], a[1], {"counts": {"01": 2000}, "shots": 2000}]  # one circuit answered wrong
    assert sampled_agreement(a, wrong) < ALPHA

    def replica(result, worker):
        return Replica(worker, b"k", None, execute.ENGINE, result, result_digest(result), b"s")

    decision = decide([replica(a, b"a"), replica(wrong, b"w"), replica(c, b"c")], 2, True)
    assert decision is not None and {r.worker for r in decision.agreeing} == {b"a", b"c"}


def test_a_circuit_over_the_nodes_limits_is_named(alice) -> None:
    wide = "OPENQASM 3.0; qubit[12] q; bit[12] c; c = measure q;"
    raw = signed(doc_of([{"qasm": BELL}, {"qasm": wide}]), alice)
    with pytest.raises(SpecError, match=r"params.circuits\[1\]: 12 qubits; .* at most 8"):
        specs.parse(raw, specs.Limits(max_qubits=8))
    many = signed(doc_of([{"qasm": BELL, "shots": 100_000}] * 9), alice)
    with pytest.raises(SpecError, match="units of work"):
        specs.parse(many, specs.Limits(max_work=10.0))


entry_sizes = st.lists(
    st.tuples(st.integers(1, 40_000), st.integers(1, 400_000)), min_size=1, max_size=600
)


@given(entry_sizes)
def test_pack_splits_in_order_into_jobs_within_the_bounds(sizes) -> None:
    pytest.importorskip("qiskit")
    from qiz.integrations.qiskit import _fits, pack

    entries = [{"qasm": "x" * text, "shots": shots} for text, shots in sizes]
    batches = pack(entries)
    assert [i for batch in batches for i in batch] == list(range(len(entries)))
    for n, batch in enumerate(batches):
        assert _fits([entries[i] for i in batch])
        if n + 1 < len(batches):  # greedy: the next entry would not have fitted
            assert not _fits([entries[i] for i in (*batch, batches[n + 1][0])])


def test_programs_are_parsed_once_and_handed_out_as_copies() -> None:
    """A circuits job's entries share a few programs: each is parsed once per process (the
    cache is bounded and holds only small programs), and a caller's change to its circuit
    never reaches the next one."""
    execute._parsed.clear()
    first = execute._load(BELL)
    assert list(execute._parsed) == [BELL]
    first.append("x", [0])
    again = execute._load(BELL)
    assert again is not first and len(again.instructions) == len(first.instructions) - 1
    for i in range(execute.MAX_PARSED_PROGRAMS + 5):
        execute._load(BELL.replace("h q[0];", f"rz({i}) q[0]; h q[0];"))
    assert len(execute._parsed) == execute.MAX_PARSED_PROGRAMS and BELL not in execute._parsed
    big = BELL.replace("h q[0];", "h q[0]; " + "x q[1]; " * 2000)
    execute._load(big)
    assert big not in execute._parsed  # over MAX_PARSED_TEXT: parsed every time
