"""The general engine against Qiskit Aer, gates, measurement, the primitives, memory refusal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import CircuitError, ProblemTooLarge
from qiz.quantum.core.gates import GATES
from qiz.quantum.core.memory import require_memory
from qiz.quantum.core.params import Parameter
from qiz.quantum.core.pauli import PauliSum
from qiz.quantum.core.primitives import Estimator, Sampler
from qiz.quantum.core.statevector import run, statevector

qiskit = pytest.importorskip("qiskit")
aer = pytest.importorskip("qiskit_aer")

GATE_NAMES = sorted(GATES)


def random_circuit(rng: np.random.Generator, n: int, depth: int) -> Circuit:
    circ = Circuit(n)
    for _ in range(depth):
        name = GATE_NAMES[rng.integers(len(GATE_NAMES))]
        spec = GATES[name]
        if spec.num_qubits > n:
            continue
        qubits = [int(q) for q in rng.choice(n, spec.num_qubits, replace=False)]
        params = [float(x) for x in rng.uniform(-2 * math.pi, 2 * math.pi, spec.num_params)]
        circ.append(name, qubits, params)
    return circ


def to_qiskit(circ: Circuit):
    qc = qiskit.QuantumCircuit(circ.num_qubits)
    for inst in circ:
        getattr(qc, inst.name)(*inst.params, *inst.qubits)
    return qc


def aer_statevector(circ: Circuit) -> np.ndarray:
    qc = to_qiskit(circ)
    qc.save_statevector()
    sim = aer.AerSimulator(method="statevector", precision="double", fusion_enable=False)
    result = sim.run(qiskit.transpile(qc, sim, optimization_level=0)).result()
    return np.asarray(result.get_statevector())


@pytest.mark.parametrize("seed", range(12))
def test_random_circuits_equal_aer_statevectors(seed):
    """Random circuits over every gate, up to 10 qubits, equal Aer's states to 1e-10."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    circ = random_circuit(rng, n, depth=int(rng.integers(10, 80)))
    ours = statevector(circ)
    theirs = aer_statevector(circ)
    assert np.max(np.abs(ours - theirs)) < 1e-10


def test_every_gate_alone_on_a_random_state_equals_qiskit():
    """Each gate, on a random input state (so global phases and controls all matter)."""
    from qiskit.quantum_info import Statevector

    rng = np.random.default_rng(1)
    for name, spec in GATES.items():
        n = 4
        init = rng.standard_normal(16) + 1j * rng.standard_normal(16)
        init /= np.linalg.norm(init)
        qubits = [int(q) for q in rng.choice(n, spec.num_qubits, replace=False)]
        params = [float(x) for x in rng.uniform(-3, 3, spec.num_params)]
        circ = Circuit(n).append(name, qubits, params)
        ours = statevector(circ, initial=init)
        theirs = Statevector(init).evolve(to_qiskit(circ)).data
        assert np.allclose(ours, theirs, atol=1e-12), name


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_circuit_then_inverse_is_identity(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))
    circ = random_circuit(rng, n, 25)
    init = rng.standard_normal(1 << n) + 1j * rng.standard_normal(1 << n)
    init /= np.linalg.norm(init)
    out = statevector(circ.compose(circ.inverse()), initial=init)
    assert np.allclose(out, init, atol=1e-11)


def test_gate_derivatives_match_analytic_rotation_generators():
    for name, pauli in (("rx", "X"), ("ry", "Y"), ("rz", "Z")):
        spec = GATES[name]
        p = np.array(
            {"X": [[0, 1], [1, 0]], "Y": [[0, -1j], [1j, 0]], "Z": [[1, 0], [0, -1]]}[pauli]
        )
        d = spec.derivative([0.7], 0)
        assert np.allclose(d, -0.5j * p @ spec.matrix([0.7]), atol=1e-12)


def test_bad_circuits_are_refused_clearly():
    circ = Circuit(2, 1)
    with pytest.raises(CircuitError, match="unknown gate 'foo'"):
        circ.append("foo", [0])
    with pytest.raises(CircuitError, match="cx acts on 2 qubit"):
        circ.append("cx", [0])
    with pytest.raises(CircuitError, match="qubit 5 out of range"):
        circ.append("h", [5])
    with pytest.raises(CircuitError, match="repeated qubit"):
        circ.append("cx", [1, 1])
    with pytest.raises(CircuitError, match="rx takes 1 parameter"):
        circ.append("rx", [0], [])
    with pytest.raises(CircuitError, match="bit 3 out of range"):
        circ.measure(0, 3)
    assert len(circ) == 0  # nothing half-added
    theta = Parameter("theta")
    circ.append("rx", [0], [theta])
    with pytest.raises(CircuitError, match="unbound"):
        statevector(circ)
    assert np.allclose(statevector(circ.bind({"theta": math.pi})), [0, -1j, 0, 0])


def test_measurement_collapses_and_reset_returns_to_zero():
    circ = Circuit(2, 2)
    circ.x(0).measure(0, 0).reset(0).h(1).measure(1, 1)
    rng = np.random.default_rng(3)
    outcomes = set()
    for _ in range(40):
        state, bits = run(circ, rng)
        assert bits[0] == 1
        assert abs(state[0b00]) + abs(state[0b10]) == pytest.approx(1.0)  # qubit 0 back in |0>
        outcomes.add(bits[1])
    assert outcomes == {0, 1}


def test_sampler_counts_are_reproducible_and_follow_the_distribution():
    circ = Circuit(3, 3)
    circ.ry(2 * math.asin(math.sqrt(0.2)), 0).cx(0, 1).h(2)
    for q in range(3):
        circ.measure(q, q)
    a = Sampler().run(circ, shots=20000, seed=7)
    b = Sampler().run(circ, shots=20000, seed=7)
    assert a.counts == b.counts and a.method == "terminal"
    assert set(a.counts) <= {"000", "011", "100", "111"}
    p11 = (a.counts.get("011", 0) + a.counts.get("111", 0)) / 20000
    assert abs(p11 - 0.2) < 0.02  # 7 sigma of a binomial at 20000 shots


def test_sampler_mid_circuit_measurement_runs_per_shot():
    circ = Circuit(2, 2)
    circ.h(0).measure(0, 0).cx(0, 1).measure(1, 1)
    res = Sampler().run(circ, shots=300, seed=1)
    assert res.method == "per-shot"
    assert set(res.counts) == {"00", "11"}


def test_estimator_equals_qiskit_expectation_values():
    from qiskit.quantum_info import SparsePauliOp, Statevector

    rng = np.random.default_rng(5)
    circ = random_circuit(rng, 5, 40)
    h = PauliSum.heisenberg(5, jx=0.3, jy=-0.7, jz=1.1, h=0.25, periodic=True)
    h = h + PauliSum.from_labels([(0.4, "XYZIY"), (-0.2, "IIXXI")])
    ours = Estimator().run(circ, [h, PauliSum.tfim(5)]).values
    sv = Statevector(to_qiskit(circ))
    for value, obs in zip(ours, [h, PauliSum.tfim(5)], strict=True):
        op = SparsePauliOp.from_list([(t.label(5), t.coeff) for t in obs.terms])
        assert value == pytest.approx(sv.expectation_value(op).real, abs=1e-12)


def test_memory_refusal_says_how_much_is_needed():
    with pytest.raises(ProblemTooLarge, match=r"30 qubits need about 16.0 GiB"):
        require_memory(30, 1.0, available=8 << 30)
    require_memory(20, 1.0, available=8 << 30)  # fits: no error
    with pytest.raises(ProblemTooLarge, match="40 qubits"):
        Circuit(40).h(0) and statevector(Circuit(40).h(0))


# -- the package's shape -----------------------------------------------------------------------

# Which parts each part of qiz.quantum may import (see qiz/quantum/__init__.py).
QUANTUM_PARTS = {
    "kernels": {"kernels"},
    "core": {"core", "kernels"},
    "qasm": {"qasm", "core"},
    "problems": {"problems", "core"},
    "algorithms": {"algorithms", "problems", "core", "kernels"},
    "noise": {"noise", "core", "kernels"},
    "targets": {"targets", "noise", "core"},
    # provider SDK adapters: our circuits out (qasm export), device targets of fake backends
    "providers": {"providers", "core", "qasm", "targets"},
}


def _parts_imported(tree: object) -> list[tuple[int, str]]:
    """(line, part) for every import of a qiz.quantum subpackage in a parsed module."""
    import ast

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "qiz.quantum":
            names = [f"qiz.quantum.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [
            (node.lineno, name.split(".")[2]) for name in names if name.startswith("qiz.quantum.")
        ]
    return found


def test_quantum_parts_import_only_downwards() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "qiz" / "quantum"
    assert set(QUANTUM_PARTS) == {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    wrong = [
        f"{path.relative_to(root)}:{line} imports qiz.quantum.{part}"
        for path in sorted(root.glob("*/*.py"))
        for line, part in _parts_imported(ast.parse(path.read_text(), str(path)))
        if part not in QUANTUM_PARTS[path.parent.name]
    ]
    assert not wrong


def test_importing_qiz_quantum_loads_neither_numpy_nor_numba() -> None:
    import subprocess
    import sys

    code = "import sys, qiz.quantum; print(sorted({'numpy', 'numba'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
