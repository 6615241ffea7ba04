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
        """Start from |+>^n, apply ``iterations`` Grover iterations; return P(solution)."""
        if iterations < 0:
            raise QuantumError("iterations must be non-negative")
        n = self.num_qubits
        size = 1 << n
        if self.state.shape != (size,):  # allocated once: later runs reuse the pages
            self.state = np.empty(size)
        self.state.fill(1.0 / math.sqrt(size))
        sol = self._solutions
        total = (
            _oracle_sum_sparse(self.state, sol)
            if self._mask is None
            else float(_oracle_sum_mask(self.state, self._mask))
        )
        for _ in range(iterations):
            mean = total / size
            if self._mask is None:
                total = _iterate_sparse(self.state, mean, sol)
            else:
                total = _iterate_mask(self.state, mean, self._mask)
        return self.success_probability()

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
def _iterate_sparse(psi: np.ndarray, mean: float, marked: np.ndarray) -> float:
    """psi <- 2 mean - O psi with O = -1 on the few marked items; returns sum(O psi')."""
    two_m = 2.0 * mean
    total = 0.0
    for k in prange(psi.shape[0]):
        v = two_m - psi[k]
        psi[k] = v
        total += v
    for j in range(marked.shape[0]):
        k = marked[j]
        old = two_m - psi[k]  # undo: psi[k] held 2m - old
        v = two_m + old
        total += -v - psi[k]
        psi[k] = v
    return total


def _oracle_sum_sparse(psi: np.ndarray, marked: np.ndarray) -> float:
    return float(psi.sum() - 2 * psi[marked].sum())


@njit(cache=True, parallel=True)
def _iterate_mask(psi: np.ndarray, mean: float, mask: np.ndarray) -> float:
    two_m = 2.0 * mean
    total = 0.0
    for k in prange(psi.shape[0]):
        sign = -1.0 if mask[k] else 1.0
        v = two_m - sign * psi[k]
        psi[k] = v
        total += sign * v
    return total


@njit(cache=True, parallel=True)
def _oracle_sum_mask(psi: np.ndarray, mask: np.ndarray) -> float:
    total = 0.0
    for k in prange(psi.shape[0]):
        sign = -1.0 if mask[k] else 1.0
        total += sign * psi[k]
    return total


@njit(cache=True, parallel=True)
def _masked_norm(psi: np.ndarray, mask: np.ndarray) -> float:
    total = 0.0
    for k in prange(psi.shape[0]):
        if mask[k]:
            total += psi[k] * psi[k]
    return total


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
