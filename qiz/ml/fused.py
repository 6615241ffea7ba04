"""A whole program per sample in one numba call: every gate of one sample's circuit while its
state stays in the core's cache, the samples spread over the threads.

The gate-by-gate path (``jit.rotate`` per gate over the whole batch) streams the batch through
memory once per gate: at 12 qubits and 100 samples the batch is 6.5 MB, past this machine's
1 MiB L2, so every gate pays memory bandwidth. One sample's state (64 KiB at 12 qubits) stays
in L2 for all of its gates here, and the whole call is one parallel region instead of one per
gate. The programs come from ``batched.Program.fused`` (one-qubit rotations, fixed one-qubit
gates, real diagonal sign tables, ZZ rotations); the gate codes are the constants below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

# importing the engine's thread module sets OpenMP's short spin before numba loads its pool
from qiz.quantum.core.threads import PARALLEL_MIN_QUBITS, threads_for

RX, RY, RZ, MATRIX, DIAG, RZZ = 0, 1, 2, 3, 4, 5
# log2 of the batch's amplitudes from which the samples are spread over the threads: one
# parallel region per call (not per gate), so it pays off far sooner than jit's per-gate rule
FUSED_PARALLEL_LOG2 = 15
# the same for ``forward_real``: a real amplitude's gate costs about a fifth of a complex one's
# there (0.04-0.1 against 0.5 ns), so a batch needs about five times the amplitudes before
# splitting it over the threads pays for waking them (derived from the complex rule, not
# measured quiet: this machine was busy. Beside other work, 100 samples at 10 qubits took
# 0.15 ms on one thread, 0.22 on two)
FUSED_REAL_PARALLEL_LOG2 = 17


def threads_for_fused(batch: int, num_qubits: int, log2: int = FUSED_PARALLEL_LOG2):  # noqa: ANN201 - a context manager
    """One thread unless the batch holds at least 2^log2 amplitudes."""
    total = num_qubits + max(batch, 1).bit_length() - 1
    return threads_for(total + PARALLEL_MIN_QUBITS - log2)


@njit(cache=True, inline="always")
def _rotate(row: np.ndarray, q: int, kind: int, c: float, s: float) -> None:
    """exp(-i a P / 2) on qubit q of one state, c = cos(a/2), s = sin(a/2). On the real and
    imaginary parts (a float view): a real times a complex number costs two multiplications
    there, four as complex arithmetic (measured 0.55 against 0.75-0.83 ns per amplitude for
    RY at 12 qubits)."""
    f = row.view(np.float64)
    bit = 1 << q
    for base in range(0, row.size, bit << 1):
        for i0 in range(base, base + bit):
            a = 2 * i0
            b = 2 * (i0 + bit)
            xr = f[a]
            xi = f[a + 1]
            yr = f[b]
            yi = f[b + 1]
            if kind == RY:
                f[a] = c * xr - s * yr
                f[a + 1] = c * xi - s * yi
                f[b] = s * xr + c * yr
                f[b + 1] = s * xi + c * yi
            elif kind == RZ:  # x (c - i s), y (c + i s)
                f[a] = c * xr + s * xi
                f[a + 1] = c * xi - s * xr
                f[b] = c * yr - s * yi
                f[b + 1] = c * yi + s * yr
            else:  # c x - i s y, -i s x + c y
                f[a] = c * xr + s * yi
                f[a + 1] = c * xi - s * yr
                f[b] = c * yr + s * xi
                f[b + 1] = c * yi - s * xr


@njit(cache=True, inline="always")
def _matrix(row: np.ndarray, q: int, m: np.ndarray) -> None:
    bit = 1 << q
    m00, m01, m10, m11 = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    for base in range(0, row.size, bit << 1):
        for i0 in range(base, base + bit):
            i1 = i0 + bit
            x = row[i0]
            y = row[i1]
            row[i0] = m00 * x + m01 * y
            row[i1] = m10 * x + m11 * y


@njit(cache=True, inline="always")
def _diag(row: np.ndarray, d: np.ndarray) -> None:
    f = row.view(np.float64)
    for i in range(row.size):
        f[2 * i] *= d[i]
        f[2 * i + 1] *= d[i]


@njit(cache=True, inline="always")
def _rzz(row: np.ndarray, z: np.ndarray, c: float, s: float) -> None:
    """exp(-i a Z..Z / 2): cos - i sin z, z = +-1 per basis state."""
    for i in range(row.size):
        row[i] *= complex(c, -s * z[i])


@njit(cache=True, inline="always")
def _gate(
    row: np.ndarray,
    kind: int,
    q: int,
    slot: int,
    angle: float,
    mats: np.ndarray,
    diags: np.ndarray,
) -> None:
    """One gate; ``angle`` is the sample's angle (rotations), ``slot`` the matrix or table."""
    if kind <= RZ:
        _rotate(row, q, kind, math.cos(0.5 * angle), math.sin(0.5 * angle))
    elif kind == MATRIX:
        _matrix(row, q, mats[slot])
    elif kind == DIAG:
        _diag(row, diags[slot])
    else:
        _rzz(row, diags[slot], math.cos(0.5 * angle), math.sin(0.5 * angle))


@njit(cache=True, inline="always")
def _num_qubits(amplitudes: int) -> int:
    """n for a state of 2^n amplitudes."""
    n = 0
    while (1 << n) < amplitudes:
        n += 1
    return n


@njit(cache=True, inline="always")
def _prefix_factors(
    num_qubits: int,
    kinds: np.ndarray,
    qubits: np.ndarray,
    slots: np.ndarray,
    angles: np.ndarray,
    mats: np.ndarray,
    diags: np.ndarray,
    prefix: int,
) -> np.ndarray:
    """Each qubit's two amplitudes after the first ``prefix`` gates (one qubit each, before
    anything entangles) from |0>: the factors of the product state they leave. ``angles``
    is one sample's row."""
    v = np.zeros((num_qubits, 2), dtype=np.complex128)
    v[:, 0] = 1.0
    for g in range(prefix):
        _gate(v[qubits[g]], kinds[g], 0, slots[g], angles[g], mats, diags)
    return v


@njit(cache=True, inline="always")
def _product_state(row: np.ndarray, num_qubits: int, v: np.ndarray) -> None:
    """row = v[n-1] (x) ... (x) v[0]: qubit q in state v[q] (bit q of the index), built by
    doubling, one pass over the state."""
    row[0] = 1.0
    size = 1
    for q in range(num_qubits):
        v0 = v[q, 0]
        v1 = v[q, 1]
        for i in range(size):
            row[i + size] = row[i] * v1
            row[i] = row[i] * v0
        size <<= 1


@njit(cache=True, parallel=True)
def forward(
    state: np.ndarray,
    kinds: np.ndarray,
    qubits: np.ndarray,
    slots: np.ndarray,
    angles: np.ndarray,
    mats: np.ndarray,
    diags: np.ndarray,
    prefix: int,
) -> None:
    """Run every gate on every sample's state (rows of ``state``, |0...0> on entry), in
    place. ``angles[b, g]`` is gate g's angle for sample b (rotations only). The first
    ``prefix`` gates act on one qubit each, before anything entangles: they are run on each
    qubit's own two amplitudes and the state built once as their product, one pass where
    they would take one each."""
    num_qubits = _num_qubits(state.shape[1])
    for b in prange(state.shape[0]):
        row = state[b]
        v = _prefix_factors(num_qubits, kinds, qubits, slots, angles[b], mats, diags, prefix)
        _product_state(row, num_qubits, v)
        for g in range(prefix, kinds.size):
            _gate(row, kinds[g], qubits[g], slots[g], angles[b, g], mats, diags)


# -- fixed programs: a run of diagonal rotations is one phase pass --------------------------

# diagonal rotations (RZ, RZZ) in a row from which ``forward_fixed`` runs them as one phase:
# building the phase costs about three complex multiplications per amplitude, a rotation one
MIN_RUN = 4
# the most lower-numbered ZZ partners one qubit may have in a merged run: its phase table has
# 2^(partners + 1) entries (ring and linear ZZ maps: at most two)
MAX_PARTNERS = 4


@dataclass(frozen=True)
class PhaseRuns:
    """Where a fixed program's runs of diagonal rotations are, as ``forward_fixed`` takes them.

    A ZZ term b on qubits p < q is owned by q (its ``term`` is 1 + k for q's k-th partner p), an
    RZ on q by q (term 0); gates that are not in a merged run have ``stop`` 0."""

    stop: np.ndarray  # (gates,): at a run's first gate the index after the run, else 0
    run: np.ndarray  # (gates,): the run a gate is in
    owner: np.ndarray  # (gates,)
    term: np.ndarray  # (gates,)
    partners: np.ndarray  # (runs, qubits, MAX_PARTNERS): the owner's partner qubits
    counts: np.ndarray  # (runs, qubits): how many partners each qubit has in the run


def phase_runs(
    num_qubits: int, kinds: np.ndarray, on: Sequence[tuple[int, ...]], prefix: int
) -> PhaseRuns:
    """The runs of at least MIN_RUN consecutive RZ/RZZ gates after the product-state prefix
    (``on[g]``: the qubits gate g acts on), each cut where a qubit would get more than
    MAX_PARTNERS partners."""
    size = len(kinds)
    stop = np.zeros(size, dtype=np.int64)
    run = np.zeros(size, dtype=np.int64)
    owner = np.zeros(size, dtype=np.int64)
    term = np.zeros(size, dtype=np.int64)
    tables: list[list[list[int]]] = []

    def close(start: int, end: int, partners: list[list[int]]) -> None:
        if end - start >= MIN_RUN:
            stop[start] = end
            run[start:end] = len(tables)
            tables.append(partners)

    g = prefix
    while g < size:
        if int(kinds[g]) not in (RZ, RZZ):
            g += 1
            continue
        start = g
        partners: list[list[int]] = [[] for _ in range(num_qubits)]
        while g < size and int(kinds[g]) in (RZ, RZZ):
            if int(kinds[g]) == RZ:
                owner[g], term[g] = on[g][0], 0
            else:
                p, q = sorted(on[g])
                if p not in partners[q]:
                    if len(partners[q]) == MAX_PARTNERS:
                        close(start, g, partners)
                        start = g
                        partners = [[] for _ in range(num_qubits)]
                    partners[q].append(p)
                owner[g], term[g] = q, 1 + partners[q].index(p)
            g += 1
        close(start, g, partners)
    table = np.zeros((max(1, len(tables)), num_qubits, MAX_PARTNERS), dtype=np.int64)
    counts = np.zeros((max(1, len(tables)), num_qubits), dtype=np.int64)
    for r, partners in enumerate(tables):
        for q, ps in enumerate(partners):
            table[r, q, : len(ps)] = ps
            counts[r, q] = len(ps)
    return PhaseRuns(stop, run, owner, term, table, counts)


@njit(cache=True, inline="always")
def _phase(
    row: np.ndarray, d: np.ndarray, coef: np.ndarray, f: np.ndarray, partners: np.ndarray,
    counts: np.ndarray, num_qubits: int,
) -> None:  # fmt: skip
    """row *= exp(-i/2 sum_q z_q (coef[q, 0] + sum_k coef[q, 1 + k] z_(partners[q, k]))), z =
    +1 for bit 0 and -1 for bit 1: a run of RZ and RZZ gates at once. The phase factors d are
    built by doubling like a product state: qubit q's factor depends on its bit and its
    partners' (lower) bits only, so its 2^(partners + 1) values are computed once (one cos and
    sin each) and d's upper half is its lower half times them, over blocks where the partners'
    bits are constant. The top qubit's factors are applied to the row as they are made: about
    three complex multiplications per amplitude in all, against one pass per gate."""
    d[0] = 1.0
    size = 1
    for q in range(num_qubits):
        count = counts[q]
        for m in range(1 << count):
            s = coef[q, 0]
            for k in range(count):
                if (m >> k) & 1:
                    s -= coef[q, 1 + k]
                else:
                    s += coef[q, 1 + k]
            c = math.cos(0.5 * s)
            sn = math.sin(0.5 * s)
            f[2 * m] = complex(c, -sn)
            f[2 * m + 1] = complex(c, sn)
        # qubit q's factor is constant over aligned blocks of 2^(lowest partner) indices
        block = size
        for k in range(count):
            block = min(block, 1 << partners[q, k])
        last = q == num_qubits - 1  # the top qubit's factors go straight onto the row
        for start in range(0, size, block):
            m = 0
            for k in range(count):
                m |= ((start >> partners[q, k]) & 1) << k
            f0 = f[2 * m]
            f1 = f[2 * m + 1]
            if last:
                for x in range(start, start + block):
                    row[x] *= d[x] * f0
                    row[x + size] *= d[x] * f1
            else:
                for x in range(start, start + block):
                    d[x + size] = d[x] * f1
                    d[x] = d[x] * f0
        size <<= 1


@njit(cache=True, inline="always")
def _matrix_real(row: np.ndarray, q: int, m: np.ndarray) -> None:
    """A fixed one-qubit gate with a real matrix (H, X, Z) on qubit q of a complex state, on its
    float view: the real and imaginary parts take the same real 2x2 product, half the
    multiplications of complex arithmetic and the same numbers (the matrix's imaginary parts
    are zero). Loops written as ``_ry_real``'s so that LLVM vectorises them."""
    f = row.view(np.float64)
    m00, m01, m10, m11 = m[0, 0].real, m[0, 1].real, m[1, 0].real, m[1, 1].real
    if q == 0:
        for j in range(row.size >> 1):
            xr = f[4 * j]
            xi = f[4 * j + 1]
            yr = f[4 * j + 2]
            yi = f[4 * j + 3]
            f[4 * j] = m00 * xr + m01 * yr
            f[4 * j + 1] = m00 * xi + m01 * yi
            f[4 * j + 2] = m10 * xr + m11 * yr
            f[4 * j + 3] = m10 * xi + m11 * yi
        return
    width = 2 << q  # floats in one half-block
    for base in range(0, f.size, width << 1):
        lo = f[base : base + width]
        hi = f[base + width : base + 2 * width]
        for j in range(width):
            x = lo[j]
            y = hi[j]
            lo[j] = m00 * x + m01 * y
            hi[j] = m10 * x + m11 * y


@njit(cache=True, parallel=True)
def forward_fixed(
    state: np.ndarray,
    kinds: np.ndarray,
    qubits: np.ndarray,
    slots: np.ndarray,
    angles: np.ndarray,
    mats: np.ndarray,
    diags: np.ndarray,
    prefix: int,
    stop: np.ndarray,
    run: np.ndarray,
    owner: np.ndarray,
    term: np.ndarray,
    partners: np.ndarray,
    counts: np.ndarray,
) -> None:
    """``forward`` for a program whose runs of diagonal rotations are merged (``phase_runs``):
    each run is one phase pass (``_phase``) instead of one pass per gate. For fixed programs
    (a kernel's feature map): the training path's adjoint sweep undoes gate by gate, so it
    keeps ``forward``."""
    num_qubits = _num_qubits(state.shape[1])
    width = partners.shape[2]
    real = np.empty(mats.shape[0], dtype=np.bool_)
    for k in range(mats.shape[0]):
        real[k] = not np.any(mats[k].imag != 0.0)
    for b in prange(state.shape[0]):
        row = state[b]
        v = _prefix_factors(num_qubits, kinds, qubits, slots, angles[b], mats, diags, prefix)
        _product_state(row, num_qubits, v)
        d = np.empty(row.size, dtype=np.complex128)
        coef = np.empty((num_qubits, width + 1))
        f = np.empty(2 << width, dtype=np.complex128)
        g = prefix
        while g < kinds.size:
            end = stop[g]
            if end > g:
                coef[:] = 0.0
                for h in range(g, end):
                    coef[owner[h], term[h]] += angles[b, h]
                r = run[g]
                _phase(row, d, coef, f, partners[r], counts[r], num_qubits)
                g = end
            elif kinds[g] == MATRIX and real[slots[g]]:
                _matrix_real(row, qubits[g], mats[slots[g]])
                g += 1
            else:
                _gate(row, kinds[g], qubits[g], slots[g], angles[b, g], mats, diags)
                g += 1


@njit(cache=True, inline="always")
def _im_pauli(lr: np.ndarray, pr: np.ndarray, q: int, kind: int, z: np.ndarray) -> float:
    """Im <l|P|p> for P = X, Y or Z on qubit q, or the Z..Z table ``z`` (kind RZZ)."""
    total = 0.0
    if kind == RZZ:
        for i in range(pr.size):
            total += z[i] * (lr[i].real * pr[i].imag - lr[i].imag * pr[i].real)
        return total
    bit = 1 << q
    for base in range(0, pr.size, bit << 1):
        for i0 in range(base, base + bit):
            i1 = i0 + bit
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
    return total


@njit(cache=True, inline="always")
def _grad_undo(pr: np.ndarray, lr: np.ndarray, q: int, kind: int, c: float, s: float) -> float:
    """Im <l|P|p> for the rotation about P on qubit q that was just applied with angle a
    (c = cos(a/2), s = sin(a/2)), then that rotation undone on p and l: one pass over both
    states where the three separate sweeps would take three."""
    fp = pr.view(np.float64)
    fl = lr.view(np.float64)
    bit = 1 << q
    total = 0.0
    for base in range(0, pr.size, bit << 1):
        for i0 in range(base, base + bit):
            a = 2 * i0
            b = 2 * (i0 + bit)
            p0r, p0i, p1r, p1i = fp[a], fp[a + 1], fp[b], fp[b + 1]
            l0r, l0i, l1r, l1i = fl[a], fl[a + 1], fl[b], fl[b + 1]
            if kind == RY:  # Im <l|Y p> = Re(conj(l1) p0 - conj(l0) p1); undo: RY(-a)
                total += (l1r * p0r + l1i * p0i) - (l0r * p1r + l0i * p1i)
                fp[a], fp[a + 1] = c * p0r + s * p1r, c * p0i + s * p1i
                fp[b], fp[b + 1] = c * p1r - s * p0r, c * p1i - s * p0i
                fl[a], fl[a + 1] = c * l0r + s * l1r, c * l0i + s * l1i
                fl[b], fl[b + 1] = c * l1r - s * l0r, c * l1i - s * l0i
            elif kind == RZ:  # undo: x (c + i s), y (c - i s)
                total += (l0r * p0i - l0i * p0r) - (l1r * p1i - l1i * p1r)
                fp[a], fp[a + 1] = c * p0r - s * p0i, c * p0i + s * p0r
                fp[b], fp[b + 1] = c * p1r + s * p1i, c * p1i - s * p1r
                fl[a], fl[a + 1] = c * l0r - s * l0i, c * l0i + s * l0r
                fl[b], fl[b + 1] = c * l1r + s * l1i, c * l1i - s * l1r
            else:  # RX; undo: c x + i s y, i s x + c y
                total += (l0r * p1i - l0i * p1r) + (l1r * p0i - l1i * p0r)
                fp[a], fp[a + 1] = c * p0r - s * p1i, c * p0i + s * p1r
                fp[b], fp[b + 1] = c * p1r - s * p0i, c * p1i + s * p0r
                fl[a], fl[a + 1] = c * l0r - s * l1i, c * l0i + s * l1r
                fl[b], fl[b + 1] = c * l1r - s * l0i, c * l1i + s * l0r
    return total


@njit(cache=True, inline="always")
def _reduce(lr: np.ndarray, num_qubits: int, v: np.ndarray, r: np.ndarray) -> None:
    """r[q, a] = sum over basis states i with bit q = a of lambda_i times the conjugates of
    every other qubit's v_k[bit k of i]: lambda contracted with the product state on all
    qubits but q, for every q, in about four passes over lambda (not one per qubit).

    ``low`` is lambda with qubits 0..q-1 contracted (bit 0 of its index is qubit q);
    ``high`` is the product of conj(v_k) over the qubits above q."""
    low = lr.copy()
    size = lr.size
    high = np.empty(max(1, lr.size >> 1), dtype=np.complex128)
    for q in range(num_qubits):
        count = size >> 1  # basis states of the qubits above q
        high[0] = 1.0
        filled = 1
        for k in range(q + 1, num_qubits):
            c0 = v[k, 0].conjugate()
            c1 = v[k, 1].conjugate()
            for j in range(filled):
                high[j + filled] = high[j] * c1
                high[j] = high[j] * c0
            filled <<= 1
        r0 = 0.0j
        r1 = 0.0j
        for j in range(count):
            r0 += low[2 * j] * high[j]
            r1 += low[2 * j + 1] * high[j]
        r[q, 0] = r0
        r[q, 1] = r1
        c0 = v[q, 0].conjugate()
        c1 = v[q, 1].conjugate()
        for j in range(count):
            low[j] = low[2 * j] * c0 + low[2 * j + 1] * c1
        size = count


@njit(cache=True, parallel=True)
def backward(
    psi: np.ndarray,
    lam: np.ndarray,
    kinds: np.ndarray,
    qubits: np.ndarray,
    slots: np.ndarray,
    angles: np.ndarray,
    mats: np.ndarray,
    inverses: np.ndarray,
    diags: np.ndarray,
    trainable: np.ndarray,
    out: np.ndarray,
    prefix: int,
) -> None:
    """The adjoint sweep of every sample: for each gate from the last, out[b, g] = Im <lambda|
    P |psi> (trainable rotations), then undo the gate on psi and lambda (``inverses`` are the
    fixed matrices' inverses; the diagonal tables are +-1, their own inverses). psi and lambda
    are undone in place, down to the first ``prefix`` gates (one-qubit gates before anything
    entangles, see ``forward``): there psi is a product state, so lambda is contracted with it
    once per qubit (``_reduce``) and those gates' gradients and undos run on two amplitudes
    per qubit instead of whole states: Im <lambda|P_q|psi> = Im <r_q|P|v_q>."""
    num_qubits = _num_qubits(psi.shape[1])
    for b in prange(psi.shape[0]):
        p = psi[b]
        lr = lam[b]
        for g in range(kinds.size - 1, prefix - 1, -1):
            kind = kinds[g]
            if trainable[g] and kind <= RZ:
                half = 0.5 * angles[b, g]
                out[b, g] = _grad_undo(p, lr, qubits[g], kind, math.cos(half), math.sin(half))
                continue
            if trainable[g]:
                out[b, g] = _im_pauli(lr, p, qubits[g], kind, diags[slots[g]])
            _gate(p, kind, qubits[g], slots[g], -angles[b, g], inverses, diags)
            _gate(lr, kind, qubits[g], slots[g], -angles[b, g], inverses, diags)
        if prefix == 0:
            continue
        v = _prefix_factors(num_qubits, kinds, qubits, slots, angles[b], mats, diags, prefix)
        r = np.zeros((num_qubits, 2), dtype=np.complex128)
        _reduce(lr, num_qubits, v, r)
        for g in range(prefix - 1, -1, -1):
            kind = kinds[g]
            vq = v[qubits[g]]
            rq = r[qubits[g]]
            if trainable[g] and kind <= RZ:
                half = 0.5 * angles[b, g]
                out[b, g] = _grad_undo(vq, rq, 0, kind, math.cos(half), math.sin(half))
                continue
            _gate(vq, kind, 0, slots[g], -angles[b, g], inverses, diags)
            _gate(rq, kind, 0, slots[g], -angles[b, g], inverses, diags)


# -- real programs: RY, real fixed gates and sign tables keep real amplitudes real ---------


@njit(cache=True, inline="always")
def _ry_real(row: np.ndarray, q: int, c: float, s: float) -> None:
    """RY on qubit q of a real state: four multiplications per amplitude pair, half the
    complex kernel's, on half its bytes. Written so that LLVM vectorises every loop: indices
    that numba knows are not negative (a loop counter from 0 times a constant, or slices), so
    no wrap-around test per index. Measured at 12 qubits, ns per amplitude: q = 0 and 1 with
    each group of 2 or 4 amplitudes spelled out, 0.06 and 0.10 (0.24-0.39 with a loop over
    each pair's run; spelled out for q = 2, LLVM did not vectorise it: 0.46); q >= 2 on the two
    halves' slices: 0.15 at q = 2 falling to 0.04 (0.36-0.48 with indices computed from the
    block's start)."""
    if q == 0:
        for j in range(row.size >> 1):
            x = row[2 * j]
            y = row[2 * j + 1]
            row[2 * j] = c * x - s * y
            row[2 * j + 1] = s * x + c * y
        return
    if q == 1:
        for j in range(row.size >> 2):
            x0 = row[4 * j]
            x1 = row[4 * j + 1]
            y0 = row[4 * j + 2]
            y1 = row[4 * j + 3]
            row[4 * j] = c * x0 - s * y0
            row[4 * j + 1] = c * x1 - s * y1
            row[4 * j + 2] = s * x0 + c * y0
            row[4 * j + 3] = s * x1 + c * y1
        return
    bit = 1 << q
    for base in range(0, row.size, bit << 1):
        lo = row[base : base + bit]
        hi = row[base + bit : base + 2 * bit]
        for j in range(bit):
            x = lo[j]
            y = hi[j]
            lo[j] = c * x - s * y
            hi[j] = s * x + c * y


@njit(cache=True, inline="always")
def _gate_real(
    row: np.ndarray, kind: int, q: int, slot: int, angle: float, mats: np.ndarray,
    diags: np.ndarray,
) -> None:  # fmt: skip
    """One gate of a real program (RY, a real matrix or a sign table) on a real state."""
    if kind == RY:
        _ry_real(row, q, math.cos(0.5 * angle), math.sin(0.5 * angle))
    elif kind == MATRIX:
        bit = 1 << q
        m = mats[slot]
        m00, m01, m10, m11 = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
        for base in range(0, row.size, bit << 1):
            for i0 in range(base, base + bit):
                x = row[i0]
                y = row[i0 + bit]
                row[i0] = m00 * x + m01 * y
                row[i0 + bit] = m10 * x + m11 * y
    else:  # DIAG
        d = diags[slot]
        for i in range(row.size):
            row[i] *= d[i]


@njit(cache=True, parallel=True)
def forward_real(
    state: np.ndarray,
    kinds: np.ndarray,
    qubits: np.ndarray,
    slots: np.ndarray,
    angles: np.ndarray,
    mats: np.ndarray,
    diags: np.ndarray,
    prefix: int,
) -> None:
    """``forward`` for a real program (``is_real``) on float64 rows: the same gates and the
    same product-state prefix, every amplitude a real number. ``mats`` are the real parts of
    the program's fixed matrices. The rows' contents on entry are not read (the product state
    writes every amplitude), so ``state`` may come from ``np.empty``."""
    num_qubits = _num_qubits(state.shape[1])
    for b in prange(state.shape[0]):
        row = state[b]
        v = np.zeros((num_qubits, 2))
        v[:, 0] = 1.0
        for g in range(prefix):
            _gate_real(v[qubits[g]], kinds[g], 0, slots[g], angles[b, g], mats, diags)
        row[0] = 1.0
        size = 1
        for q in range(num_qubits):
            v0 = v[q, 0]
            v1 = v[q, 1]
            lo = row[:size]
            hi = row[size : 2 * size]
            for i in range(size):
                hi[i] = lo[i] * v1
                lo[i] = lo[i] * v0
            size <<= 1
        for g in range(prefix, kinds.size):
            _gate_real(row, kinds[g], qubits[g], slots[g], angles[b, g], mats, diags)


def is_real(kinds: np.ndarray, mats: np.ndarray) -> bool:
    """Whether a fused program maps real states to real states: only RY rotations, fixed
    gates with real matrices (H, X, Z) and sign tables (Z, CZ). RX, RZ and ZZ rotations (and
    S, T, Y) make amplitudes complex; those programs take the complex ``forward``."""
    gates_real = all(int(k) in (RY, MATRIX, DIAG) for k in kinds)
    return gates_real and not np.any(mats.imag)
