"""The quantum processor: circuits, the state-vector engine, and the algorithms nodes run.

Seven parts, one subpackage each, importing only downwards (``tests/test_quantum_engine.py``
keeps it so)::

    kernels/     numba loops over state arrays and nothing else: the general gate kernels and
                 the fused, cache-blocked kernels of the QAOA and VQE fast paths
    core/        what every other part builds on: the circuit model (gates, parameters,
                 circuits), Pauli-sum observables, the general engine (statevector, sampling,
                 the Sampler/Estimator primitives), its limits (memory, threads), its name,
                 its errors and its one input-file reader                  -> kernels
    qasm/        OpenQASM 3 (and 2) text to circuits and back             -> core
    problems/    problems as plain data: QUBO/Ising models, CNF formulas, graphs, and the
                 mesh's own network problems encoded as QUBOs              -> core
    algorithms/  QAOA, VQE and its ansatzes, Grover, and ``solve`` over any QUBO
                                                         -> problems, core, kernels
    noise/       Kraus channels, noise models and their file, noisy sampling by trajectories
                 or density matrix, import from Qiskit Aer              -> core, kernels
    targets/     device targets (basis gates, coupling map, calibration) shipped as data,
                 transpiling to them (Qiskit's transpiler when installed), noisy runs
                                                                         -> noise, core

Why this cut: the kernels follow numba's rules (positional arguments, nopython types) and change
only for speed, so they sit apart from the code that reads as mathematics; the core is all a
circuit user needs; a problem is shared by several algorithms (one QUBO feeds QAOA, VQE,
annealing and brute force), so problems sit below the algorithms instead of inside one of
them; the OpenQASM front-end, the one part that needs the ``openqasm3`` parser, is a leaf; noise
sits beside the algorithms on the core, and a device target is noise plus a device's shape.

``import qiz.quantum`` loads neither numpy nor numba (every CLI command pays for what this
imports), so it re-exports only what the faces and job code need without running a circuit:
the errors and the engine's name. Everything else comes from its module, e.g.
``from qiz.quantum.core.circuit import Circuit`` or ``from qiz.quantum import qasm``.
"""

from qiz.quantum.core.engine import ENGINE_NAME, ENGINE_VERSION
from qiz.quantum.core.errors import (
    CircuitError,
    HamiltonianError,
    ProblemTooLarge,
    QasmError,
    QuantumError,
)

__all__ = [
    "ENGINE_NAME",
    "ENGINE_VERSION",
    "CircuitError",
    "HamiltonianError",
    "ProblemTooLarge",
    "QasmError",
    "QuantumError",
]
