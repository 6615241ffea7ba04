"""Fused, cache-blocked kernels of the QAOA fast path (split real/imaginary state arrays).

One QAOA layer is exp(-i beta sum_j X_j) exp(-i gamma C): a diagonal phase, then RX(2 beta) on
every qubit, all commuting. So a layer is two trips through memory (see ``blocked``): the low
pass multiplies each amplitude by its phase and rotates qubits 0..b-1 inside an L2-sized block;
the high pass rotates the remaining qubits on gathered tiles. The phase is a table lookup by
cost level (the cost's distinct values are few for integer-weighted problems), so the inner
loop has no transcendental function; the mixer's common factor is folded into that table.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from qiz.quantum.kernels.blocked import RX, gather, mix_contiguous, mix_tile, scatter


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
        mix_contiguous(RX, u, v, r, i, 0, block_bits)


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
        mix_contiguous(RX, u, v, r, i, 0, block_bits)


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
        bre = np.empty(nrows * width)
        bim = np.empty(nrows * width)
        gather(re, im, bre, bim, base, lo, nrows, width)
        mix_tile(RX, u, v, bre, bim, hi - lo, width, lo)
        scatter(re, im, bre, bim, base, lo, nrows, width)


@njit(cache=True, parallel=True)
def expectation_indexed(
    re: np.ndarray, im: np.ndarray, level: np.ndarray, values: np.ndarray
) -> float:
    total = 0.0
    for k in prange(re.shape[0]):
        total += (re[k] * re[k] + im[k] * im[k]) * values[level[k]]
    return total


@njit(cache=True, parallel=True)
def expectation_direct(re: np.ndarray, im: np.ndarray, cost: np.ndarray) -> float:
    total = 0.0
    for k in prange(re.shape[0]):
        total += (re[k] * re[k] + im[k] * im[k]) * cost[k]
    return total


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
