"""Drawing measurement outcomes from a state vector, reproducibly from a seed, without a
full-size temporary: the state's probabilities are summed per block of 2^12 amplitudes, a block
is drawn for each shot, and only the drawn blocks' probabilities are ever materialised."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.threads import threads_for

BLOCK_BITS = 12
MAX_SHOTS = 10_000_000

State = np.ndarray | tuple[np.ndarray, np.ndarray]


@njit(cache=True, parallel=True)
def _block_sums_complex(state: np.ndarray, bits: int, out: np.ndarray) -> None:
    size = 1 << bits
    for b in prange(out.shape[0]):
        total = 0.0
        for k in range(b * size, (b + 1) * size):
            a = state[k]
            total += a.real * a.real + a.imag * a.imag
        out[b] = total


@njit(cache=True, parallel=True)
def _block_sums_split(re: np.ndarray, im: np.ndarray, bits: int, out: np.ndarray) -> None:
    size = 1 << bits
    for b in prange(out.shape[0]):
        total = 0.0
        for k in range(b * size, (b + 1) * size):
            r = np.float64(re[k])
            i = np.float64(im[k])
            total += r * r + i * i
        out[b] = total


@njit(cache=True, parallel=True)
def _block_sums_real(x: np.ndarray, bits: int, out: np.ndarray) -> None:
    size = 1 << bits
    for b in prange(out.shape[0]):
        total = 0.0
        for k in range(b * size, (b + 1) * size):
            total += x[k] * x[k]
        out[b] = total


def _length(state: State) -> int:
    return state[0].shape[0] if isinstance(state, tuple) else state.shape[0]


def _block_probs(state: State, lo: int, hi: int) -> np.ndarray:
    if isinstance(state, tuple):  # float64 sums for float32 (single-precision) states too
        re = state[0][lo:hi].astype(np.float64)
        im = state[1][lo:hi].astype(np.float64)
        return re * re + im * im
    part = state[lo:hi]
    if np.iscomplexobj(part):
        return part.real**2 + part.imag**2
    return part * part


def sample_counts(state: State, shots: int, rng: np.random.Generator) -> dict[int, int]:
    """``shots`` outcomes of measuring every qubit: basis index -> count.

    ``state`` is a complex128 vector, a real float64 vector, or a (re, im) pair of float64 or
    float32 arrays; probabilities are summed in float64 either way.
    """
    if not 0 <= shots <= MAX_SHOTS:
        raise QuantumError(f"shots must be between 0 and {MAX_SHOTS}")
    size = _length(state)
    bits = min(BLOCK_BITS, max(0, size.bit_length() - 1))
    sums = np.empty(size >> bits)
    with threads_for(size.bit_length() - 1):
        if isinstance(state, tuple):
            _block_sums_split(state[0], state[1], bits, sums)
        elif np.iscomplexobj(state):
            _block_sums_complex(state, bits, sums)
        else:
            _block_sums_real(state, bits, sums)
    total = float(sums.sum())
    if not math.isfinite(total) or total <= 0.0:
        raise QuantumError("the state has no finite, nonzero norm: nothing can be sampled")
    if shots == 0:
        return {}
    block_cdf = np.cumsum(sums)
    draws = np.sort(rng.random(shots)) * block_cdf[-1]
    blocks = np.minimum(np.searchsorted(block_cdf, draws, side="right"), sums.shape[0] - 1)
    counts: dict[int, int] = {}
    start = 0
    width = 1 << bits
    while start < shots:
        block = int(blocks[start])
        end = int(np.searchsorted(blocks, block, side="right"))
        before = float(block_cdf[block - 1]) if block else 0.0
        probs = _block_probs(state, block * width, (block + 1) * width)
        local_cdf = np.cumsum(probs)
        last = int(np.flatnonzero(probs)[-1]) if probs.any() else width - 1
        local = np.searchsorted(local_cdf, draws[start:end] - before, side="right")
        np.minimum(local, last, out=local)  # rounding at the block's top edge
        values, found = np.unique(local, return_counts=True)
        for v, c in zip(values, found, strict=True):
            key = block * width + int(v)
            counts[key] = counts.get(key, 0) + int(c)
        start = end
    return counts
