"""Binary quadratic problems: QUBO / Ising models, their cost diagonals and exact optima.

One model serves QAOA, VQE (as a Pauli sum), simulated annealing and brute force:

    f(x) = offset + sum_i linear[i] x_i + sum_{i<j} Q_ij x_i x_j,   x in {0,1}^n

Bit ``i`` of a basis-state index is ``x_i`` (qubit ``i``), and ``sense`` says whether ``f`` is
minimised (QUBO's convention) or maximised (MaxCut's). ``Z_i`` acts as ``1 - 2 x_i``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from numba import njit, prange

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.memory import require_memory
from qiz.quantum.core.threads import threads_for

Sense = Literal["min", "max"]
BRUTE_FORCE_LIMIT = 26  # 2^26 float64 costs = 512 MiB


@dataclass
class QuboProblem:
    """A quadratic binary objective over ``num_vars`` bits, to minimise or maximise."""

    num_vars: int
    linear: dict[int, float] = field(default_factory=dict)
    quadratic: dict[tuple[int, int], float] = field(default_factory=dict)
    offset: float = 0.0
    sense: Sense = "min"
    name: str = "qubo"

    def __post_init__(self) -> None:
        if self.num_vars < 1:
            raise QuantumError("a problem needs at least one variable")
        if self.sense not in ("min", "max"):
            raise QuantumError(f"sense must be 'min' or 'max', not {self.sense!r}")
        lin: dict[int, float] = {}
        for i, w in self.linear.items():
            self._check_var(i)
            lin[int(i)] = lin.get(int(i), 0.0) + float(w)
        quad: dict[tuple[int, int], float] = {}
        off = float(self.offset)
        for (i, j), w in self.quadratic.items():
            self._check_var(i)
            self._check_var(j)
            if i == j:  # x_i^2 = x_i
                lin[int(i)] = lin.get(int(i), 0.0) + float(w)
                continue
            key = (min(int(i), int(j)), max(int(i), int(j)))
            quad[key] = quad.get(key, 0.0) + float(w)
        for w in (*lin.values(), *quad.values(), off):
            if not math.isfinite(w):
                raise QuantumError("problem coefficients must be finite numbers")
        self.linear = {i: w for i, w in lin.items() if w != 0.0}
        self.quadratic = {k: w for k, w in quad.items() if w != 0.0}
        self.offset = off

    def _check_var(self, i: int) -> None:
        if not 0 <= int(i) < self.num_vars:
            raise QuantumError(f"variable {i} out of range (problem has {self.num_vars})")

    # -- constructors ---------------------------------------------------------------------

    @staticmethod
    def maxcut(
        num_nodes: int,
        edges: Iterable[Sequence[int]],
        weights: Sequence[float] | None = None,
    ) -> QuboProblem:
        """The cut value sum_{(u,v)} w_uv [x_u != x_v], to maximise."""
        edge_list = [(int(e[0]), int(e[1])) for e in edges]
        ws = [1.0] * len(edge_list) if weights is None else [float(w) for w in weights]
        if len(ws) != len(edge_list):
            raise QuantumError("one weight per edge is needed")
        linear: dict[int, float] = {}
        quad: dict[tuple[int, int], float] = {}
        for (u, v), w in zip(edge_list, ws, strict=True):
            if u == v:
                raise QuantumError(f"self-loop on node {u}")
            # x_u + x_v - 2 x_u x_v is 1 exactly when the edge is cut
            linear[u] = linear.get(u, 0.0) + w
            linear[v] = linear.get(v, 0.0) + w
            key = (min(u, v), max(u, v))
            quad[key] = quad.get(key, 0.0) - 2 * w
        return QuboProblem(num_nodes, linear, quad, 0.0, "max", "maxcut")

    @staticmethod
    def from_ising(
        num_vars: int,
        h: dict[int, float],
        j: dict[tuple[int, int], float],
        offset: float = 0.0,
        sense: Sense = "min",
    ) -> QuboProblem:
        """sum h_i z_i + sum J_ij z_i z_j + offset with z_i = 1 - 2 x_i."""
        linear: dict[int, float] = {}
        quad: dict[tuple[int, int], float] = {}
        off = float(offset)
        for i, w in h.items():
            off += w
            linear[i] = linear.get(i, 0.0) - 2 * w
        for (a, b), w in j.items():
            off += w
            linear[a] = linear.get(a, 0.0) - 2 * w
            linear[b] = linear.get(b, 0.0) - 2 * w
            quad[(a, b)] = quad.get((a, b), 0.0) + 4 * w
        return QuboProblem(num_vars, linear, quad, off, sense, "ising")

    # -- views ----------------------------------------------------------------------------

    def to_ising(self) -> tuple[dict[int, float], dict[tuple[int, int], float], float]:
        """(h, J, offset) with f = offset + sum h_i z_i + sum J_ij z_i z_j, z_i = 1 - 2 x_i."""
        h: dict[int, float] = {}
        jj: dict[tuple[int, int], float] = {}
        off = self.offset
        for i, w in self.linear.items():  # x = (1 - z)/2
            off += w / 2
            h[i] = h.get(i, 0.0) - w / 2
        for (a, b), w in self.quadratic.items():  # x_a x_b = (1 - z_a - z_b + z_a z_b)/4
            off += w / 4
            h[a] = h.get(a, 0.0) - w / 4
            h[b] = h.get(b, 0.0) - w / 4
            jj[(a, b)] = jj.get((a, b), 0.0) + w / 4
        return h, jj, off

    def evaluate(self, bits: Sequence[int] | int) -> float:
        """f(x) for one assignment, given as a 0/1 sequence or as a basis-state index."""
        if isinstance(bits, int | np.integer):
            index = int(bits)
            x = [(index >> i) & 1 for i in range(self.num_vars)]
        else:
            x = [int(b) for b in bits]
            if len(x) != self.num_vars:
                raise QuantumError(f"expected {self.num_vars} bits, got {len(x)}")
        total = self.offset
        total += sum(w for i, w in self.linear.items() if x[i])
        total += sum(w for (a, b), w in self.quadratic.items() if x[a] and x[b])
        return total

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(linear[n], quad_i, quad_j, quad_w) as numpy arrays for the kernels."""
        lin = np.zeros(self.num_vars)
        for i, w in self.linear.items():
            lin[i] = w
        keys = sorted(self.quadratic)
        qi = np.array([k[0] for k in keys], dtype=np.int64)
        qj = np.array([k[1] for k in keys], dtype=np.int64)
        qw = np.array([self.quadratic[k] for k in keys], dtype=np.float64)
        return lin, qi, qj, qw

    def diagonal(self) -> np.ndarray:
        """f(x) for every x in 0 .. 2^n - 1 (float64), computed in parallel."""
        require_memory(self.num_vars, 0.5)
        out = np.empty(1 << self.num_vars, dtype=np.float64)
        with threads_for(self.num_vars):
            _fill_split(self._split(), out)
        return out

    def _split(self) -> SplitCost:
        return split_cost(self.num_vars, self.offset, self.linear, self.quadratic)

    def value_range(self) -> tuple[float, float]:
        """(min f, max f) over all 2^n assignments, without a full-size array."""
        split = self._split()
        lows = np.empty(len(split.high))
        highs = np.empty(len(split.high))
        with threads_for(self.num_vars):
            _range_split(split, lows, highs)
        return float(lows.min()), float(highs.max())

    def values_at(self, indices: np.ndarray) -> np.ndarray:
        """f(x) for the basis-state indices given (int64), without the full diagonal."""
        lin, qi, qj, qw = self.arrays()
        out = np.empty(indices.shape[0])
        _values_at(indices, self.offset, lin, qi, qj, qw, out)
        return out

    def integer_levels(self, lowest: float, dtype: type) -> np.ndarray:
        """f(x) - lowest for every x as an unsigned integer array of ``dtype`` (for an integer
        problem whose values span fewer than the dtype holds): the narrow index a phase table
        is read through, made without the 8-byte diagonal (at 31 qubits that would be 16 GiB).
        """
        out = np.empty(1 << self.num_vars, dtype=dtype)
        with threads_for(self.num_vars):
            _levels_split(self._split(), lowest, out)
        return out

    def integer_scale(self) -> bool:
        """True when every coefficient is an integer, so f takes integer values only."""
        values = [self.offset, *self.linear.values(), *self.quadratic.values()]
        return all(float(v).is_integer() for v in values)

    def better(self, a: float, b: float) -> bool:
        """Whether objective value ``a`` is strictly better than ``b`` for this problem's sense."""
        return a > b if self.sense == "max" else a < b

    def brute_force(self) -> tuple[float, list[int], float]:
        """(best value, best assignments as indices (up to 64), worst value), by enumeration."""
        if self.num_vars > BRUTE_FORCE_LIMIT:
            raise QuantumError(
                f"exact enumeration is limited to {BRUTE_FORCE_LIMIT} variables "
                f"(this problem has {self.num_vars})"
            )
        diag = self.diagonal()
        lo, hi = float(diag.min()), float(diag.max())
        best = hi if self.sense == "max" else lo
        worst = lo if self.sense == "max" else hi
        tol = 1e-9 * max(1.0, abs(best))
        optima = np.flatnonzero(np.abs(diag - best) <= tol)[:64]
        return best, [int(i) for i in optima], worst


@njit(cache=True, parallel=True)
def _fill_diagonal(
    out: np.ndarray,
    offset: float,
    lin: np.ndarray,
    qi: np.ndarray,
    qj: np.ndarray,
    qw: np.ndarray,
) -> None:
    n = lin.shape[0]
    m = qw.shape[0]
    for x in prange(out.shape[0]):
        total = offset
        for i in range(n):
            if (x >> i) & 1:
                total += lin[i]
        for k in range(m):
            if (x >> qi[k]) & 1 and (x >> qj[k]) & 1:
                total += qw[k]
        out[x] = total


@njit(cache=True)
def _values_at(
    indices: np.ndarray,
    offset: float,
    lin: np.ndarray,
    qi: np.ndarray,
    qj: np.ndarray,
    qw: np.ndarray,
    out: np.ndarray,
) -> None:
    for k in range(indices.shape[0]):
        x = indices[k]
        total = offset
        for i in range(lin.shape[0]):
            if (x >> i) & 1:
                total += lin[i]
        for t in range(qw.shape[0]):
            if (x >> qi[t]) & 1 and (x >> qj[t]) & 1:
                total += qw[t]
        out[k] = total


# -- the diagonal by blocks -------------------------------------------------------------------
# f(h 2^b + l) = high[h] + low[l] + sum over cross terms (i < b <= j) of Q_ij x_i x_j, and for a
# fixed high part h the cross sum is linear in the low bits: sum_i x_i L_h[i]. So a block of
# 2^b values costs two small tables per block and three additions per value, instead of n + m
# tests per value (measured at n = 24: 1.4 s before for the QAOA set-up).

SPLIT_BITS = 12


class SplitCost(NamedTuple):
    """f split at bit ``bits``: ``low`` (2^bits, the terms on low bits), ``high`` (the terms on
    high bits plus the offset, one per block), and the cross terms (low var, high var, weight).
    """

    bits: int
    low: np.ndarray
    high: np.ndarray
    cross_i: np.ndarray
    cross_j: np.ndarray
    cross_w: np.ndarray


def split_cost(
    num_vars: int, offset: float, linear: dict[int, float], quadratic: dict[tuple[int, int], float]
) -> SplitCost:
    b = min(SPLIT_BITS, num_vars)
    lo_lin, hi_lin = np.zeros(b), np.zeros(max(num_vars - b, 0))
    for i, w in linear.items():
        if i < b:
            lo_lin[i] += w
        else:
            hi_lin[i - b] += w
    lo_q, hi_q, cross = [], [], []
    for (i, j), w in sorted(quadratic.items()):
        if j < b:
            lo_q.append((i, j, w))
        elif i >= b:
            hi_q.append((i - b, j - b, w))
        else:
            cross.append((i, j - b, w))
    low = _small_diagonal(b, 0.0, lo_lin, *_quad_arrays(lo_q))
    high = _small_diagonal(num_vars - b, offset, hi_lin, *_quad_arrays(hi_q))
    ci, cj, cw = _quad_arrays(cross)
    return SplitCost(b, low, high, ci, cj, cw)


def _quad_arrays(terms: list[tuple[int, int, float]]) -> tuple[np.ndarray, ...]:
    return (
        np.array([t[0] for t in terms], dtype=np.int64),
        np.array([t[1] for t in terms], dtype=np.int64),
        np.array([t[2] for t in terms], dtype=np.float64),
    )


def _small_diagonal(
    n: int, offset: float, lin: np.ndarray, qi: np.ndarray, qj: np.ndarray, qw: np.ndarray
) -> np.ndarray:
    out = np.empty(1 << n)
    _fill_diagonal(out, offset, lin, qi, qj, qw)
    return out


@njit(cache=True)
def _block_values(split: SplitCost, h: int, out: np.ndarray) -> None:
    """out[l] = f(h 2^bits + l) for every l."""
    b = split.bits
    weights = np.zeros(b)
    for k in range(split.cross_w.shape[0]):
        if (h >> split.cross_j[k]) & 1:
            weights[split.cross_i[k]] += split.cross_w[k]
    lb = min(b, 8)
    t1 = np.zeros(1 << lb)
    t2 = np.zeros(1 << (b - lb))
    for x in range(1 << lb):
        for i in range(lb):
            if (x >> i) & 1:
                t1[x] += weights[i]
    for x in range(1 << (b - lb)):
        for i in range(b - lb):
            if (x >> i) & 1:
                t2[x] += weights[lb + i]
    base = split.high[h]
    mask = (1 << lb) - 1
    for x in range(1 << b):
        out[x] = base + split.low[x] + (t1[x & mask] + t2[x >> lb])


@njit(cache=True, parallel=True)
def _fill_split(split: SplitCost, out: np.ndarray) -> None:
    size = 1 << split.bits
    for h in prange(split.high.shape[0]):
        _block_values(split, h, out[h * size : (h + 1) * size])


@njit(cache=True, parallel=True)
def _range_split(split: SplitCost, lows: np.ndarray, highs: np.ndarray) -> None:
    for h in prange(split.high.shape[0]):
        buf = np.empty(1 << split.bits)
        _block_values(split, h, buf)
        lows[h] = buf.min()
        highs[h] = buf.max()


@njit(cache=True, parallel=True)
def _levels_split(split: SplitCost, lowest: float, out: np.ndarray) -> None:
    size = 1 << split.bits
    for h in prange(split.high.shape[0]):
        buf = np.empty(size)
        _block_values(split, h, buf)
        dst = out[h * size : (h + 1) * size]
        for x in range(size):
            dst[x] = int(buf[x] - lowest)


def bits_of(index: int, num_vars: int) -> list[int]:
    """The 0/1 assignment of basis-state ``index`` (bit i = variable i)."""
    return [(index >> i) & 1 for i in range(num_vars)]


def bitstring(index: int, num_vars: int) -> str:
    """Qiskit-style text: variable 0 is the rightmost character."""
    return format(index, f"0{num_vars}b")
