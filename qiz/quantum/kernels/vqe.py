"""Fused kernels of the VQE fast path: layered RY + CZ ansatz, Hamiltonian, adjoint gradient.

States are split (real, imaginary) float64 arrays, as in ``blocked``. One ansatz layer is
RY(theta_q) on every qubit, then a set of CZs (a diagonal sign). Forward, a layer is two trips
through memory: the low pass rotates qubits 0..b-1 in L2-sized blocks; the high pass rotates the
rest on gathered tiles and applies the CZ sign on the way out. Backward (the adjoint method),
the same two passes carry psi and lambda together and accumulate every gradient component of
the layer on the way: for RY layers

    dE/dtheta_{l,q} = Re <lambda| (-i Y_q) |psi>

taken at any point inside the layer's undoing, both vectors at the same point (the RYs commute
with Y_q), which is what lets one pass serve all qubits of its group.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from qiz.quantum.kernels.blocked import RY, gather, mix_contiguous, mix_tile, parity, scatter


@njit(cache=True, inline="always")
def cz_sign(x: int, shifts: np.ndarray, masks: np.ndarray) -> float:
    """(-1)^(number of CZ pairs with both bits set); pairs grouped as (x >> shift) & mask."""
    acc = 0
    for e in range(shifts.shape[0]):
        acc ^= x & (x >> shifts[e]) & masks[e]
    return -1.0 if parity(acc) else 1.0


@njit(cache=True, inline="always")
def scale_sign(
    re: np.ndarray,
    im: np.ndarray,
    base: int,
    lo: int,
    nrows: int,
    width: int,
    factor: float,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
) -> None:
    """Multiply a tile (row r, column w is global index base + (r << lo) + w) by factor*sign."""
    for r in range(nrows):
        for w in range(width):
            k = r * width + w
            s = factor
            if use_sign:
                s *= cz_sign(base + (r << lo) + w, shifts, masks)
            re[k] *= s
            im[k] *= s


@njit(cache=True, fastmath={"contract", "nsz", "reassoc"})
def _grad_sweep(
    pr: np.ndarray, pi: np.ndarray, lr: np.ndarray, li: np.ndarray, size: int, half: int
) -> float:
    """sum over pairs (a, b = a + half) of Re(conj(l_b) p_a - conj(l_a) p_b).

    Reassociation is allowed here (and only in reductions like this one) so the sum runs in
    vector lanes; a strictly ordered sum is a chain of dependent adds, four times slower.
    """
    total = 0.0
    for g in range(0, size, 2 * half):
        par = pr[g : g + half]
        pai = pi[g : g + half]
        pbr = pr[g + half : g + 2 * half]
        pbi = pi[g + half : g + 2 * half]
        lar = lr[g : g + half]
        lai = li[g : g + half]
        lbr = lr[g + half : g + 2 * half]
        lbi = li[g + half : g + 2 * half]
        for m in range(half):
            total += lbr[m] * par[m] + lbi[m] * pai[m] - lar[m] * pbr[m] - lai[m] * pbi[m]
    return total


# -- forward ----------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def forward_low(
    pr: np.ndarray,
    pi: np.ndarray,
    bits: int,
    u: np.ndarray,
    v: np.ndarray,
    factor: float,
    last: bool,
    shifts: np.ndarray,
    masks: np.ndarray,
) -> None:
    """RY on qubits 0..bits-1 per block, times ``factor``; with ``last`` also the CZ sign."""
    size = 1 << bits
    for blk in prange(pr.shape[0] >> bits):
        off = blk << bits
        r = pr[off : off + size]
        i = pi[off : off + size]
        mix_contiguous(RY, u, v, r, i, 0, bits)
        scale_sign(r, i, off, 0, 1, size, factor, shifts, masks, last)


@njit(cache=True, parallel=True)
def forward_high(
    pr: np.ndarray,
    pi: np.ndarray,
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
    """RY on qubits lo..hi-1 on gathered tiles, times ``factor``; ``last`` adds the CZ sign."""
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    for task in prange((pr.shape[0] >> hi) * chunks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        br = np.empty(nrows * width)
        bi = np.empty(nrows * width)
        gather(pr, pi, br, bi, base, lo, nrows, width)
        mix_tile(RY, u, v, br, bi, hi - lo, width, lo)
        scale_sign(br, bi, base, lo, nrows, width, factor, shifts, masks, last)
        scatter(pr, pi, br, bi, base, lo, nrows, width)


# -- backward ---------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def backward_high(
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
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
    """Undo RY on qubits lo..hi-1 for psi and lambda; ``first`` (the layer's first pass) undoes
    the CZ sign before. Adds dE/dtheta_q for q in lo..hi-1 into grad[q]."""
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    ntasks = (pr.shape[0] >> hi) * chunks
    partial = np.zeros((ntasks, hi - lo))
    for task in prange(ntasks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        size = nrows * width
        bpr = np.empty(size)
        bpi = np.empty(size)
        blr = np.empty(size)
        bli = np.empty(size)
        gather(pr, pi, bpr, bpi, base, lo, nrows, width)
        gather(lr, li, blr, bli, base, lo, nrows, width)
        if first:
            scale_sign(bpr, bpi, base, lo, nrows, width, 1.0, shifts, masks, True)
            scale_sign(blr, bli, base, lo, nrows, width, 1.0, shifts, masks, True)
        for k in range(hi - lo):
            partial[task, k] = _grad_sweep(bpr, bpi, blr, bli, size, width << k)
        mix_tile(RY, u, v, bpr, bpi, hi - lo, width, lo)
        mix_tile(RY, u, v, blr, bli, hi - lo, width, lo)
        scale_sign(bpr, bpi, base, lo, nrows, width, factor, shifts, masks, False)
        scale_sign(blr, bli, base, lo, nrows, width, factor, shifts, masks, False)
        scatter(pr, pi, bpr, bpi, base, lo, nrows, width)
        scatter(lr, li, blr, bli, base, lo, nrows, width)
    for k in range(hi - lo):
        grad[lo + k] += partial[:, k].sum()


@njit(cache=True, parallel=True)
def backward_low(
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    bits: int,
    u: np.ndarray,
    v: np.ndarray,
    factor: float,
    first: bool,
    shifts: np.ndarray,
    masks: np.ndarray,
    grad: np.ndarray,
) -> None:
    """Undo RY on qubits 0..bits-1 for both vectors (after the CZ sign when ``first``), adding
    dE/dtheta_q for q < bits into grad[q]."""
    size = 1 << bits
    nblocks = pr.shape[0] >> bits
    partial = np.zeros((nblocks, bits))
    for blk in prange(nblocks):
        off = blk << bits
        a = pr[off : off + size]
        b = pi[off : off + size]
        c = lr[off : off + size]
        d = li[off : off + size]
        if first:
            scale_sign(a, b, off, 0, 1, size, 1.0, shifts, masks, True)
            scale_sign(c, d, off, 0, 1, size, 1.0, shifts, masks, True)
        for q in range(bits):
            partial[blk, q] = _grad_sweep(a, b, c, d, size, 1 << q)
        mix_contiguous(RY, u, v, a, b, 0, bits)
        mix_contiguous(RY, u, v, c, d, 0, bits)
        scale_sign(a, b, off, 0, 1, size, factor, shifts, masks, False)
        scale_sign(c, d, off, 0, 1, size, factor, shifts, masks, False)
    for q in range(bits):
        grad[q] += partial[:, q].sum()


# -- the Hamiltonian --------------------------------------------------------------------------


@njit(cache=True, fastmath={"contract", "nsz"})
def _flip_add(
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    size: int,
    half: int,
    cx: float,
    cy: float,
) -> None:
    """lambda += (cx X_q + cy Y_q) psi for the qubit whose pairs are ``half`` apart."""
    for g in range(0, size, 2 * half):
        par = pr[g : g + half]
        pai = pi[g : g + half]
        pbr = pr[g + half : g + 2 * half]
        pbi = pi[g + half : g + 2 * half]
        lar = lr[g : g + half]
        lai = li[g : g + half]
        lbr = lr[g + half : g + 2 * half]
        lbi = li[g + half : g + 2 * half]
        for m in range(half):
            lar[m] += cx * pbr[m] + cy * pbi[m]
            lai[m] += cx * pbi[m] - cy * pbr[m]
            lbr[m] += cx * par[m] - cy * pai[m]
            lbi[m] += cx * pai[m] + cy * par[m]


@njit(cache=True, parallel=True)
def hamiltonian_low(
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    bits: int,
    dlevel: np.ndarray,
    dvals: np.ndarray,
    indexed: bool,
    cx: np.ndarray,
    cy: np.ndarray,
) -> None:
    """lambda = D psi + sum_{q < bits} (cx_q X_q + cy_q Y_q) psi, block by block."""
    size = 1 << bits
    for blk in prange(pr.shape[0] >> bits):
        off = blk << bits
        a = pr[off : off + size]
        b = pi[off : off + size]
        c = lr[off : off + size]
        d = li[off : off + size]
        if indexed:
            lvl = dlevel[off : off + size]
            for k in range(size):
                dv = dvals[lvl[k]]
                c[k] = dv * a[k]
                d[k] = dv * b[k]
        else:
            dd = dvals[off : off + size]
            for k in range(size):
                c[k] = dd[k] * a[k]
                d[k] = dd[k] * b[k]
        for q in range(bits):
            if cx[q] != 0.0 or cy[q] != 0.0:
                _flip_add(a, b, c, d, size, 1 << q, cx[q], cy[q])


@njit(cache=True, parallel=True)
def hamiltonian_high(
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    lo: int,
    hi: int,
    cx: np.ndarray,
    cy: np.ndarray,
    width: int,
) -> None:
    """lambda += sum_{lo <= q < hi} (cx_q X_q + cy_q Y_q) psi, tile by tile."""
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    for task in prange((pr.shape[0] >> hi) * chunks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        size = nrows * width
        bpr = np.empty(size)
        bpi = np.empty(size)
        blr = np.empty(size)
        bli = np.empty(size)
        gather(pr, pi, bpr, bpi, base, lo, nrows, width)
        gather(lr, li, blr, bli, base, lo, nrows, width)
        for k in range(hi - lo):
            q = lo + k
            if cx[q] != 0.0 or cy[q] != 0.0:
                _flip_add(bpr, bpi, blr, bli, size, width << k, cx[q], cy[q])
        scatter(lr, li, blr, bli, base, lo, nrows, width)


@njit(cache=True, parallel=True)
def group_apply_add(
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    xmask: int,
    zmasks: np.ndarray,
    cre: np.ndarray,
    cim: np.ndarray,
) -> None:
    """lambda[k] += sum_t c_t (-1)^{popcount((k ^ x) & z_t)} psi[k ^ x] for terms sharing x
    (c_t already includes the i^{#Y} factor)."""
    for k in prange(pr.shape[0]):
        j = k ^ xmask
        sr = 0.0
        si = 0.0
        for t in range(zmasks.shape[0]):
            if parity(j & zmasks[t]):
                sr -= cre[t]
                si -= cim[t]
            else:
                sr += cre[t]
                si += cim[t]
        lr[k] += sr * pr[j] - si * pi[j]
        li[k] += sr * pi[j] + si * pr[j]


@njit(cache=True, parallel=True)
def real_inner(pr: np.ndarray, pi: np.ndarray, lr: np.ndarray, li: np.ndarray) -> float:
    """Re <psi|lambda>."""
    total = 0.0
    for k in prange(pr.shape[0]):
        total += pr[k] * lr[k] + pi[k] * li[k]
    return total


@njit(cache=True, parallel=True)
def diagonal_values(out: np.ndarray, zmasks: np.ndarray, coeffs: np.ndarray, offset: int) -> None:
    """out[k] = sum_t c_t (-1)^{popcount((offset + k) & z_t)}: the Z-only part of H."""
    for k in prange(out.shape[0]):
        total = 0.0
        x = offset + k
        for t in range(zmasks.shape[0]):
            if parity(x & zmasks[t]):
                total -= coeffs[t]
            else:
                total += coeffs[t]
        out[k] = total
