"""Circuit cutting across a real mesh: three ``qiz node start`` processes on loopback.

The sub-experiments run as one circuits job, each task replicated on two distinct workers and
attested; the values reconstructed agree with the exact ones of the uncut circuit within five of the
standard deviations the run states (see tests/test_cutting.py and the module's notes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("qiskit_addon_cutting")

from qiskit import qasm3
from qiskit.quantum_info import SparsePauliOp

from qiz.client import Mesh

from .helpers import eventually, node_processes, node_state, ok_json, qiz, qiz_init
from .test_cutting import SIGMAS, exact, two_blocks

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """Homes A, B, C running, one worker slot each (as tests/test_client.py)."""
    work = tmp_path_factory.mktemp("cutting")
    ids = qiz_init(work, "A", "B", "C")
    with node_processes(work) as start:
        first = start("A", args=["--slots", "1"])
        for name in "BC":
            start(name, [first.bootstrap], args=["--slots", "1"])

        def joined() -> bool:
            status = node_state(first)
            return bool(status) and status["dht"]["contacts"] >= 2

        eventually(joined, 60, "the mesh")
        yield work, ids


def test_a_cut_circuit_runs_as_attested_mesh_jobs(mesh: tuple[Path, dict[str, str]]) -> None:
    work, ids = mesh
    qc = two_blocks(2)
    observables = [SparsePauliOp("ZZZZ"), SparsePauliOp(["XIIZ", "IZZI"], [0.5, -1.0])]
    result = Mesh(work / "A").run_cut(qc, observables, max_qubits=3, shots=2000, seed=4)
    assert result.cuts == [{"type": "gate", "gate": "cx", "qubits": [1, 2]}]
    assert max(result.subcircuit_widths.values()) <= 3
    # every sub-experiment in one circuits job, its shards each on two distinct workers
    assert len(result.jobs) == len(result.attestations) == 1
    for job, attestation in zip(result.jobs, result.attestations, strict=True):
        assert job["kind"] == "circuits" and len(set(job["workers"])) >= 2
        assert attestation.submitter == ids["A"] and attestation.quorum == 2
    for value, bound, op in zip(result.values, result.std_bounds, observables, strict=True):
        assert abs(value - exact(qc, op)) <= SIGMAS * bound, (value, exact(qc, op), bound)


def test_qiz_cut_on_the_mesh_answers_json(mesh: tuple[Path, dict[str, str]]) -> None:
    work, _ = mesh
    program = work / "blocks.qasm"
    program.write_text(qasm3.dumps(two_blocks(2)))
    answer = ok_json(
        qiz(
            work,
            "--home",
            "A",
            "cut",
            program,
            "-o",
            "ZZZZ",
            "--max-qubits",
            "3",
            "--shots",
            "1000",
            "--seed",
            "9",
            "--json",
            timeout=180,
        )
    )
    assert not answer["local"] and len(answer["jobs"]) == 1 and answer["num_runs"] > 1
    bound = answer["std_bounds"][0]
    assert abs(answer["values"][0] - exact(two_blocks(2), SparsePauliOp("ZZZZ"))) <= SIGMAS * bound
