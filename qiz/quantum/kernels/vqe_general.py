"""Fused kernels of the general ansatz: layers of RY and RZ on every qubit, then CZ entanglers.

States are split (real, imaginary) float64 arrays, as in ``blocked``. The RZ layer and the CZ
entangler together are one diagonal D(x) = sign(x) * exp(-i/2 sum_q phi_q z_q(x)), so a layer
costs what an RY + CZ layer costs: the RYs go through the usual low and high passes and D is
applied on the way out of the last one. The phase of amplitude x factors into a row part (the
qubits of the pass) and a column part (the rest, constant along a tile's column), so a tile pays
two complex multiplies per amplitude and no trigonometry.

Backward (the adjoint method), the first pass of each layer undoes D and collects every RZ
gradient of the layer at once:

    dE/dphi_q = sum_x z_q(x) Im(conj(lambda_x) psi_x)

(D leaves conj(lambda) psi unchanged, so it is taken before undoing it), by folding the tile's
rows in halves: one add per amplitude for all the row qubits together. The RY gradients are
taken as in ``kernels.vqe``, after D is undone.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from qiz.quantum.kernels.blocked import RY, gather, mix_contiguous, mix_tile, scatter
from qiz.quantum.kernels.vqe import _grad_sweep, cz_sign


@njit(cache=True)
def phase_table(phi: np.ndarray, first: int, bits: int, tre: np.ndarray, tim: np.ndarray) -> None:
    """t[r] = exp(-i/2 sum_k phi[first + k] z(bit k of r)) for r < 2^bits."""
    for r in range(1 << bits):
        angle = 0.0
        for k in range(bits):
            angle += -phi[first + k] if (r >> k) & 1 == 0 else phi[first + k]
        tre[r] = np.cos(0.5 * angle)
        tim[r] = np.sin(0.5 * angle)


@njit(cache=True, inline="always")
def _outside_phase(phi: np.ndarray, x: int, lo: int, hi: int) -> tuple[float, float]:
    """The phase of index x from the qubits outside lo..hi-1."""
    angle = 0.0
    for q in range(phi.shape[0]):
        if lo <= q < hi:
            continue
        angle += -phi[q] if (x >> q) & 1 == 0 else phi[q]
    return np.cos(0.5 * angle), np.sin(0.5 * angle)


@njit(cache=True, inline="always")
def _diag_tile(
    re: np.ndarray,
    im: np.ndarray,
    base: int,
    lo: int,
    hi: int,
    width: int,
    factor: float,
    conj: bool,
    phi: np.ndarray,
    rre: np.ndarray,
    rim: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
) -> None:
    """Multiply a tile (row r, column w is index base + (r << lo) + w) by factor * sign * phase
    (or its conjugate); the row phases (rre, rim) cover qubits lo..hi-1."""
    nrows = 1 << (hi - lo)
    cre = np.empty(width)
    cim = np.empty(width)
    for w in range(width):
        a, b = _outside_phase(phi, base + w, lo, hi)
        cre[w] = a * factor
        cim[w] = -b * factor if conj else b * factor
    for r in range(nrows):
        xr = rre[r]
        xi = -rim[r] if conj else rim[r]
        row = r * width
        for w in range(width):
            k = row + w
            sr = xr * cre[w] - xi * cim[w]
            si = xr * cim[w] + xi * cre[w]
            if use_sign and cz_sign(base + (r << lo) + w, shifts, masks) < 0.0:
                sr = -sr
                si = -si
            a = re[k]
            b = im[k]
            re[k] = a * sr - b * si
            im[k] = a * si + b * sr


@njit(cache=True, inline="always")
def _rz_partial(
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    scratch: np.ndarray,
    base: int,
    lo: int,
    hi: int,
    width: int,
    out: np.ndarray,
) -> None:
    """out[q] += sum over the tile's x with bit q set of Im(conj(l) p); out[n] += the tile's sum.

    Row bits fold in halves (the upper half's sum is the row qubit's share, then it is added
    onto the lower half); the column bits come from the last row; constant bits from ``base``."""
    n = out.shape[0] - 1
    rows = 1 << (hi - lo)
    size = rows * width
    for k in range(size):
        scratch[k] = lr[k] * pi[k] - li[k] * pr[k]
    for k in range(hi - lo - 1, -1, -1):
        half = (rows >> 1) * width
        s = 0.0
        for m in range(half):
            s += scratch[half + m]
            scratch[m] += scratch[half + m]
        out[lo + k] += s
        rows >>= 1
    total = 0.0
    for w in range(width):
        total += scratch[w]
    out[n] += total
    colbits = 0
    while (1 << colbits) < width:
        colbits += 1
    for q in range(colbits):
        s = 0.0
        for w in range(width):
            if (w >> q) & 1:
                s += scratch[w]
        out[q] += s
    for q in range(colbits, n):
        if (q < lo or q >= hi) and (base >> q) & 1:
            out[q] += total


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
    phi: np.ndarray,
    tre: np.ndarray,
    tim: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
) -> None:
    """RY on qubits 0..bits-1 per block, times ``factor``; with ``last`` (no high pass follows)
    also D, whose phases over qubits 0..bits-1 are (tre, tim)."""
    size = 1 << bits
    for blk in prange(pr.shape[0] >> bits):
        off = blk << bits
        r = pr[off : off + size]
        i = pi[off : off + size]
        mix_contiguous(RY, u, v, r, i, 0, bits)
        if last:
            _diag_tile(r, i, off, 0, bits, 1, factor, False, phi, tre, tim, shifts, masks, use_sign)
        else:
            for k in range(size):
                r[k] *= factor
                i[k] *= factor


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
    phi: np.ndarray,
    rre: np.ndarray,
    rim: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
    width: int,
) -> None:
    """RY on qubits lo..hi-1 on gathered tiles, times ``factor``; ``last`` adds D."""
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    for task in prange((pr.shape[0] >> hi) * chunks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        br = np.empty(nrows * width)
        bi = np.empty(nrows * width)
        gather(pr, pi, br, bi, base, lo, nrows, width)
        mix_tile(RY, u, v, br, bi, hi - lo, width, lo)
        if last:
            _diag_tile(br, bi, base, lo, hi, width, factor, False, phi, rre, rim, shifts, masks,
                       use_sign)  # fmt: skip
        else:
            for k in range(nrows * width):
                br[k] *= factor
                bi[k] *= factor
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
    phi: np.ndarray,
    rre: np.ndarray,
    rim: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
    width: int,
    grad_ry: np.ndarray,
    grad_rz: np.ndarray,
) -> None:
    """Undo RY on qubits lo..hi-1 for psi and lambda; ``first`` (the layer's first pass) undoes
    D before and adds every RZ gradient into grad_rz. Adds dE/dtheta_q (lo <= q < hi) into
    grad_ry[q]."""
    n = phi.shape[0]
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    ntasks = (pr.shape[0] >> hi) * chunks
    partial = np.zeros((ntasks, hi - lo))
    rz = np.zeros((ntasks, n + 1))
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
            scratch = np.empty(size)
            _rz_partial(bpr, bpi, blr, bli, scratch, base, lo, hi, width, rz[task])
            _diag_tile(bpr, bpi, base, lo, hi, width, 1.0, True, phi, rre, rim, shifts, masks,
                       use_sign)  # fmt: skip
            _diag_tile(blr, bli, base, lo, hi, width, 1.0, True, phi, rre, rim, shifts, masks,
                       use_sign)  # fmt: skip
        for k in range(hi - lo):
            partial[task, k] = _grad_sweep(bpr, bpi, blr, bli, size, width << k)
        mix_tile(RY, u, v, bpr, bpi, hi - lo, width, lo)
        mix_tile(RY, u, v, blr, bli, hi - lo, width, lo)
        for k in range(size):
            bpr[k] *= factor
            bpi[k] *= factor
            blr[k] *= factor
            bli[k] *= factor
        scatter(pr, pi, bpr, bpi, base, lo, nrows, width)
        scatter(lr, li, blr, bli, base, lo, nrows, width)
    for k in range(hi - lo):
        grad_ry[lo + k] += partial[:, k].sum()
    if first:
        _finish_rz(rz, grad_rz)


@njit(cache=True)
def _finish_rz(rz: np.ndarray, grad_rz: np.ndarray) -> None:
    """dE/dphi_q = (sum over all) - 2 (sum where bit q is set)."""
    n = grad_rz.shape[0]
    total = rz[:, n].sum()
    for q in range(n):
        grad_rz[q] += total - 2.0 * rz[:, q].sum()


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
    phi: np.ndarray,
    tre: np.ndarray,
    tim: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
    grad_ry: np.ndarray,
    grad_rz: np.ndarray,
) -> None:
    """Undo RY on qubits 0..bits-1 for both vectors (after D and the RZ gradients when
    ``first``, i.e. when no high pass came before), adding dE/dtheta_q for q < bits."""
    n = phi.shape[0]
    size = 1 << bits
    nblocks = pr.shape[0] >> bits
    partial = np.zeros((nblocks, bits))
    rz = np.zeros((nblocks, n + 1))
    for blk in prange(nblocks):
        off = blk << bits
        a = pr[off : off + size]
        b = pi[off : off + size]
        c = lr[off : off + size]
        d = li[off : off + size]
        if first:
            scratch = np.empty(size)
            _rz_partial(a, b, c, d, scratch, off, 0, bits, 1, rz[blk])
            _diag_tile(a, b, off, 0, bits, 1, 1.0, True, phi, tre, tim, shifts, masks, use_sign)
            _diag_tile(c, d, off, 0, bits, 1, 1.0, True, phi, tre, tim, shifts, masks, use_sign)
        for q in range(bits):
            partial[blk, q] = _grad_sweep(a, b, c, d, size, 1 << q)
        mix_contiguous(RY, u, v, a, b, 0, bits)
        mix_contiguous(RY, u, v, c, d, 0, bits)
        for k in range(size):
            a[k] *= factor
            b[k] *= factor
            c[k] *= factor
            d[k] *= factor
    for q in range(bits):
        grad_ry[q] += partial[:, q].sum()
    if first:
        _finish_rz(rz, grad_rz)
