"""Exact noisy simulation with a density matrix, for small registers: the reference the
trajectory simulator (and Aer) are checked against.

rho (2^n x 2^n) is handled as one vector of 2n qubits: the column index is the low n bits, the
row index the high n. A gate U on qubits Q is U on the row qubits Q + n and conj(U) on the
column qubits Q (rho -> U rho U^dagger); a channel is its superoperator sum_i K_i (x) conj(K_i)
on both at once. The outcome distribution is rho's diagonal, marginalised onto the measured bits,
then pushed through each bit's readout confusion matrix. Exact, so only small: at most
``MAX_DENSITY_QUBITS`` qubits, and measurements must come at the end (a mid-circuit outcome
would need the classical register carried along: use the trajectories).
"""

from __future__ import annotations

import numpy as np

from qiz.quantum.core.memory import require_memory
from qiz.quantum.noise.errors import NoiseError
from qiz.quantum.noise.limits import MAX_DENSITY_QUBITS
from qiz.quantum.noise.plan import Plan
from qiz.quantum.noise.tensor import apply_to_rows

Distribution = dict[tuple[int, ...], float]


def density_matrix(plan: Plan) -> np.ndarray:
    """The final density matrix of ``plan`` before its terminal measurements (2^n x 2^n)."""
    n = plan.num_qubits
    if n > MAX_DENSITY_QUBITS:
        raise NoiseError(
            f"the density-matrix method takes at most {MAX_DENSITY_QUBITS} qubits "
            f"(MAX_DENSITY_QUBITS), this circuit has {n}; use the trajectory method"
        )
    if plan.has_mid_circuit_measurement:
        raise NoiseError(
            "the density-matrix method needs every measurement at the end of the circuit; "
            "use the trajectory method for mid-circuit measurement"
        )
    require_memory(2 * n, 3.0)  # rho is a state of 2n qubits; a step makes two temporaries
    rho = np.zeros((1, 1 << (2 * n)), dtype=np.complex128)
    rho[0, 0] = 1.0
    for step in plan.steps:
        cols = list(step.qubits)
        rows = [q + n for q in step.qubits]
        if step.kind == "gate":
            rho = apply_to_rows(rho, step.full, rows, 2 * n)
            rho = apply_to_rows(rho, np.conj(step.full), cols, 2 * n)
        else:
            assert step.channel is not None
            rho = apply_to_rows(rho, step.channel.superoperator(), cols + rows, 2 * n)
    return rho.reshape(1 << n, 1 << n)


def distribution(plan: Plan) -> Distribution:
    """The exact probability of each classical outcome (bits, bit 0 first), readout included."""
    rho = density_matrix(plan)
    diag = np.clip(np.diagonal(rho).real, 0.0, None)
    dist: Distribution = {}
    base = [0] * plan.num_clbits
    for index in np.flatnonzero(diag):
        for qubit, clbit in plan.terminal:
            base[clbit] = (int(index) >> qubit) & 1
        key = tuple(base)
        dist[key] = dist.get(key, 0.0) + float(diag[index])
    total = sum(dist.values())
    dist = {k: v / total for k, v in dist.items()}
    for clbit in sorted(plan.readout):
        error = plan.readout[clbit]
        out: Distribution = {}
        for key, p in dist.items():
            flip = error.flip_probability(key[clbit])
            other = (*key[:clbit], 1 - key[clbit], *key[clbit + 1 :])
            out[key] = out.get(key, 0.0) + p * (1.0 - flip)
            out[other] = out.get(other, 0.0) + p * flip
        dist = {k: v for k, v in out.items() if v > 0.0}
    return dist


def sample_distribution(
    dist: Distribution, shots: int, rng: np.random.Generator
) -> dict[tuple[int, ...], int]:
    """``shots`` outcomes drawn from an exact distribution (one multinomial draw)."""
    keys = sorted(dist)
    probs = np.array([dist[k] for k in keys])
    drawn = rng.multinomial(shots, probs / probs.sum())
    return {k: int(c) for k, c in zip(keys, drawn, strict=True) if c}
