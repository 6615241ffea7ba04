"""``qiz.client`` and Qiskit's primitives on a real mesh: three ``qiz node start`` processes on
loopback, one module-scoped mesh for every test here.

The examples of docs/python.md run as written; the client's jobs are replicated on distinct
workers and come back verified; its errors are the CLI's own lines, word for word; a Qiskit
user's script (a parametrized circuit, a SparsePauliOp, broadcast parameter values) runs on the
mesh and agrees with Qiskit's reference primitives within statistical error.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qiz import QizError
from qiz.client import ClientError, JobFailed, JobTimeout, Mesh
from qiz.control import NodeRefused

from .helpers import CLEAN_ENV, eventually, node_processes, node_state, ok_json, qiz, qiz_init

pytestmark = pytest.mark.timeout(240)
DOC = Path(__file__).resolve().parent.parent / "docs" / "python.md"
BELL = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""
# a job that runs for seconds: time enough to cancel it, or to stop waiting for it
SLOW = {"kind": "qaoa", "params": {"graph": "random:14,3", "p": 4, "maxiter": 400}}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """Homes A, B, C (D initialised, never started); A, B, C running, one worker slot each."""
    work = tmp_path_factory.mktemp("client")
    ids = qiz_init(work, "A", "B", "C", "D")
    with node_processes(work) as start:
        first = start("A", args=["--slots", "1"])
        for name in "BC":
            start(name, [first.bootstrap], args=["--slots", "1"])

        def joined() -> bool:
            status = node_state(first)
            return bool(status) and status["dht"]["contacts"] >= 2

        eventually(joined, 60, "the mesh")
        yield work, ids


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_examples_of_docs_python_md_run(mesh: tuple[Path, dict[str, str]]) -> None:
    """Every python block of the page, in order, in one interpreter (as a reader's session),
    with QIZ_HOME at node A; the attestation one of them saves verifies with the CLI."""
    work, ids = mesh
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 6
    runner = (
        "import sys\n"
        "namespace = {'__name__': '__main__'}\n"
        "for i, block in enumerate(BLOCKS):\n"
        "    exec(compile(block, f'docs/python.md, python block {i + 1}', 'exec'), namespace)\n"
        "print('all blocks ran')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", f"BLOCKS = {blocks!r}\n{runner}"],
        cwd=work,
        env={**CLEAN_ENV, "QIZ_HOME": str(work / "A")},
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "all blocks ran" in done.stdout
    verified = ok_json(qiz(work, "verify-result", "bell.att", "--json"))
    assert verified["verified"] and verified["submitter"] == ids["A"]
    assert len(set(verified["workers"])) == 2


def test_a_job_through_the_client_is_replicated_and_verified(
    mesh: tuple[Path, dict[str, str]],
) -> None:
    work, ids = mesh
    client = Mesh(work / "A")
    job = client.submit(
        {"kind": "sampler", "params": {"qasm": BELL, "shots": 300}}, seed=5, replicas=3
    )
    told = []
    result = job.result(timeout=120, progress=told.append)
    assert told[-1].state == "done" and told[-1].decided == told[-1].tasks == 1
    assert [s.state for s in told].count("done") == 1  # told once per change
    assert result.kind == "sampler" and set(result.value["counts"]) <= {"00", "11"}
    assert sum(result.value["counts"].values()) == 300
    attestation = job.attestation()
    assert attestation == result.attestation
    assert attestation.submitter == ids["A"] and attestation.quorum == 3
    assert sorted(attestation.workers) == sorted(ids[h] for h in "ABC")
    status = job.status()
    assert status.done and status.job_id == job.job_id and len(status.replicas) == 3
    # the CLI sees the same job, with the same result
    shown = ok_json(qiz(work, "--home", "A", "job", "result", job.job_id, "--json"))
    assert shown["results"] == result.results
    assert job.job_id in {j.job_id for j in client.jobs()}


def test_cancel_wait_timeout_and_a_failed_result_say_what_the_cli_says(
    mesh: tuple[Path, dict[str, str]],
) -> None:
    work, _ = mesh
    client = Mesh(work / "A")
    slow = client.submit(SLOW, seed=1)
    with pytest.raises(JobTimeout, match=r"did not end within 0.05 s; it goes on in the node"):
        slow.wait(timeout=0.05)
    cancelled = slow.cancel()
    assert cancelled.state == "cancelled" and cancelled.final
    assert slow.cancel().state == "cancelled"  # nothing left to cancel: the status, again
    with pytest.raises(JobFailed) as failed:
        slow.result(timeout=30)
    assert failed.value.status.state == "cancelled"
    cli = qiz(work, "--home", "A", "job", "status", slow.job_id, "--wait")
    assert cli.returncode == 1
    assert cli.stderr.strip() == f"qiz: {failed.value}"


def test_errors_are_the_cli_lines(
    mesh: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, _ = mesh
    monkeypatch.chdir(work)  # homes as a user types them: relative to here
    cases: list[tuple[Any, list[str]]] = [
        (lambda: Mesh("A").job("ffff").status(), ["--home", "A", "job", "status", "ffff"]),
        (lambda: Mesh("D").status(), ["--home", "D", "node", "status"]),
        (lambda: Mesh("nowhere").jobs(), ["--home", "nowhere", "job", "list"]),
    ]
    for call, argv in cases:
        with pytest.raises(QizError) as raised:
            call()
        cli = qiz(work, *argv)
        assert cli.returncode == raised.value.exit_code == 2  # 2: "qiz: error: ..."
        assert cli.stderr.strip() == f"qiz: error: {raised.value}"
    with pytest.raises(NodeRefused, match="no job submitted here starts with 'ffff'"):
        Mesh("A").job("ffff").cancel()
    with pytest.raises(ClientError, match=r"^the spec is invalid: params.shots: "):
        Mesh("A").submit({"kind": "sampler", "params": {"qasm": BELL, "shots": 0}})


def test_async_twins_and_no_blocking_inside_a_running_loop(
    mesh: tuple[Path, dict[str, str]],
) -> None:
    work, _ = mesh
    client = Mesh(work / "A")

    async def main() -> list[dict[str, int]]:
        with pytest.raises(ClientError, match=r"inside a running event loop use: await"):
            client.status()
        jobs = [
            await client.submit_async(
                {"kind": "sampler", "params": {"qasm": BELL, "shots": 64}, "seed": s}
            )
            for s in (1, 2)
        ]
        states = await asyncio.gather(*(j.wait_async(timeout=120) for j in jobs))
        assert all(s.done for s in states)
        results = await asyncio.gather(*(j.result_async() for j in jobs))
        assert (await jobs[0].attestation_async()).job_id == jobs[0].job_id
        assert (await jobs[0].cancel_async()).state == "done"
        return [r.value["counts"] for r in results]

    counts = asyncio.run(main())
    assert all(sum(c.values()) == 64 for c in counts)


# ----------------------------------------------------------------------------- Qiskit, mesh


def test_a_qiskit_users_script_runs_on_the_mesh_and_agrees_with_the_reference(
    mesh: tuple[Path, dict[str, str]],
) -> None:
    """Only the constructors differ from the reference run; the sampler's frequencies are
    within 5 sigma of the exact probabilities at every point; the estimator's values equal the
    reference's; every job ran on two distinct workers and came back attested."""
    from qiskit.circuit import Parameter, QuantumCircuit
    from qiskit.primitives import StatevectorEstimator, StatevectorSampler
    from qiskit.quantum_info import SparsePauliOp, Statevector

    from qiz.integrations.qiskit import MeshEstimatorV2, MeshSamplerV2

    work, ids = mesh
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.ry(a, 1)
    qc.cx(0, 2)
    qc.crx(2 * b + 0.3, 1, 2)
    qc.rzz(a - b, 0, 1)
    observables = [
        SparsePauliOp.from_list([("ZZI", 1.0), ("IXX", -0.5)]),
        SparsePauliOp("YIY"),
    ]
    params = np.stack(np.broadcast_arrays(np.array([0.2, 1.1])[:, None], [0.0, 0.7, 2.0]), -1)
    assert params.shape == (2, 3, 2)  # a 2 x 3 grid of (a, b): one sweep on the mesh
    measured = qc.measure_all(inplace=False)
    shots = 2000

    def script(sampler: Any, estimator: Any) -> tuple[Any, Any]:
        sampled = sampler.run([(measured, params)], shots=shots).result()[0]
        estimated = estimator.run([(qc, [[[o]] for o in observables], params)]).result()
        return sampled, estimated[0]

    client = Mesh(work / "A")
    ours = script(MeshSamplerV2(client, seed=3), MeshEstimatorV2(client))
    reference = script(StatevectorSampler(seed=3), StatevectorEstimator())

    sampled, estimated = ours
    assert sampled.data.meas.shape == reference[0].data.meas.shape == (2, 3)
    assert sampled.data.meas.num_shots == shots
    for index in np.ndindex(2, 3):
        exact = Statevector(qc.assign_parameters(params[index])).probabilities_dict()
        counts = sampled.data.meas.get_counts(loc=index)
        assert set(counts) <= {k for k, p in exact.items() if p > 1e-12}
        for key, p in exact.items():
            sigma = max(np.sqrt(p * (1 - p) / shots), 1 / shots)
            assert abs(counts.get(key, 0) / shots - p) <= 5 * sigma, (index, key)
    assert estimated.data.evs.shape == (2, 2, 3)
    assert np.allclose(estimated.data.evs, reference[1].data.evs, atol=1e-9)
    for result in ours:
        jobs = result.metadata["jobs"]
        assert len(jobs) == 1 and jobs[0]["kind"] == "sweep"  # the grid in one job
        assert len(set(jobs[0]["workers"])) == 2 and set(jobs[0]["workers"]) <= set(ids.values())
        attestation = result.metadata["attestations"][0]
        assert attestation.job_id == jobs[0]["job_id"] and attestation.submitter == ids["A"]


def test_scattered_points_share_a_circuits_job_and_refusals_submit_nothing(
    mesh: tuple[Path, dict[str, str]],
) -> None:
    from qiskit.circuit import Gate, Parameter, QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

    from qiz.integrations.qiskit import MeshSamplerV2
    from qiz.quantum import CircuitError

    work, _ = mesh
    client = Mesh(work / "A")
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(2, 2)
    qc.rx(a, 0)
    qc.rx(b, 1)
    qc.measure([0, 1], [0, 1])
    # not a grid of (a, b): the sampler's 20 points are the circuits of one circuits job
    points = [[np.pi, 0.0], [0.0, np.pi], *([x, x] for x in np.linspace(0.1, 3, 18))]
    result = client.sampler(seed=1).run([(qc, points, 50)]).result()[0]  # MeshSamplerV2
    assert [result.data.c.get_counts(loc=i) for i in range(2)] == [{"01": 50}, {"10": 50}]
    assert [job["kind"] for job in result.metadata["jobs"]] == ["circuits"]
    assert result.data.c.shape == (20,)
    # the estimator's: a job each, 20 at once (more than the node queues for its owner's spec
    # checks: the client holds the rest back instead of the node refusing them)
    qe = qc.remove_final_measurements(inplace=False)
    estimated = client.estimator().run([(qe, SparsePauliOp("ZI"), points)]).result()[0]
    assert len(estimated.metadata["jobs"]) == 20
    assert abs(estimated.data.evs[1] - np.cos(np.pi)) < 1e-9  # qubit 1 turned by b = pi
    before = len(client.jobs())
    odd = QuantumCircuit(1, 1)
    odd.append(Gate("mystery", 1, []), [0])
    with pytest.raises(CircuitError, match="'mystery'"):
        MeshSamplerV2(client).run([odd])
    assert len(client.jobs()) == before


def test_a_locked_identity_signs_with_its_passphrase_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing needs no node: a home whose key is locked signs with the passphrase given (or
    $QIZ_PASSPHRASE), and without it says the keyfile's own line, as the CLI does."""
    from qiz.crypto import keyfile
    from qiz.home import Home

    identity = Home(tmp_path / "L").init(passphrase="pw", scrypt=keyfile.ScryptParams(log2_n=10))
    document = {"kind": "sampler", "params": {"qasm": BELL, "shots": 10}, "seed": 1}
    monkeypatch.delenv("QIZ_PASSPHRASE", raising=False)
    with pytest.raises(ClientError) as locked:
        Mesh(tmp_path / "L").sign(document)
    assert "passphrase" in str(locked.value)
    _, job_id = Mesh(tmp_path / "L", passphrase="pw").sign(document)
    monkeypatch.setenv("QIZ_PASSPHRASE", "pw")
    raw, again = Mesh(tmp_path / "L").sign(document)
    assert again == job_id  # the same document, the same job, however it was unlocked
    from qiz.compute import spec as specs

    assert specs.parse(raw, specs.Limits(max_qubits=40)).submitter == identity.node_id
    monkeypatch.setenv("QIZ_PASSPHRASE", "wrong")
    with pytest.raises(ClientError):
        Mesh(tmp_path / "L").sign(document)
