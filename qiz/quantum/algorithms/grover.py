"""Grover search: oracles from a marked set or a CNF formula, the optimal iteration count,
the success probability, and exponential search when the number of solutions is unknown.

The simulator keeps the full state vector. Starting from |+>^n with a phase oracle and the
diffusion 2|s><s| - I, every amplitude stays real, so the state is one float64 array (exact,
not an approximation: every operation here is a real matrix). One Grover iteration is one pass
through memory: each amplitude becomes 2m - o_x psi_x, and the next iteration's mean is summed
on the way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.memory import require_memory
from qiz.quantum.core.threads import sized_by_qubits
from qiz.quantum.problems.cnf import Cnf

SUM_BLOCK = 4096  # amplitudes per partial sum: a sequential sum this short loses a few ulps


def optimal_iterations(num_qubits: int, num_solutions: int) -> int:
    """The iteration count that maximises the success probability: round(pi/(4 theta) - 1/2)."""
    if not 0 < num_solutions <= 1 << num_qubits:
        raise QuantumError("the number of solutions must be between 1 and 2^n")
    theta = math.asin(math.sqrt(num_solutions / (1 << num_qubits)))
    return max(0, round(math.pi / (4 * theta) - 0.5))


def analytic_success(num_qubits: int, num_solutions: int, iterations: int) -> float:
    """sin^2((2k + 1) theta) with sin theta = sqrt(M / N)."""
    theta = math.asin(math.sqrt(num_solutions / (1 << num_qubits)))
    return math.sin((2 * iterations + 1) * theta) ** 2


@dataclass
class GroverSimulator:
    """Grover iterations on n qubits for a set of marked basis states (or a CNF's solutions)."""

    num_qubits: int
    marked: Sequence[int] | None = None
    cnf: Cnf | None = None

    def __post_init__(self) -> None:
        n = self.num_qubits
        if n < 1:
            raise QuantumError("Grover search needs at least one qubit")
        require_memory(n, 0.6)  # one float64 vector (half a complex128 state) plus the oracle
        if (self.marked is None) == (self.cnf is None):
            raise QuantumError("give either a marked set or a CNF formula")
        if self.cnf is not None:
            if self.cnf.num_vars != n:
                raise QuantumError(f"the formula has {self.cnf.num_vars} variables, not {n}")
            self._mask = self.cnf.solution_mask()
            count = int(np.count_nonzero(self._mask))
            # the first solutions only (for display and checks): never a 2^n index array
            self._solutions = np.flatnonzero(self._mask[: 1 << min(n, 20)])[:1024]
            self._count = count
        else:
            sol = sorted({int(m) for m in self.marked or ()})
            if not sol:
                raise QuantumError("the marked set is empty")
            if sol[0] < 0 or sol[-1] >= 1 << n:
                raise QuantumError(f"marked items must be in 0 .. 2^{n} - 1")
            self._solutions = np.array(sol, dtype=np.int64)
            self._count = len(sol)
            self._mask = None
        self.state = np.empty(0)

    @property
    def num_solutions(self) -> int:
        return self._count

    @property
    def solutions(self) -> list[int]:
        return [int(s) for s in self._solutions[:1024]]

    def is_solution(self, index: int) -> bool:
        if self.cnf is not None:
            return self.cnf.satisfied_by(index)
        return bool(np.isin(index, self._solutions))

    @sized_by_qubits
    def run(self, iterations: int) -> float:
        """Start from |+>^n, apply ``iterations`` Grover iterations; return P(solution).

        Each pass also sums the new amplitudes and their squares, block by block (exact to a
        few ulps, where one running total per thread over 2^n / threads terms lost ~1e-9 per
        iteration at n = 22), and the next pass folds 1 / norm into its arithmetic: rounding
        cannot accumulate into the norm, which stays within 1e-12 of 1 over a full optimal run.
        """
        if iterations < 0:
            raise QuantumError("iterations must be non-negative")
        n = self.num_qubits
        size = 1 << n
        if self.state.shape != (size,):  # allocated once: later runs reuse the pages
            self.state = np.empty(size)
        self.state.fill(1.0 / math.sqrt(size))
        blocks = max(1, size // SUM_BLOCK)
        sums = np.empty(blocks)
        squares = np.empty(blocks)
        sol = self._solutions
        if self._mask is None:
            total = _oracle_sum_sparse(self.state, sol)
        else:
            _oracle_sums_mask(self.state, self._mask, sums)
            total = float(np.sum(sums))
        norm_sq = 1.0
        for _ in range(iterations):
            scale = 1.0 / math.sqrt(norm_sq)
            two_m = 2.0 * total * scale / size
            if self._mask is None:
                total, norm_sq = _iterate_sparse(self.state, two_m, scale, sol, sums, squares)
            else:
                _iterate_mask(self.state, two_m, scale, self._mask, sums, squares)
                total, norm_sq = float(np.sum(sums)), float(np.sum(squares))
        return self.success_probability()

    def norm_error(self) -> float:
        """|1 - <psi|psi>| of the current state, summed block by block (a check, not a pass
        the iterations need)."""
        return abs(1.0 - _blocked_norm_sq(self.state))

    @sized_by_qubits
    def success_probability(self) -> float:
        if self._mask is None:
            amps = self.state[self._solutions]
            return float(np.dot(amps, amps))
        return float(_masked_norm(self.state, self._mask))

    @sized_by_qubits
    def sample(self, shots: int, seed: int | None) -> dict[int, int]:
        from qiz.quantum.core.sampling import sample_counts

        return sample_counts(self.state, shots, np.random.default_rng(seed))


@njit(cache=True, parallel=True)
def _blocked_norm_sq(psi: np.ndarray) -> float:
    size = psi.shape[0]
    blocks = max(1, size // SUM_BLOCK)
    width = size // blocks
    squares = np.empty(blocks)
    for b in prange(blocks):
        acc = 0.0
        for k in range(b * width, (b + 1) * width):
            acc += psi[k] * psi[k]
        squares[b] = acc
    return np.sum(squares)


@njit(cache=True, parallel=True)
def _pass_unmarked(
    psi: np.ndarray, two_m: float, scale: float, sums: np.ndarray, squares: np.ndarray
) -> None:
    """psi <- two_m - scale psi everywhere (the marked items are fixed afterwards), with each
    block's sum and sum of squares kept in four interleaved accumulators."""
    blocks = sums.shape[0]
    width = psi.shape[0] // blocks
    for b in prange(blocks):
        s0 = s1 = s2 = s3 = 0.0
        q0 = q1 = q2 = q3 = 0.0
        base = b * width
        if width >= 4:
            for k in range(base, base + width, 4):
                v0 = two_m - scale * psi[k]
                v1 = two_m - scale * psi[k + 1]
                v2 = two_m - scale * psi[k + 2]
                v3 = two_m - scale * psi[k + 3]
                psi[k] = v0
                psi[k + 1] = v1
                psi[k + 2] = v2
                psi[k + 3] = v3
                s0 += v0
                s1 += v1
                s2 += v2
                s3 += v3
                q0 += v0 * v0
                q1 += v1 * v1
                q2 += v2 * v2
                q3 += v3 * v3
        else:
            for k in range(base, base + width):
                v0 = two_m - scale * psi[k]
                psi[k] = v0
                s0 += v0
                q0 += v0 * v0
        sums[b] = (s0 + s1) + (s2 + s3)
        squares[b] = (q0 + q1) + (q2 + q3)


def _iterate_sparse(
    psi: np.ndarray,
    two_m: float,
    scale: float,
    marked: np.ndarray,
    sums: np.ndarray,
    squares: np.ndarray,
) -> tuple[float, float]:
    """psi <- two_m - scale O psi with O = -1 on the few marked items.

    Returns (sum of O psi', <psi'|psi'>). The marked items' old values are read first, the bulk
    pass treats them as unmarked, and their true values and sums are set after it.
    """
    old = psi[marked]
    _pass_unmarked(psi, two_m, scale, sums, squares)
    wrong = psi[marked]
    right = two_m + scale * old
    psi[marked] = right
    total = float(np.sum(sums)) - float(np.sum(wrong)) - float(np.sum(right))
    norm_sq = float(np.sum(squares)) - float(np.dot(wrong, wrong)) + float(np.dot(right, right))
    return total, norm_sq


def _oracle_sum_sparse(psi: np.ndarray, marked: np.ndarray) -> float:
    return float(np.sum(psi) - 2 * psi[marked].sum())


@njit(cache=True, parallel=True)
def _iterate_mask(
    psi: np.ndarray,
    two_m: float,
    scale: float,
    mask: np.ndarray,
    sums: np.ndarray,
    squares: np.ndarray,
) -> None:
    """psi <- two_m - scale O psi with O from the solution mask; per block: sum(O psi'), and
    <psi'|psi'>."""
    blocks = sums.shape[0]
    width = psi.shape[0] // blocks
    for b in prange(blocks):
        s0 = s1 = 0.0
        q0 = q1 = 0.0
        base = b * width
        for k in range(base, base + width):
            sign = -1.0 if mask[k] else 1.0
            v = two_m - sign * scale * psi[k]
            psi[k] = v
            if k & 1:
                s1 += sign * v
                q1 += v * v
            else:
                s0 += sign * v
                q0 += v * v
        sums[b] = s0 + s1
        squares[b] = q0 + q1


@njit(cache=True, parallel=True)
def _oracle_sums_mask(psi: np.ndarray, mask: np.ndarray, sums: np.ndarray) -> None:
    blocks = sums.shape[0]
    width = psi.shape[0] // blocks
    for b in prange(blocks):
        acc = 0.0
        for k in range(b * width, (b + 1) * width):
            acc += -psi[k] if mask[k] else psi[k]
        sums[b] = acc


@njit(cache=True, parallel=True)
def _masked_norm(psi: np.ndarray, mask: np.ndarray) -> float:
    size = psi.shape[0]
    blocks = max(1, size // SUM_BLOCK)
    width = size // blocks
    squares = np.empty(blocks)
    for b in prange(blocks):
        acc = 0.0
        for k in range(b * width, (b + 1) * width):
            if mask[k]:
                acc += psi[k] * psi[k]
        squares[b] = acc
    return np.sum(squares)


@dataclass
class SearchResult:
    found: int | None
    iterations: int
    rounds: int


def exponential_search(
    sim: GroverSimulator, seed: int | None = 0, max_rounds: int = 64
) -> SearchResult:
    """Boyer-Brassard-Hoyer-Tapp search for an unknown number of solutions (lambda = 6/5):
    each round runs a random number of iterations below m, measures once, checks classically."""
    rng = np.random.default_rng(seed)
    size = 1 << sim.num_qubits
    m = 1.0
    total = 0
    for rounds in range(1, max_rounds + 1):
        j = int(rng.integers(0, max(1, int(m))))
        sim.run(j)
        total += j
        outcome = next(iter(sim.sample(1, int(rng.integers(1 << 62)))))
        if sim.is_solution(outcome):
            return SearchResult(outcome, total, rounds)
        m = min(6 / 5 * m, math.sqrt(size))
    return SearchResult(None, total, max_rounds)
