"""Numba kernels of the batched path: one-qubit gates on (batch, 2**n) states, in place.

numpy over strided half-views costs an allocation and a pass per term, and for low qubits its
inner runs are one or two amplitudes long: measured at 8 qubits and 400 samples, an RY took
0.6-0.7 ms that way, about seven passes over the batch. Here it is one pass, in place, the
samples spread over the threads (each sample's state is small; the batch is the parallelism).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# the engine's thread rule; importing it also sets OpenMP's short spin (numba loads the
# OpenMP pool on the first parallel call, not on import)
from qiz.quantum.core.threads import PARALLEL_MIN_QUBITS, threads_for

__all__ = ["RX", "RY", "RZ", "angle_gradient", "matrix", "rotate", "threads_for_batch"]

RX, RY, RZ = 0, 1, 2


# log2 of the batch's total amplitudes below which one thread wins. Every gate is its own
# parallel region here, so waking the workers is paid per gate, and far more when another
# process holds a core. Measured on 2 cores beside one busy process (median ms, 1 thread vs 2,
# a re-uploading map of 2 layers): 100 samples at 8 qubits (2^14.6) kernel 0.84 vs 3.27, epoch
# 5.3 vs 34.9; at 10 qubits (2^16.6) 7.5 vs 10.7 and 27.9 vs 64.5; 400 samples at 10 qubits
# (2^18.6) 28.0 vs 25.5 and 96 vs 112; 400 at 12 (2^20.6) 112 vs 94 and 679 vs 475.
BATCH_PARALLEL_LOG2 = 19


def threads_for_batch(batch: int, num_qubits: int):  # noqa: ANN201 - a context manager
    """One thread unless the whole batch holds at least 2^BATCH_PARALLEL_LOG2 amplitudes."""
    total = num_qubits + max(batch, 1).bit_length() - 1
    shift = PARALLEL_MIN_QUBITS - BATCH_PARALLEL_LOG2  # threads_for's own threshold
    return threads_for(total + shift)


@njit(cache=True, inline="always")
def _insert_zero(i: int, bit: int) -> int:
    low = i & ((1 << bit) - 1)
    return ((i >> bit) << (bit + 1)) | low


@njit(cache=True, parallel=True)
def rotate(state: np.ndarray, q: int, kind: int, c: np.ndarray, s: np.ndarray) -> None:
    """exp(-i a_b P / 2) on qubit q of sample b, P = X, Y or Z (``kind``); c = cos(a/2),
    s = sin(a/2) per sample."""
    bit = 1 << q
    half = state.shape[1] >> 1
    for b in prange(state.shape[0]):
        cb = c[b]
        sb = s[b]
        row = state[b]
        for i in range(half):
            i0 = _insert_zero(i, q)
            i1 = i0 | bit
            x = row[i0]
            y = row[i1]
            if kind == RY:
                row[i0] = cb * x - sb * y
                row[i1] = sb * x + cb * y
            elif kind == RZ:
                row[i0] = x * complex(cb, -sb)
                row[i1] = y * complex(cb, sb)
            else:
                row[i0] = cb * x + complex(0.0, -sb) * y
                row[i1] = complex(0.0, -sb) * x + cb * y


@njit(cache=True, parallel=True)
def matrix(state: np.ndarray, q: int, m: np.ndarray) -> None:
    """One 2x2 matrix (shared by all samples) on qubit q."""
    bit = 1 << q
    half = state.shape[1] >> 1
    m00, m01, m10, m11 = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    for b in prange(state.shape[0]):
        row = state[b]
        for i in range(half):
            i0 = _insert_zero(i, q)
            i1 = i0 | bit
            x = row[i0]
            y = row[i1]
            row[i0] = m00 * x + m01 * y
            row[i1] = m10 * x + m11 * y


@njit(cache=True, parallel=True)
def angle_gradient(lam: np.ndarray, psi: np.ndarray, q: int, kind: int) -> np.ndarray:
    """Im <lambda_b| P_q |psi_b> for every sample b (P = X, Y or Z by ``kind``)."""
    bit = 1 << q
    half = psi.shape[1] >> 1
    out = np.empty(psi.shape[0])
    for b in prange(psi.shape[0]):
        lr = lam[b]
        pr = psi[b]
        total = 0.0
        for i in range(half):
            i0 = _insert_zero(i, q)
            i1 = i0 | bit
            l0 = lr[i0]
            l1 = lr[i1]
            p0 = pr[i0]
            p1 = pr[i1]
            if kind == RY:  # Y p = (-i p1, i p0): Im <l|Y p> = Re(conj(l1) p0 - conj(l0) p1)
                total += (l1.real * p0.real + l1.imag * p0.imag) - (
                    l0.real * p1.real + l0.imag * p1.imag
                )
            elif kind == RZ:
                total += (l0.real * p0.imag - l0.imag * p0.real) - (
                    l1.real * p1.imag - l1.imag * p1.real
                )
            else:
                total += (l0.real * p1.imag - l0.imag * p1.real) + (
                    l1.real * p0.imag - l1.imag * p0.real
                )
        out[b] = total
    return out
