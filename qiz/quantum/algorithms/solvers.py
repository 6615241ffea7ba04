"""One way to solve any ``QuboProblem``: exactly, by simulated annealing, by QAOA or by VQE.

``solve(problem, method)`` returns a ``Solution`` whose ``index``/``bits`` can go straight to an
encoding's ``decode`` (``qiz.quantum.problems.netopt``), so callers swap solvers without
touching their own code. ``value`` is always the problem's *own* objective of the returned
assignment, re-evaluated here, whatever scaling or sign flip a method used internally.

- "exact": enumeration (``QuboProblem.brute_force``), up to ``EXACT_LIMIT`` variables.
- "annealing": single-bit-flip Metropolis with incremental energy deltas over a sparse
  neighbour list, a random visiting order per sweep, geometric temperature schedule, and
  independent seeded restarts run in parallel, followed by a greedy quench.
  Hundreds to thousands of variables; no optimality guarantee.
- "qaoa": ``qaoa.optimize`` on the problem scaled to unit cost spread, then the best sampled
  bitstring. State-vector simulation: at most ``QUANTUM_LIMIT`` variables.
- "vqe": the hardware-efficient ansatz minimising the problem's Ising Hamiltonian, then the best
  bitstring sampled from the final state. At most ``QUANTUM_LIMIT`` variables.
- "auto": exact up to ``AUTO_EXACT_LIMIT`` variables, annealing beyond.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit, prange

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.problems.qubo import QuboProblem, bits_of

EXACT_LIMIT = 24  # 2^24 float64 costs = 128 MiB
QUANTUM_LIMIT = 20  # 2^20 amplitudes: a few seconds per optimisation, not minutes
AUTO_EXACT_LIMIT = 20
METHODS = ("auto", "exact", "annealing", "qaoa", "vqe")


@dataclass
class Solution:
    """The best assignment a method found.

    ``index`` is the basis-state index (bit i = variable i) and ``bits`` the same assignment as a
    list; ``value`` the problem's objective there. ``optimum_known`` is True only when ``value``
    is certified optimal by enumeration (always for "exact"; for "qaoa"/"vqe" when the exact
    reference, cheap at their sizes, equals it; never for "annealing"). ``evaluations`` counts
    what the method spends: assignments enumerated, flips proposed, or energy evaluations.
    """

    method: str
    index: int
    bits: list[int]
    value: float
    optimum_known: bool
    seconds: float
    evaluations: int
    details: dict[str, Any] = field(default_factory=dict)


def solve(
    problem: QuboProblem, method: str = "auto", *, seed: int | None = 0, **options: Any
) -> Solution:
    """Solve ``problem`` with ``method``; ``options`` are the method's own (unknown ones raise).

    exact: none. annealing: ``sweeps`` (1000), ``restarts`` (16), ``t_start``/``t_end``
    (default: from the coefficients, so the largest possible uphill flip is accepted with
    probability 1/2 at the start and the smallest with 1/100 at the end). qaoa: ``p`` (2),
    ``optimizer`` ("COBYLA"), ``maxiter`` (200), ``start`` ("ramp"). vqe: ``depth`` (3),
    ``entangler`` ("ladder"), ``optimizer`` ("L-BFGS-B"), ``maxiter`` (500), ``shots`` (1024).
    """
    if not isinstance(problem, QuboProblem):
        raise QuantumError(f"expected a QuboProblem, got {type(problem).__name__}")
    if method not in METHODS:
        raise QuantumError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if method == "auto":
        method = "exact" if problem.num_vars <= AUTO_EXACT_LIMIT else "annealing"
    start = time.perf_counter()
    if method == "exact":
        _options(method, options, {})
        sol = _exact(problem)
    elif method == "annealing":
        sol = _annealing(problem, seed, **_options(method, options, ANNEAL_DEFAULTS))
    elif method == "qaoa":
        sol = _qaoa(problem, seed, **_options(method, options, QAOA_DEFAULTS))
    else:
        sol = _vqe(problem, seed, **_options(method, options, VQE_DEFAULTS))
    sol.seconds = time.perf_counter() - start
    return sol


def _options(method: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise QuantumError(f"unknown option(s) for {method}: {', '.join(unknown)} (known: {known})")
    return {**defaults, **given}


def _limit(problem: QuboProblem, method: str, limit: int) -> None:
    if problem.num_vars > limit:
        hint = "; use method='annealing'" if method != "annealing" else ""
        raise QuantumError(
            f"{method} handles at most {limit} variables; this problem has {problem.num_vars}{hint}"
        )


def _solution(
    problem: QuboProblem,
    method: str,
    index: int,
    *,
    evaluations: int,
    details: dict[str, Any],
    optimum: float | None = None,
) -> Solution:
    value = problem.evaluate(index)
    known = optimum is not None and abs(value - optimum) <= 1e-9 * max(1.0, abs(optimum))
    if optimum is not None:
        details["optimum"] = optimum
    return Solution(
        method, index, bits_of(index, problem.num_vars), value, known, 0.0, evaluations, details
    )


def _index_of(bits: np.ndarray) -> int:
    return sum(1 << i for i, b in enumerate(bits.tolist()) if b)


def _ising_scale(problem: QuboProblem) -> float:
    """The standard deviation of f over uniformly random assignments: sqrt(sum h^2 + sum J^2)
    (the Ising terms are orthogonal under the uniform measure). Dividing by it gives QAOA's
    angles and VQE's tolerances the same meaning on every instance."""
    h, j, _ = problem.to_ising()
    scale = math.sqrt(sum(v * v for v in h.values()) + sum(v * v for v in j.values()))
    return scale if scale > 0 else 1.0


# -- exact -------------------------------------------------------------------------------------


def _exact(problem: QuboProblem) -> Solution:
    _limit(problem, "exact", EXACT_LIMIT)
    best, optima, worst = problem.brute_force()
    details = {"optima": optima, "worst": worst}
    return _solution(
        problem,
        "exact",
        optima[0],
        evaluations=1 << problem.num_vars,
        details=details,
        optimum=best,
    )


# -- simulated annealing ----------------------------------------------------------------------

ANNEAL_DEFAULTS: dict[str, Any] = {
    "sweeps": 1000,
    "restarts": 16,
    "t_start": None,
    "t_end": None,
}


def _neighbours(problem: QuboProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(linear, indptr, neighbour, weight): Q as a symmetric CSR adjacency, so a flip costs
    O(degree) whether the problem is dense (assignment rows) or sparse (path arcs)."""
    lin, qi, qj, qw = problem.arrays()
    rows = np.concatenate([qi, qj])
    cols = np.concatenate([qj, qi])
    wts = np.concatenate([qw, qw])
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=problem.num_vars)
    indptr = np.zeros(problem.num_vars + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return lin, indptr, cols[order].astype(np.int64), wts[order].astype(np.float64)


def _temperatures(
    lin: np.ndarray,
    indptr: np.ndarray,
    wts: np.ndarray,
    *,
    sweeps: int,
    t_start: float | None,
    t_end: float | None,
) -> np.ndarray:
    """A geometric schedule; the automatic ends follow dwave-neal's rule of thumb."""
    rows = np.repeat(np.arange(lin.shape[0]), np.diff(indptr))
    reach = np.abs(lin) + np.bincount(rows, weights=np.abs(wts), minlength=lin.shape[0])
    coeffs = np.concatenate([np.abs(lin), np.abs(wts)])
    nonzero = coeffs[coeffs > 0]
    hot = float(reach.max()) / math.log(2) if reach.max() > 0 else 1.0
    cold = float(nonzero.min()) / math.log(100) if nonzero.size else 1.0
    t0 = hot if t_start is None else float(t_start)
    t1 = min(cold, t0) if t_end is None else float(t_end)
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 > 0 and t1 > 0):
        raise QuantumError("annealing temperatures must be positive numbers")
    if sweeps == 1:
        return np.array([t1])
    return t0 * (t1 / t0) ** (np.arange(sweeps) / (sweeps - 1))


@njit(cache=True)
def _next_u64(state: np.ndarray) -> np.uint64:
    """splitmix64: a counter-based generator per restart, so results do not depend on which
    thread ran which restart."""
    z = state[0] + np.uint64(0x9E3779B97F4A7C15)
    state[0] = z
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _uniform(state: np.ndarray) -> float:
    return float(_next_u64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _flip(  # noqa: PLR0917 - numba kernels take positional arguments only
    i: int,
    x: np.ndarray,
    local: np.ndarray,
    indptr: np.ndarray,
    nbr: np.ndarray,
    wts: np.ndarray,
) -> float:
    """Flip bit i, update the neighbours' local fields, return the energy change."""
    if x[i] == 0:
        delta = local[i]
        x[i] = 1
        sign = 1.0
    else:
        delta = -local[i]
        x[i] = 0
        sign = -1.0
    for k in range(indptr[i], indptr[i + 1]):
        local[nbr[k]] += sign * wts[k]
    return delta


@njit(cache=True, parallel=True)
def _anneal(  # noqa: PLR0917 - numba kernels take positional arguments only
    lin: np.ndarray,
    indptr: np.ndarray,
    nbr: np.ndarray,
    wts: np.ndarray,
    temps: np.ndarray,
    seeds: np.ndarray,
    best_x: np.ndarray,
    best_e: np.ndarray,
) -> None:
    """One independent Metropolis run per restart (minimising); results into best_x, best_e.

    local[i] = lin[i] + sum_j Q_ij x_j is the energy change of setting x_i from 0 to 1, so a
    proposal costs O(1) and an accepted flip O(degree). Energies are relative to all-zero.
    """
    n = lin.shape[0]
    for r in prange(seeds.shape[0]):
        state = np.empty(1, dtype=np.uint64)
        state[0] = seeds[r]
        x = np.zeros(n, dtype=np.uint8)
        local = lin.copy()
        energy = 0.0
        for i in range(n):
            if _next_u64(state) >> np.uint64(63):
                energy += _flip(i, x, local, indptr, nbr, wts)
        best = energy
        best_x[r, :] = x
        order = np.arange(n)
        for t in temps:
            # a fresh random visiting order each sweep: with a fixed order, zero-cost moves
            # (always accepted) march every domain wall the same way and walls never meet
            for k in range(n - 1, 0, -1):
                m = np.int64(_next_u64(state) % np.uint64(k + 1))
                order[k], order[m] = order[m], order[k]
            for k in range(n):
                i = order[k]
                delta = local[i] if x[i] == 0 else -local[i]
                if delta <= 0.0 or _uniform(state) < math.exp(-delta / t):
                    energy += _flip(i, x, local, indptr, nbr, wts)
            if energy < best:
                best = energy
                best_x[r, :] = x
        improved = True  # quench: greedy descent to a local minimum
        while improved:
            improved = False
            for i in range(n):
                delta = local[i] if x[i] == 0 else -local[i]
                if delta < 0.0:
                    energy += _flip(i, x, local, indptr, nbr, wts)
                    improved = True
        if energy < best:
            best = energy
            best_x[r, :] = x
        best_e[r] = best


def _annealing(
    problem: QuboProblem,
    seed: int | None,
    *,
    sweeps: int,
    restarts: int,
    t_start: float | None,
    t_end: float | None,
) -> Solution:
    if int(sweeps) != sweeps or sweeps < 1 or int(restarts) != restarts or restarts < 1:
        raise QuantumError("sweeps and restarts must be positive integers")
    sweeps, restarts = int(sweeps), int(restarts)
    sign = -1.0 if problem.sense == "max" else 1.0  # the kernel minimises
    flipped = QuboProblem(
        problem.num_vars,
        {i: sign * w for i, w in problem.linear.items()},
        {k: sign * w for k, w in problem.quadratic.items()},
        0.0,
    )
    lin, indptr, nbr, wts = _neighbours(flipped)
    temps = _temperatures(lin, indptr, wts, sweeps=sweeps, t_start=t_start, t_end=t_end)
    seeds = np.random.SeedSequence(seed).generate_state(restarts, dtype=np.uint64)
    best_x = np.zeros((restarts, problem.num_vars), dtype=np.uint8)
    best_e = np.zeros(restarts)
    _anneal(lin, indptr, nbr, wts, temps, seeds, best_x, best_e)
    values = [problem.evaluate(_index_of(row)) for row in best_x]
    order = sorted(range(restarts), key=lambda r: sign * values[r])
    top = order[0]
    hits = sum(1 for v in values if abs(v - values[top]) <= 1e-9 * max(1.0, abs(values[top])))
    details = {
        "sweeps": sweeps,
        "restarts": restarts,
        "t_start": float(temps[0]),
        "t_end": float(temps[-1]),
        "restart_values": values,
        "hits": hits,
    }
    return _solution(
        problem,
        "annealing",
        _index_of(best_x[top]),
        evaluations=sweeps * restarts * problem.num_vars,
        details=details,
    )


# -- QAOA ---------------------------------------------------------------------------------------

QAOA_DEFAULTS: dict[str, Any] = {"p": 2, "optimizer": "COBYLA", "maxiter": 200, "start": "ramp"}


def _scaled(problem: QuboProblem, scale: float) -> QuboProblem:
    return QuboProblem(
        problem.num_vars,
        {i: w / scale for i, w in problem.linear.items()},
        {k: w / scale for k, w in problem.quadratic.items()},
        problem.offset / scale,
        problem.sense,
        problem.name,
    )


def _qaoa(
    problem: QuboProblem, seed: int | None, *, p: int, optimizer: str, maxiter: int, start: str
) -> Solution:
    from qiz.quantum.algorithms import qaoa

    _limit(problem, "qaoa", QUANTUM_LIMIT)
    scale = _ising_scale(problem)
    res = qaoa.optimize(
        _scaled(problem, scale),
        int(p),
        start=start,
        method=optimizer,
        maxiter=int(maxiter),
        seed=seed,
        exact=True,
    )
    details = {
        "p": res.p,
        "gammas": res.gammas,
        "betas": res.betas,
        "energy": res.energy * scale,
        "scale": scale,
        "approximation_ratio": res.approximation_ratio,
    }
    optimum = None if res.optimum is None else res.optimum * scale
    return _solution(
        problem,
        "qaoa",
        res.best_index,
        evaluations=res.evaluations,
        details=details,
        optimum=optimum,
    )


# -- VQE ----------------------------------------------------------------------------------------

VQE_DEFAULTS: dict[str, Any] = {
    "depth": 3,
    "entangler": "ladder",
    "optimizer": "L-BFGS-B",
    "maxiter": 500,
    "shots": 1024,
}


def _vqe(
    problem: QuboProblem,
    seed: int | None,
    *,
    depth: int,
    entangler: str,
    optimizer: str,
    maxiter: int,
    shots: int,
) -> Solution:
    from qiz.quantum.algorithms.ansatz import HardwareEfficientAnsatz
    from qiz.quantum.algorithms.vqe import VqeEvaluator, run_vqe
    from qiz.quantum.core.pauli import PauliSum
    from qiz.quantum.core.sampling import sample_counts

    _limit(problem, "vqe", QUANTUM_LIMIT)
    if int(shots) != shots or shots < 1:
        raise QuantumError("shots must be a positive integer")
    n = problem.num_vars
    h, j, off = problem.to_ising()
    # VQE minimises <H>: H = f for "min", -f for "max"; scaled to unit spread like QAOA's
    factor = (-1.0 if problem.sense == "max" else 1.0) / _ising_scale(problem)
    hamiltonian = PauliSum.from_ising(
        n,
        {i: factor * w for i, w in h.items()},
        {k: factor * w for k, w in j.items()},
        factor * off,
    )
    ansatz = HardwareEfficientAnsatz(n, int(depth), entangler)
    res = run_vqe(
        ansatz, hamiltonian, method=optimizer, maxiter=int(maxiter), seed=seed, exact=False
    )
    state = VqeEvaluator(ansatz, hamiltonian).statevector(res.theta)
    counts = sample_counts(state, int(shots), np.random.default_rng(seed))
    cost = problem.diagonal()  # at most 2^20 values: also the exact reference
    sign = -1.0 if problem.sense == "max" else 1.0
    best = min(counts, key=lambda k: (sign * cost[k], -counts[k], k))
    optimum = float(cost.max() if problem.sense == "max" else cost.min())
    details = {
        "depth": ansatz.depth,
        "energy": res.energy / factor,
        "theta": res.theta,
        "iterations": res.iterations,
        "shots": int(shots),
        "probability": counts[best] / int(shots),
    }
    return _solution(
        problem, "vqe", int(best), evaluations=res.evaluations, details=details, optimum=optimum
    )
