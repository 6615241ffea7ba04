"""Compile, in a process of its own, the numba kernels that only the tests' own process uses
(the general VQE ansatz's fused passes and the gate-level engine on complex Hamiltonians), so
that their first compile, about 40 s of one core on a fresh checkout, runs beside the session's
start instead of inside a test.

``tests/conftest.py`` starts ``python -m tests.warm_kernels`` at session start, next to the worker
kernels' warm-up in the session's own process: the two compile side by side on two cores, and
this one goes on while the first tests run. It writes numba's cache only; a test that gets to a
kernel first compiles it itself, as it would without this. With a warm cache it only loads.
"""

from __future__ import annotations

import numpy as np

from qiz.quantum.algorithms.ansatz import GeneralAnsatz
from qiz.quantum.algorithms.vqe import VqeEvaluator, _adjoint_circuit
from qiz.quantum.core import statevector
from qiz.quantum.core.pauli import PauliSum

# 1 qubit: the low passes; 15: the high tile passes too (above 14 qubits, see test_vqe_general)
QUBITS = (1, 15)


def complex_hamiltonian(n: int) -> PauliSum:
    """A Hermitian sum with Y factors on every qubit: complex, as the general ansatz's tests
    use (a real one takes other kernels)."""
    full = (1 << n) - 1
    rows = [(0.3, 1 << q, 1 << q) for q in range(n)]
    rows += [(1.0, 0, full), (0.7, full, 0), (-0.5, full, full)]
    return PauliSum(n, rows)


def warm(n: int) -> None:
    """The calls test_vqe_general makes per case: fused energy and gradient, energy alone, the
    state, and the gate-level engine's adjoint method and state for comparison."""
    h = complex_hamiltonian(n)
    ansatz = GeneralAnsatz(n, 1, "ladder")
    theta = np.random.default_rng(n).uniform(-np.pi, np.pi, ansatz.num_parameters)
    evaluator = VqeEvaluator(ansatz, h)
    evaluator.energy_and_gradient(theta)
    evaluator.energy(theta)
    evaluator.statevector(theta)
    _adjoint_circuit(ansatz.circuit(), h, theta, gradient=True)
    statevector.statevector(ansatz.circuit().bind(list(theta)))


def main() -> None:
    for n in QUBITS:
        warm(n)


if __name__ == "__main__":
    main()
