"""Numba kernel of the noisy trajectory simulator: a state's reduced density matrix on a few
qubits, in one pass and without a copy.

A channel whose Kraus operators are not a mixture of unitaries (amplitude damping, thermal
relaxation) needs each trajectory's p_i = <psi|K_i^dagger K_i|psi>, which all follow from the
reduced density matrix on the channel's qubits. numpy gets it by a transposed copy of the state
and an einsum; on a large state that is most of a noisy run's time. Here the state is read once,
in ``CHUNKS`` independent chunks (parallel where ``threads_for`` allows) whose partial sums are
added at the end.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

CHUNKS = 16


@njit(cache=True, parallel=True)
def reduced_density_1q(state: np.ndarray, qubit: int, out: np.ndarray) -> None:
    """``reduced_density`` for one qubit, its three sums kept in registers (the common case:
    damping and relaxation channels act on one qubit)."""
    bit = 1 << qubit
    low = bit - 1
    r00 = 0.0
    r11 = 0.0
    r01 = 0.0 + 0.0j
    for i in prange(state.shape[0] >> 1):
        i0 = ((i >> qubit) << (qubit + 1)) | (i & low)
        a = state[i0]
        b = state[i0 | bit]
        r00 += a.real * a.real + a.imag * a.imag
        r11 += b.real * b.real + b.imag * b.imag
        r01 += a * np.conj(b)
    out[0, 0] = r00
    out[1, 1] = r11
    out[0, 1] = r01
    out[1, 0] = np.conj(r01)


@njit(cache=True, parallel=True)
def reduced_density(state: np.ndarray, qubits: np.ndarray, out: np.ndarray) -> None:
    """``out[a, b]`` = sum over the other qubits of psi[..a..] conj(psi[..b..]), where a, b
    index ``qubits`` little-endian (bit j of a is qubit ``qubits[j]``); k = len(qubits) <= 3."""
    k = qubits.shape[0]
    dim = 1 << k
    sorted_q = np.sort(qubits)
    bases = state.shape[0] >> k
    chunks = min(CHUNKS, bases)
    partial = np.zeros((chunks, dim, dim), dtype=np.complex128)
    offsets = np.zeros(dim, dtype=np.int64)
    for a in range(dim):
        off = 0
        for j in range(k):
            if (a >> j) & 1:
                off |= 1 << qubits[j]
        offsets[a] = off
    per = (bases + chunks - 1) // chunks
    for c in prange(chunks):
        amps = np.empty(dim, dtype=np.complex128)
        for i in range(c * per, min((c + 1) * per, bases)):
            base = i
            for j in range(k):  # insert a zero bit at each target, lowest first
                q = sorted_q[j]
                base = ((base >> q) << (q + 1)) | (base & ((1 << q) - 1))
            for a in range(dim):
                amps[a] = state[base | offsets[a]]
            for a in range(dim):
                for b in range(dim):
                    partial[c, a, b] += amps[a] * np.conj(amps[b])
    for a in range(dim):
        for b in range(dim):
            total = 0.0 + 0.0j
            for c in range(chunks):
                total += partial[c, a, b]
            out[a, b] = total
