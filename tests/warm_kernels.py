"""Compile, in a process of its own, the numba kernels that only the tests' own process uses,
so that their first compile on a fresh checkout (about a minute of one core in all) runs
beside the session's start instead of inside the tests that first call them.

``tests/conftest.py`` starts ``python -m tests.warm_kernels`` at session start, next to the worker
kernels' warm-up in the session's own process: the two compile side by side on two cores, and
this one goes on while the first tests run. It writes numba's cache only; a test that gets to a
kernel first compiles it itself, as it would without this. With a warm cache it only loads.

Each step makes the calls of the test module it names, on inputs of the same types (a kernel
compiles once per type signature), in the order the tests come (the demo's quantum part in
test_cli first, test_vqe_general last). A step that fails is reported and the rest still run:
a failure here costs time, never a test.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

import numpy as np

from qiz.demo_quantum import run_quantum_demo
from qiz.quantum.algorithms import qaoa as qaoa_mod
from qiz.quantum.algorithms import vqe as vqe_mod
from qiz.quantum.algorithms.ansatz import GeneralAnsatz, HardwareEfficientAnsatz
from qiz.quantum.algorithms.grover import GroverSimulator, exponential_search, optimal_iterations
from qiz.quantum.algorithms.qaoa import QaoaSimulator
from qiz.quantum.algorithms.solvers import solve
from qiz.quantum.algorithms.vqe import VqeEvaluator, _adjoint_circuit
from qiz.quantum.core import statevector
from qiz.quantum.core.pauli import PauliSum
from qiz.quantum.problems.cnf import Cnf
from qiz.quantum.problems.netopt import assignment_qubo
from qiz.quantum.problems.qubo import QuboProblem


def complex_hamiltonian(n: int) -> PauliSum:
    """A Hermitian sum with Y factors on every qubit: complex, as the general ansatz's tests
    use (a real one takes other kernels)."""
    full = (1 << n) - 1
    rows = [(0.3, 1 << q, 1 << q) for q in range(n)]
    rows += [(1.0, 0, full), (0.7, full, 0), (-0.5, full, full)]
    return PauliSum(n, rows)


def general_ansatz() -> None:
    """test_vqe_general, per case: fused energy and gradient, energy alone, the state, and the
    gate-level engine's adjoint method and state; at 1 qubit (the low passes) and 15 (the high
    tile passes too, above 14)."""
    for n in (1, 15):
        h = complex_hamiltonian(n)
        ansatz = GeneralAnsatz(n, 1, "ladder")
        theta = np.random.default_rng(n).uniform(-np.pi, np.pi, ansatz.num_parameters)
        evaluator = VqeEvaluator(ansatz, h)
        evaluator.energy_and_gradient(theta)
        evaluator.energy(theta)
        evaluator.statevector(theta)
        _adjoint_circuit(ansatz.circuit(), h, theta, gradient=True)
        statevector.statevector(ansatz.circuit().bind(list(theta)))


def hardware_efficient_ansatz() -> None:
    """test_quantum_algorithms' fast path against the gate-level one: complex and real
    Hamiltonians, with the blocks as they are and tiny (its ``blocking`` fixture)."""

    def case(n: int, real: bool) -> None:
        ansatz = HardwareEfficientAnsatz(n, 3, "ladder")
        h = PauliSum.tfim(n, j=0.8, h=1.1) + PauliSum.from_labels(
            [(0.2, "I" * (n - 3) + "XZX"), (-0.15, "Y" + "I" * (n - 2) + "Y")]
            + ([] if real else [(0.3, "Y" + "I" * (n - 1))])
        )
        theta = np.random.default_rng(n).uniform(-3, 3, ansatz.num_parameters)
        VqeEvaluator(ansatz, h).energy_and_gradient(theta)
        VqeEvaluator(ansatz.circuit(), h).energy_and_gradient(theta)
        h.expectation(VqeEvaluator(ansatz, h).statevector(theta))

    for real in (False, True):
        case(5, real)
    saved = {m: (m.BLOCK_BITS, m.HIGH_GROUP_BITS) for m in (qaoa_mod, vqe_mod)}
    try:
        for module in saved:
            module.BLOCK_BITS, module.HIGH_GROUP_BITS = 3, 2
        for real in (False, True):
            case(5, real)
    finally:
        for module, (block, group) in saved.items():
            module.BLOCK_BITS, module.HIGH_GROUP_BITS = block, group


def placement_solvers() -> None:
    """test_netopt: the exact solver on 16 variables, annealing on 30."""
    problem = assignment_qubo(
        [3, 1, 2, 2],
        [2, 1, 1, 3],
        [[1, 2, 3, 1], [2, 2, 1, 0], [0, 1, 2, 3], [3, 1, 1, 2]],
        balance_weight=1.0,
        cost_weight=0.5,
    ).problem
    solve(problem, "exact")
    problem.brute_force()
    big = QuboProblem(30, {i: -1.0 for i in range(30)}, {(i, i + 1): 1.5 for i in range(29)})
    solve(big, sweeps=200, restarts=4)


def qaoa_precisions() -> None:
    """test_qaoa_precision and test_quantum_algorithms: single and double precision states and
    energies on integer and float weights, small and above the block size; no phase table."""
    rng = np.random.default_rng(21)
    for n in (10, 16):
        edges = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 3.0 / n]
        for weights in (None, [float(w) for w in rng.uniform(0.5, 1.5, len(edges))]):
            problem = QuboProblem.maxcut(n, edges, weights)
            for precision in ("double", "single"):
                sim = QaoaSimulator(problem, precision)
                sim.statevector([0.3, -0.2], [0.5, 0.1])
                sim.expectation([0.3, -0.2], [0.5, 0.1])
    lin = {i: float(rng.normal()) for i in range(18)}
    quad = {(i, i + 1): float(rng.normal()) for i in range(17)}
    QaoaSimulator(QuboProblem(18, lin, quad)).expectation([0.2], [0.3])


def grover_oracles() -> None:
    """test_quantum_algorithms: Grover on a CNF oracle."""
    cnf = Cnf.loads("c example\np cnf 5 4\n1 -2 0\n2 3 0\n-3 -4 5 0\n4 0\n")
    sim = GroverSimulator(5, cnf=cnf)
    sim.run(optimal_iterations(5, len(sim.solutions)))
    exponential_search(GroverSimulator(5, cnf=cnf), seed=4)


def demo_quantum_part() -> None:
    """The quantum part of ``qiz demo`` (test_cli's test_demo_json, early in a run, and
    test_demo_keep), which runs in the demo's own process: the same calls."""
    run_quantum_demo()


STEPS: tuple[Callable[[], None], ...] = (
    demo_quantum_part,
    placement_solvers,
    qaoa_precisions,
    hardware_efficient_ansatz,
    grover_oracles,
    general_ansatz,
)


def main() -> int:
    failed = 0
    for step in STEPS:
        try:
            step()
        except Exception:
            failed += 1
            print(f"warm_kernels: {step.__name__} failed", file=sys.stderr)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
