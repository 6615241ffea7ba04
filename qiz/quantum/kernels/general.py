"""Numba kernels of the general gate-level engine.

Each kernel applies one small matrix to the whole state in place, in parallel over independent
amplitude groups. The fast paths (QAOA, VQE, Grover) have their own fused kernels; these are the
general path that every OpenQASM circuit can take.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _insert_zero(i: int, bit: int) -> int:
    low = i & ((1 << bit) - 1)
    return ((i >> bit) << (bit + 1)) | low


@njit(cache=True, parallel=True)
def apply_1q(state: np.ndarray, target: int, ctrl_mask: int, m: np.ndarray) -> None:
    m00, m01, m10, m11 = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    bit = 1 << target
    for i in prange(state.shape[0] >> 1):
        i0 = _insert_zero(i, target)
        if i0 & ctrl_mask == ctrl_mask:
            a = state[i0]
            b = state[i0 | bit]
            state[i0] = m00 * a + m01 * b
            state[i0 | bit] = m10 * a + m11 * b


@njit(cache=True, inline="always")
def _apply_2q_at(
    state: np.ndarray, i: int, lo: int, hi: int, t0: int, t1: int, ctrl_mask: int, m: np.ndarray
) -> None:
    base = _insert_zero(_insert_zero(i, lo), hi)
    if base & ctrl_mask != ctrl_mask:
        return
    b0 = 1 << t0
    b1 = 1 << t1
    idx0 = base
    idx1 = base | b0
    idx2 = base | b1
    idx3 = base | b0 | b1
    a0 = state[idx0]
    a1 = state[idx1]
    a2 = state[idx2]
    a3 = state[idx3]
    state[idx0] = m[0, 0] * a0 + m[0, 1] * a1 + m[0, 2] * a2 + m[0, 3] * a3
    state[idx1] = m[1, 0] * a0 + m[1, 1] * a1 + m[1, 2] * a2 + m[1, 3] * a3
    state[idx2] = m[2, 0] * a0 + m[2, 1] * a1 + m[2, 2] * a2 + m[2, 3] * a3
    state[idx3] = m[3, 0] * a0 + m[3, 1] * a1 + m[3, 2] * a2 + m[3, 3] * a3


@njit(cache=True, parallel=True)
def apply_2q(state: np.ndarray, t0: int, t1: int, ctrl_mask: int, m: np.ndarray) -> None:
    lo, hi = min(t0, t1), max(t0, t1)
    for i in prange(state.shape[0] >> 2):
        _apply_2q_at(state, i, lo, hi, t0, t1, ctrl_mask, m)


@njit(cache=True, parallel=True)
def apply_diag_1q(state: np.ndarray, target: int, ctrl_mask: int, d0: complex, d1: complex) -> None:
    """A diagonal single-target gate: one multiply per amplitude, no pairing."""
    for i in prange(state.shape[0]):
        if i & ctrl_mask == ctrl_mask:
            if (i >> target) & 1:
                state[i] *= d1
            else:
                state[i] *= d0


@njit(cache=True, parallel=True)
def probability_of_one(state: np.ndarray, target: int) -> float:
    total = 0.0
    for i in prange(state.shape[0]):
        if (i >> target) & 1:
            a = state[i]
            total += a.real * a.real + a.imag * a.imag
    return total


@njit(cache=True, parallel=True)
def collapse(state: np.ndarray, target: int, outcome: int, scale: float) -> None:
    """Project qubit ``target`` on ``outcome`` and renormalise by ``scale``."""
    for i in prange(state.shape[0]):
        if ((i >> target) & 1) == outcome:
            state[i] *= scale
        else:
            state[i] = 0.0


@njit(cache=True, parallel=True)
def pauli_expectation(state: np.ndarray, xmask: int, zmask: int) -> complex:
    """<psi| X^x Z^z |psi> (without the i^{#Y} factor), one pass over the state."""
    total = 0.0 + 0.0j
    for j in prange(state.shape[0]):
        sign = 1.0
        v = j & zmask
        # parity of v
        v ^= v >> 32
        v ^= v >> 16
        v ^= v >> 8
        v ^= v >> 4
        v ^= v >> 2
        v ^= v >> 1
        if v & 1:
            sign = -1.0
        a = state[j ^ xmask]
        total += sign * (a.real - 1j * a.imag) * state[j]
    return total


@njit(cache=True, parallel=True)
def pauli_apply_add(
    out: np.ndarray, state: np.ndarray, coeff: complex, xmask: int, zmask: int
) -> None:
    """out += coeff * X^x Z^z |state> (coeff already carries the i^{#Y} factor)."""
    for k in prange(state.shape[0]):
        j = k ^ xmask
        v = j & zmask
        v ^= v >> 32
        v ^= v >> 16
        v ^= v >> 8
        v ^= v >> 4
        v ^= v >> 2
        v ^= v >> 1
        if v & 1:
            out[k] -= coeff * state[j]
        else:
            out[k] += coeff * state[j]


@njit(cache=True, parallel=True)
def zero_unless(state: np.ndarray, mask: int) -> None:
    """Zero every amplitude whose index does not have all the bits of ``mask`` set."""
    for i in prange(state.shape[0]):
        if i & mask != mask:
            state[i] = 0.0


@njit(cache=True, parallel=True)
def inner(a: np.ndarray, b: np.ndarray) -> complex:
    """<a|b>."""
    total = 0.0 + 0.0j
    for i in prange(a.shape[0]):
        x = a[i]
        total += (x.real - 1j * x.imag) * b[i]
    return total
