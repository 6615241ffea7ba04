"""The VQE fast path for real states: RY + CZ ansatz and a real Hamiltonian (every term with an
even number of Y). Then psi and lambda stay real, so each is one float64 array: the forward
sweeps and H psi touch half the bytes, and backward psi and lambda travel together as the
(re, im) pair of the complex kernels (RY acts on both parts alike), so one sweep undoes both.
The gradient becomes dE/dtheta_q = sum over pairs (lambda_b psi_a - lambda_a psi_b).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from qiz.quantum.kernels.blocked import (
    RY,
    gather,
    gather_real,
    mix_contiguous,
    mix_contiguous_real,
    mix_tile,
    mix_tile_real,
    parity,
    scatter,
    scatter_real,
)
from qiz.quantum.kernels.vqe import cz_sign, scale_sign

FAST = {"contract", "nsz"}
FAST_SUM = {"contract", "nsz", "reassoc"}  # reductions only: lets the sum use vector lanes


@njit(cache=True, inline="always")
def _scale_sign_real(
    x: np.ndarray,
    base: int,
    lo: int,
    nrows: int,
    width: int,
    factor: float,
    shifts: np.ndarray,
    masks: np.ndarray,
) -> None:
    for r in range(nrows):
        for w in range(width):
            x[r * width + w] *= factor * cz_sign(base + (r << lo) + w, shifts, masks)


@njit(cache=True, fastmath=FAST_SUM)
def _grad_sweep_real(p: np.ndarray, lam: np.ndarray, size: int, half: int) -> float:
    total = 0.0
    for g in range(0, size, 2 * half):
        pa = p[g : g + half]
        pb = p[g + half : g + 2 * half]
        la = lam[g : g + half]
        lb = lam[g + half : g + 2 * half]
        for m in range(half):
            total += lb[m] * pa[m] - la[m] * pb[m]
    return total


@njit(cache=True, parallel=True)
def forward_low_real(
    x: np.ndarray,
    bits: int,
    u: np.ndarray,
    v: np.ndarray,
    factor: float,
    last: bool,
    shifts: np.ndarray,
    masks: np.ndarray,
) -> None:
    size = 1 << bits
    for blk in prange(x.shape[0] >> bits):
        off = blk << bits
        r = x[off : off + size]
        mix_contiguous_real(u, v, r, 0, bits)
        if last:
            _scale_sign_real(r, off, 0, 1, size, factor, shifts, masks)
        else:
            for k in range(size):
                r[k] *= factor


@njit(cache=True, parallel=True)
def forward_high_real(
    x: np.ndarray,
    lo: int,
    hi: int,
    u: np.ndarray,
    v: np.ndarray,
    factor: float,
    last: bool,
    shifts: np.ndarray,
    masks: np.ndarray,
    width: int,
) -> None:
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    for task in prange((x.shape[0] >> hi) * chunks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        buf = np.empty(nrows * width)
        gather_real(x, buf, base, lo, nrows, width)
        mix_tile_real(u, v, buf, hi - lo, width, lo)
        if last:
            _scale_sign_real(buf, base, lo, nrows, width, factor, shifts, masks)
        else:
            for k in range(nrows * width):
                buf[k] *= factor
        scatter_real(x, buf, base, lo, nrows, width)


@njit(cache=True, parallel=True)
def backward_low_real(
    p: np.ndarray,
    lam: np.ndarray,
    bits: int,
    u: np.ndarray,
    v: np.ndarray,
    factor: float,
    first: bool,
    shifts: np.ndarray,
    masks: np.ndarray,
    grad: np.ndarray,
) -> None:
    size = 1 << bits
    nblocks = p.shape[0] >> bits
    partial = np.zeros((nblocks, bits))
    for blk in prange(nblocks):
        off = blk << bits
        a = p[off : off + size]
        c = lam[off : off + size]
        if first:
            scale_sign(a, c, off, 0, 1, size, 1.0, shifts, masks, True)
        for q in range(bits):
            partial[blk, q] = _grad_sweep_real(a, c, size, 1 << q)
        mix_contiguous(RY, u, v, a, c, 0, bits)  # psi and lambda as one (re, im) pair
        for k in range(size):
            a[k] *= factor
            c[k] *= factor
    for q in range(bits):
        grad[q] += partial[:, q].sum()


@njit(cache=True, parallel=True)
def backward_high_real(
    p: np.ndarray,
    lam: np.ndarray,
    lo: int,
    hi: int,
    u: np.ndarray,
    v: np.ndarray,
    factor: float,
    first: bool,
    shifts: np.ndarray,
    masks: np.ndarray,
    width: int,
    grad: np.ndarray,
) -> None:
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    ntasks = (p.shape[0] >> hi) * chunks
    partial = np.zeros((ntasks, hi - lo))
    for task in prange(ntasks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        size = nrows * width
        bp = np.empty(size)
        bl = np.empty(size)
        gather(p, lam, bp, bl, base, lo, nrows, width)
        if first:
            scale_sign(bp, bl, base, lo, nrows, width, 1.0, shifts, masks, True)
        for k in range(hi - lo):
            partial[task, k] = _grad_sweep_real(bp, bl, size, width << k)
        mix_tile(RY, u, v, bp, bl, hi - lo, width, lo)
        for k in range(size):
            bp[k] *= factor
            bl[k] *= factor
        scatter(p, lam, bp, bl, base, lo, nrows, width)
    for k in range(hi - lo):
        grad[lo + k] += partial[:, k].sum()


@njit(cache=True, fastmath=FAST)
def _flip_add_real(x: np.ndarray, y: np.ndarray, size: int, half: int, cx: float) -> None:
    for g in range(0, size, 2 * half):
        xa = x[g : g + half]
        xb = x[g + half : g + 2 * half]
        ya = y[g : g + half]
        yb = y[g + half : g + 2 * half]
        for m in range(half):
            ya[m] += cx * xb[m]
            yb[m] += cx * xa[m]


@njit(cache=True, parallel=True)
def hamiltonian_low_real(
    x: np.ndarray,
    y: np.ndarray,
    bits: int,
    dlevel: np.ndarray,
    dvals: np.ndarray,
    indexed: bool,
    cx: np.ndarray,
) -> None:
    """y = D x + sum_{q < bits} cx_q X_q x, block by block."""
    size = 1 << bits
    for blk in prange(x.shape[0] >> bits):
        off = blk << bits
        a = x[off : off + size]
        c = y[off : off + size]
        if indexed:
            lvl = dlevel[off : off + size]
            for k in range(size):
                c[k] = dvals[lvl[k]] * a[k]
        else:
            dd = dvals[off : off + size]
            for k in range(size):
                c[k] = dd[k] * a[k]
        for q in range(bits):
            if cx[q] != 0.0:
                _flip_add_real(a, c, size, 1 << q, cx[q])


@njit(cache=True, parallel=True)
def hamiltonian_high_real(
    x: np.ndarray, y: np.ndarray, lo: int, hi: int, cx: np.ndarray, width: int
) -> None:
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    for task in prange((x.shape[0] >> hi) * chunks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        size = nrows * width
        bx = np.empty(size)
        by = np.empty(size)
        gather(x, y, bx, by, base, lo, nrows, width)
        for k in range(hi - lo):
            q = lo + k
            if cx[q] != 0.0:
                _flip_add_real(bx, by, size, width << k, cx[q])
        scatter_real(y, by, base, lo, nrows, width)


@njit(cache=True, parallel=True)
def group_apply_add_real(
    x: np.ndarray, y: np.ndarray, xmask: int, zmasks: np.ndarray, coeffs: np.ndarray
) -> None:
    """y[k] += sum_t c_t (-1)^{popcount((k ^ x) & z_t)} x[k ^ x] (c_t real: i^{#Y} folded in)."""
    for k in prange(x.shape[0]):
        j = k ^ xmask
        s = 0.0
        for t in range(zmasks.shape[0]):
            if parity(j & zmasks[t]):
                s -= coeffs[t]
            else:
                s += coeffs[t]
        y[k] += s * x[j]


@njit(cache=True, parallel=True, fastmath=FAST_SUM)
def dot(x: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for k in prange(x.shape[0]):
        total += x[k] * y[k]
    return total
