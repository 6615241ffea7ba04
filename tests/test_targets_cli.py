"""``qiz targets`` and ``qiz run FILE --target NAME`` as a user runs them (real ``qiz``
processes; every JSON answer is checked against docs/json/ by the helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import assert_one_line_error, ok_json, qiz

GHZ = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
h q[0];
cx q[0], q[1];
cx q[1], q[2];
c = measure q;
"""


def test_targets_lists_the_shipped_devices(tmp_path: Path) -> None:
    data = ok_json(qiz(tmp_path, "targets", "--json"))
    by_name = {t["name"]: t for t in data["targets"]}
    assert set(by_name) == {"fake_kyiv", "fake_manila", "fake_sherbrooke", "fake_torino"}
    sherbrooke = by_name["fake_sherbrooke"]
    assert sherbrooke["num_qubits"] == 127 and "ecr" in sherbrooke["basis_gates"]
    assert 1e-3 < sherbrooke["two_qubit_error_median"] < 0.05
    assert 50 < sherbrooke["t1_median_us"] < 1000 and 10 < sherbrooke["t2_median_us"] < 1000
    assert sherbrooke["snapshot_date"].startswith("2025-")
    human = qiz(tmp_path, "targets")
    assert human.returncode == 0 and "fake_torino" in human.stdout and "snapshot" in human.stdout


def test_run_on_a_target_reports_transpiled_circuit_counts_and_distance(tmp_path: Path) -> None:
    pytest.importorskip("qiskit")
    (tmp_path / "ghz.qasm").write_text(GHZ)
    args = ("run", "ghz.qasm", "--target", "fake_sherbrooke", "--shots", "3000", "--seed", "4")
    data = ok_json(qiz(tmp_path, *args, "--json"))
    target = data["target"]
    assert target["name"] == "fake_sherbrooke" and target["backend"] == "fake_sherbrooke"
    assert target["transpiler"].startswith("qiskit ")
    assert target["two_qubit_gates"] == 2 and target["depth"] >= 4
    assert len(target["physical_qubits"]) == 3
    assert sum(data["counts"].values()) == 3000
    assert data["counts"]["000"] + data["counts"]["111"] > 2700  # GHZ, mostly
    assert 0 < target["tvd"] < 0.1 and 0.9 < target["fidelity"] < 1
    assert data["method"] == "noisy trajectories"
    human = qiz(tmp_path, *args)
    assert human.returncode == 0, human.stderr
    assert "two-qubit gates" in human.stdout and "TVD" in human.stdout and "ideal" in human.stdout


def test_run_on_an_unknown_target_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ghz.qasm").write_text(GHZ)
    result = qiz(tmp_path, "run", "ghz.qasm", "--target", "fake_nowhere")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "unknown target 'fake_nowhere'", "fake_sherbrooke")
