"""A small matrix on some qubits of a batch of vectors, by numpy: the one piece of linear algebra
both noisy simulators share.

The trajectory simulator keeps many small states as rows of one array and moves them through a
gate together (one numpy call instead of a kernel call per row, which is what costs at a few
qubits); the density-matrix simulator treats rho as one vector of 2n qubits (column index in
the low n bits, row index in the high n). Both are "apply a 2^k x 2^k matrix to axes of a
tensor", done here once, with the gate tables' little-endian convention: the matrix index is
``bit(q0) + 2 bit(q1) + ...``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def target_axes(qubits: Sequence[int], num_qubits: int) -> list[int]:
    """Axes of a ``(batch, 2, ..., 2)`` view holding ``qubits`` in a matrix's row-major order
    (highest target first). Axis 1 is qubit n-1, so qubit q is axis n - q."""
    return [num_qubits - q for q in reversed(qubits)]


def apply_to_rows(
    rows: np.ndarray, matrix: np.ndarray, qubits: Sequence[int], num_qubits: int
) -> np.ndarray:
    """``matrix`` on ``qubits`` of every row of ``rows`` (shape (batch, 2^num_qubits)); a new
    C-contiguous array."""
    k = len(qubits)
    batch = rows.shape[0]
    view = rows.reshape((batch,) + (2,) * num_qubits)
    m = np.asarray(matrix, dtype=np.complex128).reshape((2,) * (2 * k))
    axes = target_axes(qubits, num_qubits)
    out = np.tensordot(m, view, axes=(list(range(k, 2 * k)), axes))
    out = np.moveaxis(out, list(range(k)), axes)
    return np.ascontiguousarray(out).reshape(batch, 1 << num_qubits)


def reduced_density(rows: np.ndarray, qubits: Sequence[int], num_qubits: int) -> np.ndarray:
    """Each row's reduced density matrix on ``qubits``: shape (batch, 2^k, 2^k), entry [a, b] =
    sum over the other qubits of psi_a conj(psi_b)."""
    k = len(qubits)
    batch = rows.shape[0]
    view = rows.reshape((batch,) + (2,) * num_qubits)
    axes = target_axes(qubits, num_qubits)
    moved = np.moveaxis(view, axes, list(range(num_qubits + 1 - k, num_qubits + 1)))
    flat = moved.reshape(batch, -1, 1 << k)
    return np.einsum("bra,brc->bac", flat, flat.conj())
