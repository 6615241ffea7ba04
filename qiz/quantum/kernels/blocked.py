"""Cache-blocked butterfly kernels on split (real, imaginary) state arrays.

The fast paths keep a state as two float64 arrays instead of one complex128 array: the same
bytes, but every loop below is then a plain stream of fused multiply-adds that LLVM vectorises
(on complex128 the interleaved layout defeats it: measured 0.4 vs 1.5 G butterflies/s per core).

A *layer* of single-qubit rotations, one per qubit, all commuting, is applied in two kinds of
pass, each one trip through memory:

* ``mix_contiguous``: the qubits 0..b-1 inside a contiguous block of 2^b amplitudes;
* ``mix_tile``: the qubits of a higher group on a tile gathered from 2^h rows of W amplitudes.

Rotations come in a scaled form (four multiply-adds per pair); the caller folds the common
factor into a later multiply:

* ``RX``: (a, b) -> (u a - i v b, u b - i v a), i.e. RX(2 beta) = cos(beta) * that with
  u = 1, v = tan(beta) (or sin(beta) * that with u = cot(beta), v = 1);
* ``RY``: (a, b) -> (u a - v b, u b + v a), the same for RY(theta) = exp(-i theta Y / 2).
"""

from __future__ import annotations

import numpy as np
from numba import njit

RX = 0
RY = 1
FASTMATH = {"contract", "nsz"}  # fused multiply-add allowed; no reassociation of sums


@njit(cache=True, inline="always", fastmath=FASTMATH)
def _pair(kind: int, u: float, v: float, re: np.ndarray, im: np.ndarray, i: int, j: int) -> None:
    ar = re[i]
    ai = im[i]
    br = re[j]
    bi = im[j]
    if kind == RX:
        re[i] = u * ar + v * bi
        im[i] = u * ai - v * br
        re[j] = u * br + v * ai
        im[j] = u * bi - v * ar
    else:
        re[i] = u * ar - v * br
        im[i] = u * ai - v * bi
        re[j] = u * br + v * ar
        im[j] = u * bi + v * ai


@njit(cache=True, fastmath=FASTMATH)
def _sweep(
    kind: int, u: float, v: float, re: np.ndarray, im: np.ndarray, off: int, size: int, half: int
) -> None:
    """One qubit whose pairs are ``half`` apart, over re[off:off+size]; long inner runs."""
    for g in range(off, off + size, 2 * half):
        ra = re[g : g + half]
        ia = im[g : g + half]
        rb = re[g + half : g + 2 * half]
        ib = im[g + half : g + 2 * half]
        if kind == RX:
            for m in range(half):
                ar = ra[m]
                ai = ia[m]
                br = rb[m]
                bi = ib[m]
                ra[m] = u * ar + v * bi
                ia[m] = u * ai - v * br
                rb[m] = u * br + v * ai
                ib[m] = u * bi - v * ar
        else:
            for m in range(half):
                ar = ra[m]
                ai = ia[m]
                br = rb[m]
                bi = ib[m]
                ra[m] = u * ar - v * br
                ia[m] = u * ai - v * bi
                rb[m] = u * br + v * ar
                ib[m] = u * bi + v * ai


@njit(cache=True, fastmath=FASTMATH)
def _low3(
    kind: int, u: np.ndarray, v: np.ndarray, re: np.ndarray, im: np.ndarray, off: int, size: int
) -> None:
    """Qubits 0, 1, 2 on chunks of eight amplitudes, where inner loops would be too short."""
    u0, v0, u1, v1, u2, v2 = u[0], v[0], u[1], v[1], u[2], v[2]
    for c in range(off, off + size, 8):
        r = re[c : c + 8]
        i = im[c : c + 8]
        for k in range(4):
            _pair(kind, u0, v0, r, i, 2 * k, 2 * k + 1)
        for k in (0, 1, 4, 5):
            _pair(kind, u1, v1, r, i, k, k + 2)
        for k in range(4):
            _pair(kind, u2, v2, r, i, k, k + 4)


@njit(cache=True, fastmath=FASTMATH)
def mix_contiguous(
    kind: int, u: np.ndarray, v: np.ndarray, re: np.ndarray, im: np.ndarray, off: int, nbits: int
) -> None:
    """Rotate qubits 0..nbits-1 of the block re[off : off + 2^nbits] (u[q], v[q] per qubit)."""
    size = 1 << nbits
    first = 0
    if nbits >= 3:
        _low3(kind, u, v, re, im, off, size)
        first = 3
    for q in range(first, nbits):
        _sweep(kind, u[q], v[q], re, im, off, size, 1 << q)


@njit(cache=True, fastmath=FASTMATH)
def mix_tile(
    kind: int,
    u: np.ndarray,
    v: np.ndarray,
    re: np.ndarray,
    im: np.ndarray,
    row_bits: int,
    width: int,
    first_qubit: int,
) -> None:
    """Rotate the row bits of a gathered tile (2^row_bits rows of ``width`` amplitudes);
    row bit k is qubit first_qubit + k."""
    size = width << row_bits
    for k in range(row_bits):
        q = first_qubit + k
        _sweep(kind, u[q], v[q], re, im, 0, size, width << k)


@njit(cache=True, inline="always")
def gather(
    re: np.ndarray,
    im: np.ndarray,
    bre: np.ndarray,
    bim: np.ndarray,
    base: int,
    lo: int,
    nrows: int,
    width: int,
) -> None:
    for r in range(nrows):
        src = base + (r << lo)
        sr = re[src : src + width]
        si = im[src : src + width]
        dr = bre[r * width : (r + 1) * width]
        di = bim[r * width : (r + 1) * width]
        for w in range(width):
            dr[w] = sr[w]
            di[w] = si[w]


@njit(cache=True, inline="always")
def scatter(
    re: np.ndarray,
    im: np.ndarray,
    bre: np.ndarray,
    bim: np.ndarray,
    base: int,
    lo: int,
    nrows: int,
    width: int,
) -> None:
    for r in range(nrows):
        dst = base + (r << lo)
        dr = re[dst : dst + width]
        di = im[dst : dst + width]
        sr = bre[r * width : (r + 1) * width]
        si = bim[r * width : (r + 1) * width]
        for w in range(width):
            dr[w] = sr[w]
            di[w] = si[w]


@njit(cache=True)
def parity(x: int) -> int:
    """Parity of the set bits of a non-negative 64-bit integer."""
    x ^= x >> 32
    x ^= x >> 16
    x ^= x >> 8
    x ^= x >> 4
    x ^= x >> 2
    x ^= x >> 1
    return x & 1


TILE_WIDTH = 8  # amplitudes per row of a high-pass tile: 64 bytes of each array


def high_groups(num_qubits: int, block_bits: int, group_bits: int) -> list[tuple[int, int, int]]:
    """The high passes after a low pass over qubits 0..block_bits-1: (lo, hi, tile width) for
    each group of at most ``group_bits`` qubits (none when the low pass covers them all)."""
    groups = []
    lo = min(block_bits, num_qubits)
    while lo < num_qubits:
        hi = min(num_qubits, lo + group_bits)
        groups.append((lo, hi, min(TILE_WIDTH, 1 << lo)))
        lo = hi
    return groups


STAGGER_BYTES = (2 << 20) + 4096 + 64  # between the parts of a staggered split state


def split_state(
    num_qubits: int, vectors: int = 1, dtype: type = np.float64, stagger: bool = False
) -> tuple[np.ndarray, ...]:
    """``vectors`` split states as (re, im, re, im, ...) views into ONE allocation.

    One buffer, not one array per part: measured on this kind of VM, separately allocated
    128 MiB arrays sometimes ran the same kernel five times slower (0.50 s against 0.09 s for a
    24-qubit low pass) depending on where they landed, while one contiguous buffer was fast in
    every layout tried.

    With ``stagger``, each part starts STAGGER_BYTES (not a multiple of the page or of a cache
    set's span) after the previous one ends: parts exactly 2^k bytes apart share cache sets, and
    from 512 MiB per state on (n = 25 in float64, 26 in float32) this VM ran a QAOA low pass
    thirteen times slower that way (3.7 s against 0.28 s at n = 25; 0.39 s with 4 KiB + 64 B).
    """
    size = 1 << num_qubits
    gap = STAGGER_BYTES // np.dtype(dtype).itemsize if stagger else 0
    buf = np.empty(2 * vectors * size + (2 * vectors - 1) * gap, dtype=dtype)
    step = size + gap
    return tuple(buf[k * step : k * step + size] for k in range(2 * vectors))


def rotation_coefficients(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, factors) per qubit for RX(angle) or RY(angle) in the scaled form.

    Uses the tangent form where |tan(angle/2)| <= 1, else the cotangent form, so neither u nor v
    ever exceeds 1; ``factors[q]`` is the cosine or sine taken out of qubit q's rotation.
    """
    half = np.asarray(angles, dtype=np.float64) / 2
    c, s = np.cos(half), np.sin(half)
    tan_form = np.abs(s) <= np.abs(c)
    u = np.where(tan_form, 1.0, np.divide(c, s, where=~tan_form, out=np.ones_like(c)))
    v = np.where(tan_form, np.divide(s, c, where=tan_form, out=np.zeros_like(c)), 1.0)
    factors = np.where(tan_form, c, s)
    return np.ascontiguousarray(u), np.ascontiguousarray(v), factors


# -- real states: one float64 array -----------------------------------------------------------
# When every gate and the observable are real (RY, CZ, a Hamiltonian with an even number of Y
# in every term), the state stays real: the same sweeps on one array do half the work, and two
# real vectors can travel as the (re, im) pair of the complex kernels above (RY acts on both
# parts alike), which is how the adjoint pass undoes psi and lambda in one sweep.


@njit(cache=True, fastmath=FASTMATH)
def _sweep_real(u: float, v: float, x: np.ndarray, off: int, size: int, half: int) -> None:
    """RY-form (a, b) -> (u a - v b, u b + v a) on one real array, pairs ``half`` apart."""
    for g in range(off, off + size, 2 * half):
        xa = x[g : g + half]
        xb = x[g + half : g + 2 * half]
        for m in range(half):
            a = xa[m]
            b = xb[m]
            xa[m] = u * a - v * b
            xb[m] = u * b + v * a


@njit(cache=True, fastmath=FASTMATH)
def _low3_real(u: np.ndarray, v: np.ndarray, x: np.ndarray, off: int, size: int) -> None:
    u0, v0, u1, v1, u2, v2 = u[0], v[0], u[1], v[1], u[2], v[2]
    for c in range(off, off + size, 8):
        r = x[c : c + 8]
        for k in range(4):
            a, b = r[2 * k], r[2 * k + 1]
            r[2 * k], r[2 * k + 1] = u0 * a - v0 * b, u0 * b + v0 * a
        for k in (0, 1, 4, 5):
            a, b = r[k], r[k + 2]
            r[k], r[k + 2] = u1 * a - v1 * b, u1 * b + v1 * a
        for k in range(4):
            a, b = r[k], r[k + 4]
            r[k], r[k + 4] = u2 * a - v2 * b, u2 * b + v2 * a


@njit(cache=True, fastmath=FASTMATH)
def mix_contiguous_real(u: np.ndarray, v: np.ndarray, x: np.ndarray, off: int, nbits: int) -> None:
    """RY on qubits 0..nbits-1 of the real block x[off : off + 2^nbits]."""
    size = 1 << nbits
    first = 0
    if nbits >= 3:
        _low3_real(u, v, x, off, size)
        first = 3
    for q in range(first, nbits):
        _sweep_real(u[q], v[q], x, off, size, 1 << q)


@njit(cache=True, fastmath=FASTMATH)
def mix_tile_real(
    u: np.ndarray, v: np.ndarray, x: np.ndarray, row_bits: int, width: int, first_qubit: int
) -> None:
    size = width << row_bits
    for k in range(row_bits):
        q = first_qubit + k
        _sweep_real(u[q], v[q], x, 0, size, width << k)


@njit(cache=True, inline="always")
def gather_real(x: np.ndarray, bx: np.ndarray, base: int, lo: int, nrows: int, width: int) -> None:
    for r in range(nrows):
        src = base + (r << lo)
        s = x[src : src + width]
        d = bx[r * width : (r + 1) * width]
        for w in range(width):
            d[w] = s[w]


@njit(cache=True, inline="always")
def scatter_real(x: np.ndarray, bx: np.ndarray, base: int, lo: int, nrows: int, width: int) -> None:
    for r in range(nrows):
        dst = base + (r << lo)
        d = x[dst : dst + width]
        s = bx[r * width : (r + 1) * width]
        for w in range(width):
            d[w] = s[w]


# -- two qubits per sweep ---------------------------------------------------------------------
# The sweeps above load and store every amplitude once per qubit: four loads, four stores and
# four multiply-add pairs per butterfly, so they run at the speed of L1/L2 traffic, not of the
# arithmetic. Rotating two qubits per trip (four amplitudes in registers, four butterflies)
# halves that traffic. The same arithmetic in the same order per butterfly, so the results are
# bit for bit those of two single-qubit sweeps.


@njit(cache=True, fastmath=FASTMATH)
def _sweep2(
    kind: int,
    u0: float,
    v0: float,
    u1: float,
    v1: float,
    re: np.ndarray,
    im: np.ndarray,
    off: int,
    size: int,
    half: int,
) -> None:
    """Qubits q (pairs ``half`` apart) then q + 1 (pairs 2 * half apart) over re[off:off+size]."""
    for g in range(off, off + size, 4 * half):
        r0 = re[g : g + half]
        i0 = im[g : g + half]
        r1 = re[g + half : g + 2 * half]
        i1 = im[g + half : g + 2 * half]
        r2 = re[g + 2 * half : g + 3 * half]
        i2 = im[g + 2 * half : g + 3 * half]
        r3 = re[g + 3 * half : g + 4 * half]
        i3 = im[g + 3 * half : g + 4 * half]
        if kind == RX:
            for m in range(half):
                a0r, a0i, a1r, a1i = r0[m], i0[m], r1[m], i1[m]
                a2r, a2i, a3r, a3i = r2[m], i2[m], r3[m], i3[m]
                b0r = u0 * a0r + v0 * a1i
                b0i = u0 * a0i - v0 * a1r
                b1r = u0 * a1r + v0 * a0i
                b1i = u0 * a1i - v0 * a0r
                b2r = u0 * a2r + v0 * a3i
                b2i = u0 * a2i - v0 * a3r
                b3r = u0 * a3r + v0 * a2i
                b3i = u0 * a3i - v0 * a2r
                r0[m] = u1 * b0r + v1 * b2i
                i0[m] = u1 * b0i - v1 * b2r
                r2[m] = u1 * b2r + v1 * b0i
                i2[m] = u1 * b2i - v1 * b0r
                r1[m] = u1 * b1r + v1 * b3i
                i1[m] = u1 * b1i - v1 * b3r
                r3[m] = u1 * b3r + v1 * b1i
                i3[m] = u1 * b3i - v1 * b1r
        else:
            for m in range(half):
                a0r, a0i, a1r, a1i = r0[m], i0[m], r1[m], i1[m]
                a2r, a2i, a3r, a3i = r2[m], i2[m], r3[m], i3[m]
                b0r = u0 * a0r - v0 * a1r
                b0i = u0 * a0i - v0 * a1i
                b1r = u0 * a1r + v0 * a0r
                b1i = u0 * a1i + v0 * a0i
                b2r = u0 * a2r - v0 * a3r
                b2i = u0 * a2i - v0 * a3i
                b3r = u0 * a3r + v0 * a2r
                b3i = u0 * a3i + v0 * a2i
                r0[m] = u1 * b0r - v1 * b2r
                i0[m] = u1 * b0i - v1 * b2i
                r2[m] = u1 * b2r + v1 * b0r
                i2[m] = u1 * b2i + v1 * b0i
                r1[m] = u1 * b1r - v1 * b3r
                i1[m] = u1 * b1i - v1 * b3i
                r3[m] = u1 * b3r + v1 * b1r
                i3[m] = u1 * b3i + v1 * b1i


@njit(cache=True, fastmath=FASTMATH)
def mix_contiguous2(
    kind: int, u: np.ndarray, v: np.ndarray, re: np.ndarray, im: np.ndarray, off: int, nbits: int
) -> None:
    """As ``mix_contiguous``, two qubits per sweep above the first three."""
    size = 1 << nbits
    q = 0
    if nbits >= 3:
        _low3(kind, u, v, re, im, off, size)
        q = 3
    while q + 1 < nbits:
        _sweep2(kind, u[q], v[q], u[q + 1], v[q + 1], re, im, off, size, 1 << q)
        q += 2
    if q < nbits:
        _sweep(kind, u[q], v[q], re, im, off, size, 1 << q)


@njit(cache=True, fastmath=FASTMATH)
def mix_tile2(
    kind: int,
    u: np.ndarray,
    v: np.ndarray,
    re: np.ndarray,
    im: np.ndarray,
    row_bits: int,
    width: int,
    first_qubit: int,
) -> None:
    """As ``mix_tile``, two row bits per sweep."""
    size = width << row_bits
    k = 0
    while k + 1 < row_bits:
        q = first_qubit + k
        _sweep2(kind, u[q], v[q], u[q + 1], v[q + 1], re, im, 0, size, width << k)
        k += 2
    if k < row_bits:
        q = first_qubit + k
        _sweep(kind, u[q], v[q], re, im, 0, size, width << k)
