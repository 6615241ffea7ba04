"""The general state-vector engine: complex128 amplitudes, one gate at a time.

Any circuit of the standard gate set runs here, with mid-circuit measurement and reset drawn
from a seeded generator. The algorithm fast paths (``qaoa``, ``vqe``, ``grover``) fuse whole
layers instead; they are checked against this engine in the tests.
"""

from __future__ import annotations

import numpy as np

from qiz.quantum.core.circuit import Circuit, Instruction
from qiz.quantum.core.errors import CircuitError
from qiz.quantum.core.gates import gate_spec
from qiz.quantum.core.memory import require_memory
from qiz.quantum.core.params import ParamExpr
from qiz.quantum.core.threads import threads_for
from qiz.quantum.kernels import general as kernels


def zero_state(num_qubits: int) -> np.ndarray:
    """|0...0> of ``num_qubits`` qubits (refuses clearly when it cannot fit in memory)."""
    require_memory(num_qubits, 1.0)
    state = np.zeros(1 << num_qubits, dtype=np.complex128)
    state[0] = 1.0
    return state


def apply_matrix(
    state: np.ndarray, qubits: tuple[int, ...], controls: int, matrix: np.ndarray
) -> None:
    """Apply ``matrix`` to the targets ``qubits[controls:]`` where all controls are 1."""
    ctrl_mask = 0
    for q in qubits[:controls]:
        ctrl_mask |= 1 << q
    targets = qubits[controls:]
    m = np.ascontiguousarray(matrix, dtype=np.complex128)
    if len(targets) == 1:
        if m[0, 1] == 0 and m[1, 0] == 0:
            kernels.apply_diag_1q(state, targets[0], ctrl_mask, m[0, 0], m[1, 1])
        else:  # small states run on one thread: see qiz.quantum.core.threads
            kernels.apply_1q(state, targets[0], ctrl_mask, m)
    elif len(targets) == 2:
        kernels.apply_2q(state, targets[0], targets[1], ctrl_mask, m)
    else:
        raise CircuitError(f"no kernel for a {len(targets)}-target gate")


def numeric_params(inst: Instruction) -> list[float]:
    """The instruction's angles as floats; a clear error if a parameter was left unbound."""
    values = []
    for p in inst.params:
        if isinstance(p, ParamExpr):
            if p.terms:
                raise CircuitError(
                    f"{inst.name} on {list(inst.qubits)} has unbound parameter(s) {list(p.names)}"
                )
            values.append(p.const)
        else:
            values.append(float(p))
    return values


def apply_instruction(state: np.ndarray, inst: Instruction) -> None:
    """Apply one gate instruction to ``state`` in place."""
    spec = gate_spec(inst.name)
    apply_matrix(state, inst.qubits, spec.controls, spec.matrix(numeric_params(inst)))


def measure_qubit(state: np.ndarray, qubit: int, rng: np.random.Generator) -> int:
    """Measure ``qubit`` in the Z basis: draw the outcome, collapse and renormalise."""
    p1 = min(max(kernels.probability_of_one(state, qubit), 0.0), 1.0)
    outcome = int(rng.random() < p1)
    prob = p1 if outcome else 1.0 - p1
    kernels.collapse(state, qubit, outcome, 1.0 / np.sqrt(prob))
    return outcome


_X = np.array([[0, 1], [1, 0]], dtype=np.complex128)


def run(
    circuit: Circuit,
    rng: np.random.Generator | None = None,
    initial: np.ndarray | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Run every instruction; returns the final state and the classical bits."""
    rng = rng if rng is not None else np.random.default_rng()
    if initial is None:
        state = zero_state(circuit.num_qubits)
    else:
        if initial.shape != (1 << circuit.num_qubits,):
            raise CircuitError("initial state has the wrong size")
        state = np.array(initial, dtype=np.complex128)
    bits = [0] * circuit.num_clbits
    with threads_for(circuit.num_qubits):
        _run_instructions(circuit, state, bits, rng)
    return state, bits


def _run_instructions(
    circuit: Circuit, state: np.ndarray, bits: list[int], rng: np.random.Generator
) -> None:
    for inst in circuit:
        if inst.name == "barrier":
            continue
        if inst.name == "measure":
            bits[inst.clbits[0]] = measure_qubit(state, inst.qubits[0], rng)
        elif inst.name == "reset":
            if measure_qubit(state, inst.qubits[0], rng):
                apply_matrix(state, inst.qubits, 0, _X)
        else:
            apply_instruction(state, inst)


def statevector(circuit: Circuit, initial: np.ndarray | None = None) -> np.ndarray:
    """The final state of a unitary circuit (barriers allowed; measure/reset are refused)."""
    if circuit.has_measurements():
        raise CircuitError("statevector needs a circuit without measure or reset")
    state, _ = run(circuit, np.random.default_rng(0), initial)
    return state
