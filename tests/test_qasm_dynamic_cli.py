"""Dynamic OpenQASM 3 programs as a user runs them: ``qiz run`` with ``--param``, and a sampler
job through a running node (the mesh's ``sampler`` kind), end to end; the estimator refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import node_processes, ok_json, one_line_error, qiz

pytestmark = pytest.mark.timeout(180)

# Teleport ry(theta)|0>, then undo ry(theta) on the target: bit 2 is 0 on every shot.
TELEPORT = """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[3] q;
bit[3] c;
ry(theta) q[0];
h q[1];
cx q[1], q[2];
cx q[0], q[1];
h q[0];
c[0] = measure q[0];
c[1] = measure q[1];
if (c[1]) x q[2];
if (c[0]) z q[2];
ry(-theta) q[2];
c[2] = measure q[2];
"""


def _teleported(counts: dict[str, int], shots: int) -> None:
    assert sum(counts.values()) == shots
    assert all(key[0] == "0" for key in counts)  # bit 2: the state arrived intact
    assert len(counts) == 4  # the two measured bits of the sender are uniform


def test_run_samples_a_dynamic_program_with_params(tmp_path: Path):
    (tmp_path / "tele.qasm").write_text(TELEPORT)
    args = ["run", "tele.qasm", "--shots", "2000", "--seed", "5", "--param", "theta=1.1", "--json"]
    data = ok_json(qiz(tmp_path, *args))
    assert data["method"] == "dynamic" and data["num_clbits"] == 3 and data["num_qubits"] == 3
    _teleported(data["counts"], 2000)
    assert ok_json(qiz(tmp_path, *args))["counts"] == data["counts"]  # seeded
    line = one_line_error(qiz(tmp_path, "run", "tele.qasm"))
    assert "free input parameters (theta)" in line


def test_a_dynamic_sampler_job_runs_through_a_node_and_the_estimator_refuses(tmp_path: Path):
    ok_json(qiz(tmp_path, "--home", "A", "init", "--json"))
    spec = {
        "kind": "sampler",
        "params": {"qasm": TELEPORT, "shots": 500, "inputs": {"theta": 1.1}},
        "replicas": 1,
        "seed": 4,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    estimator = {
        "kind": "estimator",
        "params": {"qasm": TELEPORT, "inputs": {"theta": 1.1}, "observables": ["ZII"]},
    }
    (tmp_path / "est.json").write_text(json.dumps(estimator))
    with node_processes(tmp_path) as start:
        start("A", args=["--slots", "1"])
        submit = ["--home", "A", "job", "submit", "spec.json", "--wait", "--json"]
        done = ok_json(qiz(tmp_path, *submit, timeout=120))
        assert done["state"] == "done" and done["decided"] == 1
        result = ok_json(qiz(tmp_path, "--home", "A", "job", "result", done["job_id"], "--json"))
        _teleported(result["results"][0]["counts"], 500)
        line = one_line_error(qiz(tmp_path, "--home", "A", "job", "submit", "est.json"))
        assert "the estimator needs a circuit without classical control" in line
