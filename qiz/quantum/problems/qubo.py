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
from typing import Literal

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
        lin, qi, qj, qw = self.arrays()
        out = np.empty(1 << self.num_vars, dtype=np.float64)
        with threads_for(self.num_vars):
            _fill_diagonal(out, self.offset, lin, qi, qj, qw)
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


def bits_of(index: int, num_vars: int) -> list[int]:
    """The 0/1 assignment of basis-state ``index`` (bit i = variable i)."""
    return [(index >> i) & 1 for i in range(num_vars)]


def bitstring(index: int, num_vars: int) -> str:
    """Qiskit-style text: variable 0 is the rightmost character."""
    return format(index, f"0{num_vars}b")
