"""The engine's own primitives (``qiz.quantum.core.primitives``) take Qiskit circuits: every gate
and composite instruction translated to the same state as Qiskit's, parameters bound by
sequence or by name; and ``--param`` takes constant expressions (``pi/2``) on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

qiskit = pytest.importorskip("qiskit")

from qiskit.circuit import Parameter, QuantumCircuit  # noqa: E402 - after the skip
from qiskit.circuit.library import (  # noqa: E402
    DCXGate,
    ECRGate,
    MCXGate,
    QFTGate,
    U1Gate,
    U2Gate,
    U3Gate,
    UnitaryGate,
    iSwapGate,
)
from qiskit.quantum_info import Statevector, random_unitary  # noqa: E402

from qiz.quantum import CircuitError  # noqa: E402
from qiz.quantum.core.from_qiskit import translate  # noqa: E402
from qiz.quantum.core.gates import GATES  # noqa: E402
from qiz.quantum.core.pauli import PauliSum  # noqa: E402
from qiz.quantum.core.primitives import Estimator, Sampler  # noqa: E402
from qiz.quantum.core.statevector import statevector  # noqa: E402

from .helpers import one_line_error, qiz  # noqa: E402


def same_state(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """Equal up to a global phase (which neither sampling nor expectation values can see)."""
    return abs(abs(np.vdot(ours, theirs)) - 1.0) < 1e-10


def test_every_gate_of_ours_and_qiskits_composites_give_qiskits_state() -> None:
    rng = np.random.default_rng(7)
    qc = QuantumCircuit(4)
    qc.h(range(4))
    for name in sorted(GATES):
        spec = GATES[name]
        params = [float(x) for x in rng.uniform(-3, 3, spec.num_params)]
        qubits = [int(q) for q in rng.choice(4, spec.num_qubits, replace=False)]
        getattr(qc, "id" if name == "id" else name)(*params, *qubits)
    qc.append(U1Gate(0.3), [1])
    qc.append(U2Gate(0.2, -0.4), [2])
    qc.append(U3Gate(0.1, 0.5, 0.9), [3])
    qc.append(QFTGate(3), [0, 2, 3])
    qc.append(ECRGate(), [1, 0])
    qc.append(iSwapGate(), [2, 1])
    qc.append(DCXGate(), [3, 0])
    qc.append(MCXGate(3), [0, 1, 2, 3])
    qc.append(UnitaryGate(random_unitary(4, seed=3)), [1, 3])
    qc.global_phase = 0.7
    qc.delay(10, 0)
    ours = statevector(translate(qc).circuit)
    assert same_state(ours, Statevector(qc).data)


def test_parameters_bind_by_qiskit_order_by_parameter_and_by_name() -> None:
    b, a = Parameter("b"), Parameter("a")  # qc.parameters sorts them: a, then b
    qc = QuantumCircuit(2)
    qc.rx(2 * b + 0.5, 0)
    qc.ry(a - b, 1)
    qc.cx(0, 1)
    obs = PauliSum.from_labels([(1.0, "ZZ"), (0.5, "XI")])
    reference = Statevector(qc.assign_parameters({a: 0.3, b: -0.2}))
    expected = reference.expectation_value(
        qiskit.quantum_info.SparsePauliOp(["ZZ", "XI"], [1, 0.5])
    )
    for values in ([0.3, -0.2], {a: 0.3, b: -0.2}, {"a": 0.3, "b": -0.2}):
        value = Estimator().run(qc, obs, parameters=values).values[0]
        assert value == pytest.approx(expected.real, abs=1e-12)
    with pytest.raises(CircuitError, match="unbound parameters: a, b"):
        Estimator().run(qc, obs)
    with pytest.raises(CircuitError, match=r"expected 2 parameter values .* got 1"):
        Estimator().run(qc, obs, parameters=[0.1])
    with pytest.raises(CircuitError, match="parameter 'b' is not bound"):
        Estimator().run(qc, obs, parameters={"a": 0.1})


def test_the_sampler_counts_a_qiskit_circuit_by_its_classical_bits() -> None:
    qc = QuantumCircuit(3, 2)
    qc.x(2)
    qc.h(0)
    qc.measure(2, 0)
    qc.measure(0, 1)
    counts = Sampler().run(qc, shots=4000, seed=2).counts
    assert set(counts) == {"01", "11"}
    assert abs(counts["11"] / 4000 - 0.5) < 5 * 0.5 / np.sqrt(4000)
    assert Sampler().run(qc, shots=50, seed=2).counts == Sampler().run(qc, shots=50, seed=2).counts


def test_param_takes_constant_expressions_on_the_command_line(tmp_path: Path) -> None:
    """One run through the CLI each way; the other spellings through the parser it calls."""
    from qiz.cli.output import UserError
    from qiz.cli.quantum_cmds import parse_bindings

    program = tmp_path / "rx.qasm"
    program.write_text(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float theta;\nqubit q;\nrx(theta) q;\n'
    )
    flipped = qiz(tmp_path, "run", program, "--param", "theta=pi", "--shots", "64", "--json")
    assert json.loads(flipped.stdout)["counts"] == {"1": 64}
    line = one_line_error(qiz(tmp_path, "run", program, "--param", "theta=pi/0"))
    assert "--param 'theta=pi/0': expected NAME=VALUE with a finite number" in line
    assert "such as pi/2" in line
    for text, value in [
        ("2*pi/3", 2 * np.pi / 3),
        ("-tau/8", -np.pi / 4),
        ("sqrt(2)/2", np.sqrt(0.5)),
        ("0.25", 0.25),
        (" 1e-3 ", 1e-3),
        ("euler**2", np.e**2),
    ]:
        assert parse_bindings([f"t={text}"]) == {"t": pytest.approx(value, rel=1e-15)}
    for bad in ("sin(", "phi", "1; qubit r", "1e999", "", "nan", "pi/2 // x", "theta"):
        with pytest.raises(UserError, match="expected NAME=VALUE with a finite number"):
            parse_bindings([f"t={bad}"])
