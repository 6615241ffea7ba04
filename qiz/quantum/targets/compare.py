"""The ideal answer beside the noisy one: the exact outcome distribution of the circuit as
written (no transpiling, no noise), and two distances from it to the noisy counts.

* total variation distance ``TVD(p, q) = 1/2 sum_x |p(x) - q(x)|`` (0 = the same; the largest
  difference in probability any event can have), with q the counts' empirical distribution;
* classical (Hellinger) fidelity ``(sum_x sqrt(p(x) q(x)))^2`` (1 = the same), as
  ``qiskit.quantum_info.hellinger_fidelity`` reports it.

The ideal distribution is exact only when every measurement is terminal (nothing acts on a qubit
after it is measured, no reset): then it is one state vector's probabilities, marginalised onto
the measured bits. Otherwise there is none (None), and no distances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from qiz.quantum.core import statevector
from qiz.quantum.core.circuit import Circuit


def ideal_distribution(circuit: Circuit) -> dict[str, float] | None:
    """Outcome (bitstring, bit 0 rightmost) -> exact probability; None with mid-circuit
    measurements or resets."""
    unitary = []
    measured: list[tuple[int, int]] = []
    done: set[int] = set()
    for inst in circuit.instructions:
        if inst.name == "measure":
            measured.append((inst.qubits[0], inst.clbits[0]))
            done.add(inst.qubits[0])
        elif inst.name == "barrier":
            continue
        elif inst.name == "reset" or done.intersection(inst.qubits):
            return None
        else:
            unitary.append(inst)
    state = statevector.statevector(
        Circuit(circuit.num_qubits, circuit.num_clbits, unitary, circuit.name)
    )
    probs = np.abs(state) ** 2
    width = circuit.num_clbits
    out: dict[str, float] = {}
    for index in np.flatnonzero(probs > 1e-15):
        bits = ["0"] * width
        for qubit, clbit in measured:
            bits[width - 1 - clbit] = "1" if (int(index) >> qubit) & 1 else "0"
        key = "".join(bits)
        out[key] = out.get(key, 0.0) + float(probs[index])
    return out


def tvd(ideal: Mapping[str, float], counts: Mapping[str, int]) -> float:
    shots = sum(counts.values())
    keys = set(ideal) | set(counts)
    return 0.5 * sum(abs(ideal.get(k, 0.0) - counts.get(k, 0) / shots) for k in keys)


def fidelity(ideal: Mapping[str, float], counts: Mapping[str, int]) -> float:
    shots = sum(counts.values())
    overlap = sum(math.sqrt(p * counts.get(k, 0) / shots) for k, p in ideal.items())
    return min(overlap * overlap, 1.0)
