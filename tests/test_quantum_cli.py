"""The quantum commands as a user runs them: ``qiz run``, ``qaoa maxcut``, ``vqe``, ``grover``."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

from .helpers import assert_one_line_error
from .helpers import qiz_raw as qiz

BELL = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""


def test_run_samples_a_qasm_file_reproducibly(tmp_path: Path):
    (tmp_path / "bell.qasm").write_text(BELL)
    code, out, err = qiz(tmp_path, "run", "bell.qasm", "--shots", "2000", "--seed", "5", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data["counts"]) == {"00", "11"}
    assert sum(data["counts"].values()) == 2000
    assert 850 < data["counts"]["00"] < 1150
    code, again, _ = qiz(tmp_path, "run", "bell.qasm", "--shots", "2000", "--seed", "5", "--json")
    assert json.loads(again)["counts"] == data["counts"]
    code, human, _ = qiz(tmp_path, "run", "bell.qasm", "--shots", "10", "--seed", "1")
    assert code == 0 and b"outcome" in human


def test_run_reports_bad_qasm_with_line_and_column(tmp_path: Path):
    (tmp_path / "bad.qasm").write_text("OPENQASM 3.0;\nqubit[1] q;\nbox { x q[0]; }\n")
    code, out, err = qiz(tmp_path, "run", "bad.qasm", "--json")
    assert code == 2
    line = assert_one_line_error(err, "bad.qasm", "line 3")
    assert "not supported" in line
    assert json.loads(out)["ok"] is False
    code, _, err = qiz(tmp_path, "run", "missing.qasm")
    assert code == 2
    assert_one_line_error(err, "missing.qasm")


def test_run_refuses_a_circuit_too_large_for_memory(tmp_path: Path):
    (tmp_path / "big.qasm").write_text("OPENQASM 3.0;\nqubit[40] q;\nh q[0];\n")
    code, _, err = qiz(tmp_path, "run", "big.qasm")
    assert code == 2
    line = assert_one_line_error(err, "40 qubits need about")
    assert "TiB" in line and "available" in line


def test_qaoa_maxcut_reports_ratio_energy_and_best_cut(tmp_path: Path):
    code, out, err = qiz(
        tmp_path, "qaoa", "maxcut", "--graph", "random:10,3", "--p", "2", "--seed", "3", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    g = nx.random_regular_graph(3, 10, seed=3)
    best = max(sum(((x >> u) & 1) != ((x >> v) & 1) for u, v in g.edges()) for x in range(1024))
    assert data["optimum"] == best
    assert data["approximation_ratio"] == pytest.approx(data["energy"] / best)
    assert 0.7 < data["approximation_ratio"] <= 1.0
    cut = data["best_cut"]
    side = {int(i) for i in cut["partition"][1]}
    assert cut["value"] == sum((u in side) != (v in side) for u, v in g.edges())


def test_qaoa_maxcut_reads_an_edge_list(tmp_path: Path):
    (tmp_path / "square.txt").write_text("# a 4-cycle\n0 1\n1 2\n2 3\n3 0 2.5\n")
    code, out, err = qiz(tmp_path, "qaoa", "maxcut", "--graph", "square.txt", "--p", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["optimum"] == 5.5
    (tmp_path / "loop.txt").write_text("0 1\n1 1\n")
    code, _, err = qiz(tmp_path, "qaoa", "maxcut", "--graph", "loop.txt")
    assert code == 2
    assert_one_line_error(err, "loop.txt:2", "self-loop")
    code, _, err = qiz(tmp_path, "qaoa", "maxcut", "--graph", "random:5,3")
    assert code == 2
    assert_one_line_error(err, "no 3-regular graph on 5 nodes")


def test_vqe_on_h2_reaches_chemical_accuracy_from_the_cli(tmp_path: Path):
    h2 = Path(__file__).resolve().parent.parent / "qiz" / "quantum" / "data" / "h2_0.735_jw.txt"
    code, out, err = qiz(tmp_path, "vqe", "--hamiltonian", h2, "--ansatz", "hea:3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["exact"] == pytest.approx(-1.857275030202, abs=1e-9)
    assert abs(data["energy_error"]) < 1.6e-3


def test_vqe_reports_bad_hamiltonian_files(tmp_path: Path):
    (tmp_path / "h.txt").write_text("0.5 ZZ\n0.1 XQ\n")
    code, out, err = qiz(tmp_path, "vqe", "--hamiltonian", "h.txt", "--json")
    assert code == 2
    assert_one_line_error(err, "h.txt:2")
    assert json.loads(out)["ok"] is False
    code, _, err = qiz(tmp_path, "vqe", "--hamiltonian", "tfim:4", "--ansatz", "ucc")
    assert code == 2
    assert_one_line_error(err, "ansatz")


def test_grover_marked_and_cnf(tmp_path: Path):
    code, out, err = qiz(tmp_path, "grover", "--qubits", "8", "--marked", "3,0b11110000", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["num_solutions"] == 2
    assert data["success_probability"] == pytest.approx(data["analytic_probability"], abs=1e-10)
    assert data["hits"] > 0.95 * data["shots"]
    (tmp_path / "f.cnf").write_text("p cnf 3 2\n1 -2 0\n2 3 0\n")
    code, out, err = qiz(tmp_path, "grover", "--qubits", "3", "--cnf", "f.cnf", "--json")
    assert code == 0, err
    assert json.loads(out)["num_solutions"] == 4
    code, _, err = qiz(tmp_path, "grover", "--qubits", "8", "--marked", "3", "--cnf", "f.cnf")
    assert code == 2
    assert_one_line_error(err, "exactly one of")
    code, _, err = qiz(tmp_path, "grover", "--qubits", "36", "--marked", "1")
    assert code == 2
    assert_one_line_error(err, "36 qubits need about")


def test_bad_numbers_are_one_line_errors(tmp_path: Path):
    (tmp_path / "inf.qasm").write_text("OPENQASM 3.0;\nqubit[2] q;\nrx(1e308*10) q[0];\n")
    code, _, err = qiz(tmp_path, "run", "inf.qasm")
    assert code == 2
    assert_one_line_error(err, "line 3", "not a finite number")
    code, _, err = qiz(tmp_path, "grover", "--qubits", "4", "--marked", "3", "--shots", "-1")
    assert code == 2
    assert_one_line_error(err, "shots")
    code, _, err = qiz(tmp_path, "vqe", "--hamiltonian", "tfim:4", "--maxiter", "0")
    assert code == 2
    assert_one_line_error(err, "--maxiter")
    code, _, err = qiz(tmp_path, "vqe", "--hamiltonian", "tfim:99999999999")
    assert code == 2
    assert_one_line_error(err, "tfim")
    code, _, err = qiz(tmp_path, "qaoa", "maxcut", "--graph", "random:\u00b2,3")
    assert code == 2
    assert_one_line_error(err, "random:N,D")


def test_vqe_on_the_ising_ring_from_the_cli(tmp_path: Path):
    code, out, err = qiz(
        tmp_path, "vqe", "--hamiltonian", "tfim:8:ring", "--ansatz", "hva:4", "--json"
    )
    assert code == 0, err
    assert abs(json.loads(out)["energy_error"]) < 1e-6


def test_trial_findings_stay_fixed(tmp_path: Path):
    """From a first-time user's trial: full counts, unambiguous --marked, seeds, odd-Y terms."""
    code, out, err = qiz(tmp_path, "grover", "--qubits", "6", "--marked", "0b101", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert sum(data["counts"].values()) == data["shots"]  # every outcome, not a top list
    code, _, err = qiz(tmp_path, "grover", "--qubits", "4", "--marked", "101")
    assert code == 2
    assert_one_line_error(err, "101 is outside")
    code, _, err = qiz(tmp_path, "grover", "--qubits", "2", "--cnf", "f.cnf", "--seed", "-1")
    assert code == 2
    assert_one_line_error(err, "--seed")
    (tmp_path / "empty.qasm").write_text("// nothing here\n")
    code, _, err = qiz(tmp_path, "run", "empty.qasm")
    assert code == 2
    assert_one_line_error(err, "the program is empty")
    (tmp_path / "y.txt").write_text("1.0 Z0\n0.8 Y0\n")
    code, _, err = qiz(tmp_path, "vqe", "--hamiltonian", "y.txt", "--ansatz", "hea:2")
    assert code == 2
    assert_one_line_error(err, "odd number of Y", "general:D")
    code, out, err = qiz(tmp_path, "vqe", "--hamiltonian", "y.txt", "--ansatz", "hva:2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert abs(data["energy_error"]) < 1e-9
    assert data["converged"] is True


def test_run_binds_input_angles_from_the_command_line(tmp_path: Path):
    (tmp_path / "p.qasm").write_text(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float[64] theta;\n'
        "qubit[1] q;\nbit[1] c;\nrx(2 * theta) q[0];\nc[0] = measure q[0];\n"
    )
    code, out, err = qiz(
        tmp_path, "run", "p.qasm", "--param", "theta=1.5707963267948966", "--shots", "50", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["counts"] == {"1": 50}  # rx(pi) flips the qubit
    for extra, words in (
        ((), "give each with --param"),
        (("--param", "phi=1"), "no input named phi"),
        (("--param", "theta=x"), "NAME=VALUE"),
    ):
        code, _, err = qiz(tmp_path, "run", "p.qasm", *extra)
        assert code == 2
        assert_one_line_error(err, words)
