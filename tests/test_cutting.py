"""Circuit cutting on this machine's engine (``qiz.integrations.cutting``, ``qiz cut --local``).

Every value a cut run reconstructs is compared with the exact expectation value of the uncut
circuit (our engine's ``Estimator``: these circuits are narrow enough to simulate whole). The
tolerance is statistical and stated by the run itself: each value's standard deviation is at
most its ``std_bound`` (``sum|coeff| * gamma * sqrt((1 + 1/shots)**P - 1)``, see the module's
notes), and the tests allow five of them. Seeds are fixed, so a run is the same every time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qiskit_addon_cutting")

from qiskit import QuantumCircuit, qasm3
from qiskit.quantum_info import SparsePauliOp

from qiz.integrations.cutting import (
    CutError,
    CuttingMissing,
    plan_cut,
    run_cut,
    terminal_form,
)
from qiz.quantum.core.pauli import PauliSum
from qiz.quantum.core.primitives import Estimator, Sampler

from .helpers import assert_one_line_error, ok_json, qiz

SIGMAS = 5  # allowed distance from the exact value, in stated standard deviations


def two_blocks(width: int = 3) -> QuantumCircuit:
    """Two entangled blocks of ``width`` qubits joined by one CNOT in the middle of the
    circuit (so the halves stay entangled: no product shortcut), then more layers."""
    n = 2 * width
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.ry(0.3 + 0.2 * q, q)
    for start in (0, width):
        for q in range(start, start + width - 1):
            qc.cx(q, q + 1)
    qc.cx(width - 1, width)
    for q in range(n):
        qc.rx(0.2 + 0.1 * q, q)
    for start in (0, width):
        for q in range(start, start + width - 1):
            qc.cz(q, q + 1)
    return qc


def wire_circuit() -> QuantumCircuit:
    """Qubit 2 works with qubits 0, 1 first and 3, 4 after: one wire cut (overhead 16) is
    cheaper than cutting its three later gates (9**3)."""
    qc = QuantumCircuit(5)
    for q in range(5):
        qc.ry(0.4 + 0.3 * q, q)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.rz(0.7, 2)
    qc.cx(0, 2)
    qc.cx(2, 3)
    qc.cx(2, 4)
    qc.cx(3, 4)
    qc.rx(0.5, 2)
    qc.cz(2, 3)
    return qc


def exact(qc: QuantumCircuit, observable: SparsePauliOp) -> float:
    terms = [
        (float(c.real), str(p)) for p, c in zip(observable.paulis, observable.coeffs, strict=True)
    ]
    return Estimator().run(qc, PauliSum.from_labels(terms, num_qubits=qc.num_qubits)).values[0]


def assert_close(result, qc: QuantumCircuit, observables: list[SparsePauliOp]) -> None:
    for value, bound, op in zip(result.values, result.std_bounds, observables, strict=True):
        want = exact(qc, op)
        assert abs(value - want) <= SIGMAS * bound, (value, want, bound)


def test_a_gate_cut_reconstructs_the_exact_values() -> None:
    qc = two_blocks(3)
    observables = [
        SparsePauliOp(["ZZZZZZ", "XIIIIZ", "IIZZII"], [1.0, 0.5, -0.7]),
        SparsePauliOp("IIIZZI"),
    ]
    result = run_cut(qc, observables, max_qubits=4, shots=4000, local=True, seed=3)
    assert result.cuts == [{"type": "gate", "gate": "cx", "qubits": [2, 3]}]
    assert result.sampling_overhead == pytest.approx(9.0)  # one CNOT: gamma = 3
    assert max(result.subcircuit_widths.values()) <= 4  # 3 qubits + 1 deferred measurement
    # 6 QPD terms; the second half measures in two bases (X and Z on its qubit 5)
    assert result.num_subexperiments == 6 + 2 * 6 and result.num_runs <= 18
    assert result.total_shots == 4000 * result.num_runs and not result.jobs
    # the stated bound: sum|coeff| * 3 * sqrt((1 + 1/4000)**2 - 1)
    assert result.std_bounds[0] == pytest.approx(2.2 * 3 * np.sqrt((1 + 1 / 4000) ** 2 - 1))
    assert_close(result, qc, observables)
    assert set(result.seconds) == {"cut", "run", "reconstruct"}


def test_a_wire_cut_reconstructs_the_exact_values() -> None:
    qc = wire_circuit()
    observables = [SparsePauliOp("ZZZZZ"), SparsePauliOp(["IIXII", "ZIIIZ"], [0.5, 0.5])]
    result = run_cut(qc, observables, max_qubits=3, shots=4000, local=True, seed=5)
    assert [c["type"] for c in result.cuts] == ["wire"]
    assert result.sampling_overhead == pytest.approx(16.0)
    assert max(result.subcircuit_widths.values()) <= 3
    assert_close(result, qc, observables)


def test_a_circuit_that_fits_is_not_cut_and_qasm_text_is_taken() -> None:
    qc = two_blocks(2)
    qc.measure_all()  # final measurements are dropped: the observables say what is measured
    result = run_cut(qasm3.dumps(qc), ["ZZZZ", "XXII"], max_qubits=4, shots=2000, local=True)
    assert result.cuts == [] and result.sampling_overhead == 1.0 and result.num_runs <= 2
    plain = qc.remove_final_measurements(inplace=False)
    assert_close(result, plain, [SparsePauliOp("ZZZZ"), SparsePauliOp("XXII")])


def test_the_terminal_form_measures_last_with_the_same_statistics() -> None:
    """A measurement of a qubit used again becomes a CNOT onto an ancilla measured last: the
    engine then samples one state instead of simulating shot by shot, with the same counts'
    distribution (the exact probabilities here: a measured |+> then an X on the same qubit)."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.measure(0, 0)
    qc.x(0)
    qc.cx(0, 1)
    qc.measure(1, 1)
    made = terminal_form(qc)
    assert made.num_qubits == 3
    names = [i.operation.name for i in made.data]
    assert names[-2:] == ["measure", "measure"] and "measure" not in names[:-2]
    run = Sampler().run(made, shots=4000, seed=1)
    assert run.method == "terminal"
    assert set(run.counts) == {"01", "10"}  # bit 0 = first outcome; bit 1 = its opposite
    assert abs(run.counts["01"] - 2000) < 5 * np.sqrt(1000)


def test_refusals_are_one_clear_line() -> None:
    qc = two_blocks(3)
    with pytest.raises(CutError, match=r"observable 'ZZZ' acts on 3 qubits; the circuit has 6"):
        run_cut(qc, "ZZZ", max_qubits=4, local=True)
    with pytest.raises(CutError, match=r"fit 1 qubits per sub-circuit .*; allow more qubits"):
        plan_cut(qc, "ZZZZZZ", 1)
    with pytest.raises(CutError, match=r"more than 4096 sub-experiments; allow more qubits"):
        plan_cut(two_blocks(2), "ZZZZ", 1)
    measured = QuantumCircuit(2, 1)
    measured.h(0)
    measured.measure(0, 0)
    measured.cx(0, 1)
    with pytest.raises(CutError, match=r"'measure' before its end"):
        run_cut(measured, "ZZ", max_qubits=1, local=True)
    with pytest.raises(CutError, match=r"give a mesh .* or local=True, not neither"):
        run_cut(qc, "ZZZZZZ", max_qubits=4)


def test_without_the_addon_the_error_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "qiskit_addon_cutting", None)  # import fails
    with pytest.raises(CuttingMissing) as missing:
        run_cut(two_blocks(2), "ZZZZ", max_qubits=2, local=True)
    message = str(missing.value)
    assert "\n" not in message and "qiskit-addon-cutting" in message
    assert "pip install -e '.[qiskit]'" in message


def test_qiz_cut_local_answers_json_and_refuses_in_one_line(tmp_path: Path) -> None:
    program = tmp_path / "blocks.qasm"
    program.write_text(qasm3.dumps(two_blocks(3)))
    args = ["cut", program, "-o", "ZZZZZZ", "-o", "iiizzi", "--max-qubits", "4", "--local"]
    answer = ok_json(qiz(tmp_path, *args, "--shots", "2000", "--seed", "2", "--json"))
    assert answer["observables"] == ["ZZZZZZ", "IIIZZI"] and answer["num_qubits"] == 6
    assert answer["sampling_overhead"] == pytest.approx(9.0) and answer["jobs"] == []
    ops = [SparsePauliOp("ZZZZZZ"), SparsePauliOp("IIIZZI")]
    for value, bound, op in zip(answer["values"], answer["std_bounds"], ops, strict=True):
        assert abs(value - exact(two_blocks(3), op)) <= SIGMAS * bound
    wrong = qiz(tmp_path, "cut", program, "-o", "ZZZ", "--local")
    assert wrong.returncode == 2
    assert_one_line_error(wrong.stderr, "observable 'ZZZ' acts on 3 qubits; the circuit has 6")
