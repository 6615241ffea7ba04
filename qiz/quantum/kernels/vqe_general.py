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

from qiz.quantum.kernels.blocked import RY, gather, mix_contiguous, scatter
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
def _tile_factors(
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
    cross: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """D on a tile (row r, column w: index base + (r << lo) + w) as column factors times row
    factors: the phase splits so, and so does the CZ sign, sign(A + B + C) = sign(A + B)
    sign(A + C) sign(A) for constant bits A, row bits B, column bits C, unless a CZ pair joins
    a row bit to a column bit (``cross``: the caller then takes the sign per amplitude)."""
    nrows = 1 << (hi - lo)
    split = use_sign and not cross
    s_a = cz_sign(base, shifts, masks) if split else 1.0
    cre = np.empty(width)
    cim = np.empty(width)
    for w in range(width):
        a, b = _outside_phase(phi, base + w, lo, hi)
        f = factor * (s_a * cz_sign(base + w, shifts, masks) if split else 1.0)
        cre[w] = a * f
        cim[w] = -b * f if conj else b * f
    xre = np.empty(nrows)
    xim = np.empty(nrows)
    for r in range(nrows):
        f = cz_sign(base + (r << lo), shifts, masks) if split else 1.0
        xre[r] = rre[r] * f
        xim[r] = -rim[r] * f if conj else rim[r] * f
    return cre, cim, xre, xim


@njit(cache=True, inline="always")
def _diag_tile(
    re: np.ndarray,
    im: np.ndarray,
    base: int,
    lo: int,
    hi: int,
    width: int,
    factor: float,
    phi: np.ndarray,
    rre: np.ndarray,
    rim: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
    cross: bool,
) -> None:
    """Multiply a tile by factor * D (the row phases (rre, rim) cover qubits lo..hi-1)."""
    cre, cim, xre, xim = _tile_factors(
        base, lo, hi, width, factor, False, phi, rre, rim, shifts, masks, use_sign, cross
    )
    per_amplitude = use_sign and cross
    for r in range(1 << (hi - lo)):
        row = r * width
        for w in range(width):
            k = row + w
            sr = xre[r] * cre[w] - xim[r] * cim[w]
            si = xre[r] * cim[w] + xim[r] * cre[w]
            if per_amplitude and cz_sign(base + (r << lo) + w, shifts, masks) < 0.0:
                sr = -sr
                si = -si
            a = re[k]
            b = im[k]
            re[k] = a * sr - b * si
            im[k] = a * si + b * sr


@njit(cache=True, inline="always")
def _undo_diag_tile(
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    scratch: np.ndarray,
    base: int,
    lo: int,
    hi: int,
    width: int,
    phi: np.ndarray,
    rre: np.ndarray,
    rim: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
    cross: bool,
) -> None:
    """Undo D on a tile of psi and of lambda, and leave Im(conj(lambda) psi) in scratch (which
    D does not change) for the RZ gradients."""
    cre, cim, xre, xim = _tile_factors(
        base, lo, hi, width, 1.0, True, phi, rre, rim, shifts, masks, use_sign, cross
    )
    per_amplitude = use_sign and cross
    for r in range(1 << (hi - lo)):
        row = r * width
        for w in range(width):
            k = row + w
            sr = xre[r] * cre[w] - xim[r] * cim[w]
            si = xre[r] * cim[w] + xim[r] * cre[w]
            if per_amplitude and cz_sign(base + (r << lo) + w, shifts, masks) < 0.0:
                sr = -sr
                si = -si
            a, b, c, d = pr[k], pi[k], lr[k], li[k]
            scratch[k] = c * b - d * a
            pr[k] = a * sr - b * si
            pi[k] = a * si + b * sr
            lr[k] = c * sr - d * si
            li[k] = c * si + d * sr


@njit(cache=True, inline="always")
def _rz_partial(
    scratch: np.ndarray,
    base: int,
    lo: int,
    hi: int,
    width: int,
    out: np.ndarray,
) -> None:
    """out[q] += sum over the tile's x with bit q set of scratch[x]; out[n] += the tile's sum.

    Row bits fold in halves (the upper half's sum is the row qubit's share, then it is added
    onto the lower half); the column bits come from the last row; constant bits from ``base``."""
    n = out.shape[0] - 1
    rows = 1 << (hi - lo)
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


@njit(cache=True, fastmath={"contract", "nsz", "reassoc"})
def _undo_pair(
    u: float,
    v: float,
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    off: int,
    size: int,
    half: int,
) -> float:
    """Re <lambda| -i Y_q |psi> for the qubit whose pairs are ``half`` apart, and that qubit's
    scaled RY undone on both vectors, in one trip: eight loads and stores per pair instead of
    the twelve of a gradient sweep and two rotations. One of u, v is exactly 1 (the scaled
    form), which leaves one fused multiply-add per output."""
    total = 0.0
    tan = u == 1.0
    c = v if tan else u
    if u != 1.0 and v != 1.0:  # a pass's last qubit carries the pass's scale in (u, v)
        for g in range(off, off + size, 2 * half):
            for m in range(g, g + half):
                a0, a1, b0, b1 = pr[m], pi[m], pr[m + half], pi[m + half]
                x0, x1, y0, y1 = lr[m], li[m], lr[m + half], li[m + half]
                total += y0 * a0 + y1 * a1 - x0 * b0 - x1 * b1
                pr[m] = u * a0 - v * b0
                pi[m] = u * a1 - v * b1
                pr[m + half] = u * b0 + v * a0
                pi[m + half] = u * b1 + v * a1
                lr[m] = u * x0 - v * y0
                li[m] = u * x1 - v * y1
                lr[m + half] = u * y0 + v * x0
                li[m + half] = u * y1 + v * x1
        return total
    for g in range(off, off + size, 2 * half):
        par = pr[g : g + half]
        pai = pi[g : g + half]
        pbr = pr[g + half : g + 2 * half]
        pbi = pi[g + half : g + 2 * half]
        lar = lr[g : g + half]
        lai = li[g : g + half]
        lbr = lr[g + half : g + 2 * half]
        lbi = li[g + half : g + 2 * half]
        if tan:  # (a, b) -> (a - v b, b + v a)
            for m in range(half):
                a0, a1, b0, b1 = par[m], pai[m], pbr[m], pbi[m]
                x0, x1, y0, y1 = lar[m], lai[m], lbr[m], lbi[m]
                total += y0 * a0 + y1 * a1 - x0 * b0 - x1 * b1
                par[m] = a0 - c * b0
                pai[m] = a1 - c * b1
                pbr[m] = b0 + c * a0
                pbi[m] = b1 + c * a1
                lar[m] = x0 - c * y0
                lai[m] = x1 - c * y1
                lbr[m] = y0 + c * x0
                lbi[m] = y1 + c * x1
        else:  # (a, b) -> (u a - b, u b + a)
            for m in range(half):
                a0, a1, b0, b1 = par[m], pai[m], pbr[m], pbi[m]
                x0, x1, y0, y1 = lar[m], lai[m], lbr[m], lbi[m]
                total += y0 * a0 + y1 * a1 - x0 * b0 - x1 * b1
                par[m] = c * a0 - b0
                pai[m] = c * a1 - b1
                pbr[m] = c * b0 + a0
                pbi[m] = c * b1 + a1
                lar[m] = c * x0 - y0
                lai[m] = c * x1 - y1
                lbr[m] = c * y0 + x0
                lbi[m] = c * y1 + x1
    return total


@njit(cache=True, fastmath={"contract", "nsz"})
def _rotate(u: float, v: float, re: np.ndarray, im: np.ndarray, size: int, half: int) -> None:
    """The scaled RY of one qubit on one vector, one multiply-add per output (see above)."""
    tan = u == 1.0
    c = v if tan else u
    if u != 1.0 and v != 1.0:  # a pass's last qubit carries the pass's scale in (u, v)
        for g in range(0, size, 2 * half):
            for m in range(g, g + half):
                a0, a1, b0, b1 = re[m], im[m], re[m + half], im[m + half]
                re[m] = u * a0 - v * b0
                im[m] = u * a1 - v * b1
                re[m + half] = u * b0 + v * a0
                im[m + half] = u * b1 + v * a1
        return
    for g in range(0, size, 2 * half):
        ar = re[g : g + half]
        ai = im[g : g + half]
        br = re[g + half : g + 2 * half]
        bi = im[g + half : g + 2 * half]
        if tan:
            for m in range(half):
                a0, a1, b0, b1 = ar[m], ai[m], br[m], bi[m]
                ar[m] = a0 - c * b0
                ai[m] = a1 - c * b1
                br[m] = b0 + c * a0
                bi[m] = b1 + c * a1
        else:
            for m in range(half):
                a0, a1, b0, b1 = ar[m], ai[m], br[m], bi[m]
                ar[m] = c * a0 - b0
                ai[m] = c * a1 - b1
                br[m] = c * b0 + a0
                bi[m] = c * b1 + a1


@njit(cache=True, inline="always", fastmath={"contract", "nsz"})
def _ry(re: np.ndarray, im: np.ndarray, i: int, j: int, u: float, v: float) -> None:
    a0, a1, b0, b1 = re[i], im[i], re[j], im[j]
    re[i] = u * a0 - v * b0
    im[i] = u * a1 - v * b1
    re[j] = u * b0 + v * a0
    im[j] = u * b1 + v * a1


@njit(cache=True, inline="always", fastmath={"contract", "nsz"})
def _gy(pr: np.ndarray, pi: np.ndarray, lr: np.ndarray, li: np.ndarray, i: int, j: int) -> float:
    return lr[j] * pr[i] + li[j] * pi[i] - lr[i] * pr[j] - li[i] * pi[j]


@njit(cache=True, fastmath={"contract", "nsz"})
def _low3(u: np.ndarray, v: np.ndarray, re: np.ndarray, im: np.ndarray, size: int) -> None:
    """RY on qubits 0, 1, 2 over a whole block, eight amplitudes at a time, plain indexing
    (a slice per pair of amplitudes costs more than the arithmetic)."""
    u0, v0, u1, v1, u2, v2 = u[0], v[0], u[1], v[1], u[2], v[2]
    for c in range(0, size, 8):
        for k in range(0, 8, 2):
            _ry(re, im, c + k, c + k + 1, u0, v0)
        for k in (0, 1, 4, 5):
            _ry(re, im, c + k, c + k + 2, u1, v1)
        for k in range(4):
            _ry(re, im, c + k, c + k + 4, u2, v2)


@njit(cache=True, fastmath={"contract", "nsz"})
def _undo_low3(
    u: np.ndarray,
    v: np.ndarray,
    f: np.ndarray,
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    size: int,
    out: np.ndarray,
) -> float:
    """Gradients of qubits 0, 1, 2 and their scaled RYs undone on both vectors, eight
    amplitudes at a time; returns the scale owed (see ``_undo_rows``)."""
    u0, v0, u1, v1, u2, v2 = u[0], v[0], u[1], v[1], u[2], v[2]
    g0 = 0.0
    g1 = 0.0
    g2 = 0.0
    for c in range(0, size, 8):
        for k in range(0, 8, 2):
            g0 += _gy(pr, pi, lr, li, c + k, c + k + 1)
            _ry(pr, pi, c + k, c + k + 1, u0, v0)
            _ry(lr, li, c + k, c + k + 1, u0, v0)
        for k in (0, 1, 4, 5):
            g1 += _gy(pr, pi, lr, li, c + k, c + k + 2)
            _ry(pr, pi, c + k, c + k + 2, u1, v1)
            _ry(lr, li, c + k, c + k + 2, u1, v1)
        for k in range(4):
            g2 += _gy(pr, pi, lr, li, c + k, c + k + 4)
            _ry(pr, pi, c + k, c + k + 4, u2, v2)
            _ry(lr, li, c + k, c + k + 4, u2, v2)
    out[0] += g0
    out[1] += g1 * f[0] * f[0]
    out[2] += g2 * (f[0] * f[1]) ** 2
    return f[0] * f[1] * f[2]


@njit(cache=True, inline="always")
def _undo_rows(
    u: np.ndarray,
    v: np.ndarray,
    f: np.ndarray,
    pr: np.ndarray,
    pi: np.ndarray,
    lr: np.ndarray,
    li: np.ndarray,
    off: int,
    size: int,
    width: int,
    first_qubit: int,
    nbits: int,
    out: np.ndarray,
    scale: float,
) -> float:
    """Undo qubits first_qubit + k (pairs ``width << k`` apart) for k < nbits, adding each
    one's gradient into out[k]; returns the scale still owed to both vectors (1 when the last
    rotation carried it). The scaled form leaves the vectors divided by the product ``scale``
    of the undone qubits' factors, so a gradient taken after them is multiplied back by its
    square."""
    rest = scale
    for k in range(nbits):
        rest *= f[first_qubit + k]
    for k in range(nbits):
        q = first_qubit + k
        s = rest if k == nbits - 1 else 1.0
        g = _undo_pair(u[q] * s, v[q] * s, pr, pi, lr, li, off, size, width << k)
        out[k] += g * (scale * scale)
        scale *= f[q]
    return 1.0 if nbits else scale


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
    low = min(3, bits)
    for blk in prange(pr.shape[0] >> bits):
        off = blk << bits
        r = pr[off : off + size]
        i = pi[off : off + size]
        if low == 3:
            _low3(u, v, r, i, size)
        else:
            mix_contiguous(RY, u, v, r, i, 0, low)
        for q in range(low, bits):
            _rotate(u[q], v[q], r, i, size, 1 << q)
        if last:
            _diag_tile(r, i, off, 0, bits, 1, factor, phi, tre, tim, shifts, masks, use_sign,
                       False)  # fmt: skip
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
    cross: bool,
    width: int,
) -> None:
    """RY on qubits lo..hi-1 on gathered tiles, times ``factor``; ``last`` adds D."""
    nrows = 1 << (hi - lo)
    size = nrows * width
    chunks = (1 << lo) // width
    for task in prange((pr.shape[0] >> hi) * chunks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        br = np.empty(size)
        bi = np.empty(size)
        gather(pr, pi, br, bi, base, lo, nrows, width)
        for k in range(hi - lo):
            _rotate(u[lo + k], v[lo + k], br, bi, size, width << k)
        if last:
            _diag_tile(br, bi, base, lo, hi, width, factor, phi, rre, rim, shifts, masks,
                       use_sign, cross)  # fmt: skip
        else:
            for k in range(size):
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
    f: np.ndarray,
    first: bool,
    phi: np.ndarray,
    rre: np.ndarray,
    rim: np.ndarray,
    shifts: np.ndarray,
    masks: np.ndarray,
    use_sign: bool,
    cross: bool,
    width: int,
    grad_ry: np.ndarray,
    grad_rz: np.ndarray,
) -> None:
    """Undo RY on qubits lo..hi-1 for psi and lambda (f: each qubit's factor of the scaled
    form); ``first`` (the layer's first pass) undoes D before and adds every RZ gradient into
    grad_rz. Adds dE/dtheta_q (lo <= q < hi) into grad_ry[q]."""
    n = phi.shape[0]
    nrows = 1 << (hi - lo)
    size = nrows * width
    chunks = (1 << lo) // width
    ntasks = (pr.shape[0] >> hi) * chunks
    partial = np.zeros((ntasks, hi - lo))
    rz = np.zeros((ntasks, n + 1))
    for task in prange(ntasks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        bpr = np.empty(size)
        bpi = np.empty(size)
        blr = np.empty(size)
        bli = np.empty(size)
        gather(pr, pi, bpr, bpi, base, lo, nrows, width)
        gather(lr, li, blr, bli, base, lo, nrows, width)
        if first:
            scratch = np.empty(size)
            _undo_diag_tile(bpr, bpi, blr, bli, scratch, base, lo, hi, width, phi, rre, rim,
                            shifts, masks, use_sign, cross)  # fmt: skip
            _rz_partial(scratch, base, lo, hi, width, rz[task])
        _undo_rows(u, v, f, bpr, bpi, blr, bli, 0, size, width, lo, hi - lo, partial[task], 1.0)
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
    f: np.ndarray,
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
    ``first``, i.e. when no high pass came before), adding dE/dtheta_q for q < bits. Qubits
    0..2 (pairs too close for long inner loops) take a gradient sweep and the 8-amplitude
    rotation; the rest one fused trip each."""
    n = phi.shape[0]
    size = 1 << bits
    low = min(3, bits)
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
            _undo_diag_tile(a, b, c, d, scratch, off, 0, bits, 1, phi, tre, tim, shifts, masks,
                            use_sign, False)  # fmt: skip
            _rz_partial(scratch, off, 0, bits, 1, rz[blk])
        if low == 3:
            scale = _undo_low3(u, v, f, a, b, c, d, size, partial[blk])
        else:
            scale = 1.0
            for q in range(low):
                partial[blk, q] = _grad_sweep(a, b, c, d, size, 1 << q)
                scale *= f[q]
            mix_contiguous(RY, u, v, a, b, 0, low)
            mix_contiguous(RY, u, v, c, d, 0, low)
        rest = partial[blk, low:]
        scale = _undo_rows(u, v, f, a, b, c, d, 0, size, 1 << low, low, bits - low, rest, scale)
        if scale != 1.0:
            for k in range(size):
                a[k] *= scale
                b[k] *= scale
                c[k] *= scale
                d[k] *= scale
    for q in range(bits):
        grad_ry[q] += partial[:, q].sum()
    if first:
        _finish_rz(rz, grad_rz)
