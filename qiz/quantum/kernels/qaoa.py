"""Fused, cache-blocked kernels of the QAOA fast path (split real/imaginary state arrays).

One QAOA layer is exp(-i beta sum_j X_j) exp(-i gamma C): a diagonal phase, then RX(2 beta) on
every qubit, all commuting. So a layer is two trips through memory (see ``blocked``): the low
pass multiplies each amplitude by its phase and rotates qubits 0..b-1 inside an L2-sized block;
the high pass rotates the remaining qubits on gathered tiles. The phase is a table lookup by
cost level (the cost's distinct values are few for integer-weighted problems), so the inner
loop has no transcendental function; the mixer's common factor is folded into that table.
When the costs are too many to tabulate (float weights), ``low_pass_sincos`` evaluates the phase
with a polynomial sine/cosine that vectorises (numba's np.cos/np.sin call libm once per value).

Every kernel takes the state in float64 or float32 arrays (the single-precision mode): numba
compiles one version per dtype; sums (the expectation) are always accumulated in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from qiz.quantum.kernels.blocked import (
    FASTMATH,
    RX,
    gather,
    mix_contiguous2,
    mix_tile2,
    scatter,
)


@njit(cache=True, parallel=True)
def low_pass_indexed(
    re: np.ndarray,
    im: np.ndarray,
    level: np.ndarray,
    tre: np.ndarray,
    tim: np.ndarray,
    block_bits: int,
    u: np.ndarray,
    v: np.ndarray,
    init: bool,
    init_amp: float,
) -> None:
    """Phase by table[level[k]] (or set the amplitude to init_amp * it), then the low mixer."""
    size = 1 << block_bits
    for blk in prange(re.shape[0] >> block_bits):
        off = blk << block_bits
        r = re[off : off + size]
        i = im[off : off + size]
        lvl = level[off : off + size]
        if init:
            for k in range(size):
                lv = lvl[k]
                r[k] = init_amp * tre[lv]
                i[k] = init_amp * tim[lv]
        else:
            for k in range(size):
                lv = lvl[k]
                pr = tre[lv]
                pi = tim[lv]
                ar = r[k]
                ai = i[k]
                r[k] = ar * pr - ai * pi
                i[k] = ar * pi + ai * pr
        mix_contiguous2(RX, u, v, r, i, 0, block_bits)


@njit(cache=True, parallel=True)
def low_pass_direct(
    re: np.ndarray,
    im: np.ndarray,
    cost: np.ndarray,
    gamma: float,
    scale: float,
    block_bits: int,
    u: np.ndarray,
    v: np.ndarray,
    init: bool,
    init_amp: float,
) -> None:
    """As low_pass_indexed, for costs with too many distinct values to tabulate."""
    size = 1 << block_bits
    for blk in prange(re.shape[0] >> block_bits):
        off = blk << block_bits
        r = re[off : off + size]
        i = im[off : off + size]
        c = cost[off : off + size]
        for k in range(size):
            angle = -gamma * c[k]
            pr = scale * np.cos(angle)
            pi = scale * np.sin(angle)
            if init:
                r[k] = init_amp * pr
                i[k] = init_amp * pi
            else:
                ar = r[k]
                ai = i[k]
                r[k] = ar * pr - ai * pi
                i[k] = ar * pi + ai * pr
        mix_contiguous2(RX, u, v, r, i, 0, block_bits)


@njit(cache=True, parallel=True)
def high_pass(
    re: np.ndarray, im: np.ndarray, lo: int, hi: int, u: np.ndarray, v: np.ndarray, width: int
) -> None:
    """The mixer on qubits lo..hi-1, tile by tile."""
    nrows = 1 << (hi - lo)
    chunks = (1 << lo) // width
    ntasks = (re.shape[0] >> hi) * chunks
    for task in prange(ntasks):
        base = ((task // chunks) << hi) + (task % chunks) * width
        bre = np.empty(nrows * width, dtype=re.dtype)
        bim = np.empty(nrows * width, dtype=re.dtype)
        gather(re, im, bre, bim, base, lo, nrows, width)
        mix_tile2(RX, u, v, bre, bim, hi - lo, width, lo)
        scatter(re, im, bre, bim, base, lo, nrows, width)


@njit(cache=True, parallel=True)
def expectation_indexed(
    re: np.ndarray, im: np.ndarray, level: np.ndarray, values: np.ndarray
) -> float:
    total = 0.0
    for k in prange(re.shape[0]):
        r = np.float64(re[k])
        i = np.float64(im[k])
        total += (r * r + i * i) * values[level[k]]
    return total


@njit(cache=True, parallel=True)
def expectation_direct(re: np.ndarray, im: np.ndarray, cost: np.ndarray) -> float:
    total = 0.0
    for k in prange(re.shape[0]):
        r = np.float64(re[k])
        i = np.float64(im[k])
        total += (r * r + i * i) * cost[k]
    return total


# -- a vectorisable sine and cosine ------------------------------------------------------------
# fdlibm's kernels (k_sin.c, k_cos.c: minimax polynomials on [-pi/4, pi/4], error below one ulp)
# after a Cody-Waite reduction by pi/2 in two parts (the first has 33 significant bits, so
# k * PIO2_HI is exact for |k| < 2^20). SINCOS_MAX_ANGLE keeps |k| below that; larger angles take
# low_pass_direct. Measured against np.cos/np.sin over [-SINCOS_MAX_ANGLE, SINCOS_MAX_ANGLE]:
# see tests/test_qaoa_precision.py.

SINCOS_MAX_ANGLE = float(1 << 19)
_TWO_OVER_PI = 6.36619772367581382433e-01
_PIO2_HI = 1.57079632673412561417e00
_PIO2_LO = 6.07710050650619224932e-11
_S1, _S2, _S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_S4, _S5, _S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
_C1, _C2, _C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_C4, _C5, _C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11


@njit(cache=True, inline="always", fastmath=FASTMATH)
def sincos(x: float) -> tuple[float, float]:
    """(cos x, sin x) for |x| <= SINCOS_MAX_ANGLE, branch-free."""
    k = np.floor(x * _TWO_OVER_PI + 0.5)
    r = (x - k * _PIO2_HI) - k * _PIO2_LO
    z = r * r
    s = r + r * z * (_S1 + z * (_S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))))
    c = 1.0 - 0.5 * z + z * z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + z * (_C5 + z * _C6)))))
    q = np.int64(k) & 3
    swap = q & 1
    cs = s if swap else c
    sn = c if swap else s
    return cs * (1 - 2 * (((q + 1) >> 1) & 1)), sn * (1 - 2 * ((q >> 1) & 1))


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def low_pass_sincos(
    re: np.ndarray,
    im: np.ndarray,
    cost: np.ndarray,
    gamma: float,
    scale: float,
    block_bits: int,
    u: np.ndarray,
    v: np.ndarray,
    init: bool,
    init_amp: float,
) -> None:
    """As low_pass_direct with the polynomial sincos (|gamma * cost| <= SINCOS_MAX_ANGLE)."""
    size = 1 << block_bits
    for blk in prange(re.shape[0] >> block_bits):
        off = blk << block_bits
        r = re[off : off + size]
        i = im[off : off + size]
        c = cost[off : off + size]
        if init:
            for k in range(size):
                pr, pi = sincos(-gamma * c[k])
                r[k] = init_amp * scale * pr
                i[k] = init_amp * scale * pi
        else:
            for k in range(size):
                pr, pi = sincos(-gamma * c[k])
                pr *= scale
                pi *= scale
                ar = np.float64(r[k])
                ai = np.float64(i[k])
                r[k] = ar * pr - ai * pi
                i[k] = ar * pi + ai * pr
        mix_contiguous2(RX, u, v, r, i, 0, block_bits)


@njit(cache=True, parallel=True)
def levels_from_integer_costs(cost: np.ndarray, lowest: float, out: np.ndarray) -> None:
    """out[k] = cost[k] - lowest for integer-valued costs (the level index)."""
    for k in prange(cost.shape[0]):
        out[k] = int(cost[k] - lowest)


@njit(cache=True, parallel=True)
def join(re: np.ndarray, im: np.ndarray, out: np.ndarray) -> None:
    """Interleave split arrays into a complex128 state."""
    for k in prange(re.shape[0]):
        out[k] = complex(re[k], im[k])
