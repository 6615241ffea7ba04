"""QAOA: the fast simulator, the optimizer driver, and the approximation ratio.

The state after p layers is prod_l exp(-i beta_l sum_j X_j) exp(-i gamma_l C) |+>^n, where C is
the problem's objective f (its cost diagonal, computed once). The expectation is <C>.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qiz.quantum.algorithms.budget import cobyla_budget
from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.memory import require_memory
from qiz.quantum.core.sampling import sample_counts
from qiz.quantum.core.threads import sized_by_qubits
from qiz.quantum.kernels import qaoa as qk
from qiz.quantum.kernels.blocked import TILE_WIDTH, rotation_coefficients, split_state
from qiz.quantum.problems.qubo import QuboProblem

BLOCK_BITS = 14  # 2^14 amplitudes = 256 KiB per low-pass block (both float64 arrays): in L2
HIGH_GROUP_BITS = 10  # at most this many qubits per high pass (balanced: see _high_groups)
TILE_BYTES = 1 << 19  # a high-pass tile (both arrays): 512 KiB, half this machine's L2 per core
TILE_WIDTH_CAP = 256  # amplitudes per tile row: wider rows would leave too few tiles to share
MAX_LEVELS = 1 << 16  # distinct cost values that still use a phase table
PRECISIONS: dict[str, type] = {"double": np.float64, "single": np.float32}
STATE_OVERHEAD = 1.05  # states of the simulator's peak besides its level/cost bytes per amplitude


def state_vectors_needed(precision: str, extra_bytes: int) -> float:
    """The simulator's peak in states of ``precision``: one state, ``extra_bytes`` more per
    amplitude (a uint8 or uint16 level, a float64 cost) and 5% for tiles, tables and the rest."""
    return STATE_OVERHEAD + extra_bytes / (2 * np.dtype(PRECISIONS[precision]).itemsize)


def single_precision_bound(problem: QuboProblem, p: int) -> tuple[float, float]:
    """(state bound, energy bound): how far a single-precision QAOA state and energy of depth
    ``p`` can be from the exact ones (derivation: docs/quantum.md, "Precision").

    With u = 2^-24 (float32's unit roundoff), every layer rounds its phase table and product
    (relative error <= 4u) and, per qubit, the mixer's coefficients and the butterfly's
    multiply-adds (<= 6u); rotations are unitary, so the errors add, not multiply:
    ||psi_single - psi|| <= eps = u (p (6 n + 4) + 1). Then |E_single - E| <= ||C|| (2 eps +
    eps^2) with ||C|| = max |f|, plus the float64 sum's own worst case 2^n 2^-53 ||C||.
    """
    u = 2.0**-24
    n = problem.num_vars
    eps = u * (p * (6 * n + 4) + 1)
    lo, hi = problem.value_range()
    norm = max(abs(lo), abs(hi))
    return eps, norm * (2 * eps + eps * eps + 2.0 ** (n - 53))


@dataclass
class QaoaSimulator:
    """Evaluates QAOA states and energies for one problem; the cost levels are built once.

    ``precision`` is "double" (float64 real and imaginary arrays) or "single" (float32: half the
    memory, so 31 qubits fit in 24 GiB; energies agree with double precision to the bound
    in docs/quantum.md, "Precision"). Expectations and sampling probabilities are summed in
    float64 either way.
    """

    problem: QuboProblem
    precision: str = "double"
    level: np.ndarray | None = field(init=False, repr=False, default=None)
    values: np.ndarray | None = field(init=False, repr=False, default=None)
    _cost: np.ndarray | None = field(init=False, repr=False, default=None)
    _state: tuple[np.ndarray, np.ndarray] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise QuantumError(f"precision must be 'double' or 'single', not {self.precision!r}")
        self._require(2)  # the state and at worst a uint16 level array
        self._tabulate()

    @staticmethod
    def maxcut(
        num_nodes: int,
        edges: Iterable[Sequence[int]],
        weights: Sequence[float] | None = None,
        precision: str = "double",
    ) -> QaoaSimulator:
        return QaoaSimulator(QuboProblem.maxcut(num_nodes, edges, weights), precision)

    @property
    def num_qubits(self) -> int:
        return self.problem.num_vars

    @property
    def dtype(self) -> type:
        """float64 or float32: the type of the state's real and imaginary arrays."""
        return PRECISIONS[self.precision]

    @property
    def cost(self) -> np.ndarray:
        """The float64 cost diagonal f(x), made on demand (kept only by the untabulated path,
        which reads it every layer): the level array is all evaluation needs otherwise."""
        if self._cost is not None:
            return self._cost
        self._require(2 + 8)
        return self.problem.diagonal()

    def _require(self, extra_bytes: int) -> None:
        """Refuse before allocating (see :func:`state_vectors_needed`)."""
        needed = state_vectors_needed(self.precision, extra_bytes)
        require_memory(self.num_qubits, needed, precision=self.precision)

    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """The state arrays, allocated once and reused by every evaluation: fresh memory costs
        page faults on every first touch (measured here: 0.36 s for the 256 MiB of 24 qubits).
        """
        if self._state is None:
            re, im = split_state(self.num_qubits, dtype=self.dtype, stagger=True)
            self._state = (re, im)
        return self._state

    def _tabulate(self) -> None:
        """Map each cost to an index into a small table of distinct values when possible.

        Integer problems get their levels straight from the problem, one narrow integer an
        amplitude, never holding the float64 diagonal (16 GiB at 31 qubits)."""
        if self.problem.integer_scale():
            lo, hi = self.problem.value_range()
            if hi - lo < MAX_LEVELS:
                count = int(hi - lo) + 1
                dtype = np.uint8 if count <= 256 else np.uint16
                self.level = self.problem.integer_levels(lo, dtype)
                self.values = lo + np.arange(count, dtype=np.float64)
                return
        self._require(2 + 8)
        self._cost = self.problem.diagonal()
        self._tabulate_distinct()
        if self.level is not None:
            self._cost = None  # the table path never reads it again

    def _tabulate_distinct(self) -> None:
        """Non-integer costs with few distinct values: collect them chunk by chunk (a global
        np.unique would sort a copy and build an int64 index, two more half-states of memory)
        and give up as soon as there are more than a table holds."""
        cost = self._cost
        assert cost is not None
        chunk = 1 << 16
        distinct: set[float] = set()
        for off in range(0, cost.shape[0], chunk):
            distinct.update(np.unique(cost[off : off + chunk]).tolist())
            if len(distinct) > MAX_LEVELS:
                return
        values = np.array(sorted(distinct))
        level = np.empty(cost.shape[0], dtype=np.uint8 if len(values) <= 256 else np.uint16)
        for off in range(0, cost.shape[0], chunk):
            level[off : off + chunk] = np.searchsorted(values, cost[off : off + chunk])
        self.level, self.values = level, values

    def _high_groups(self) -> list[tuple[int, int, int]]:
        """(lo, hi, tile width) per high pass: the qubits above the low pass in as few groups of
        at most HIGH_GROUP_BITS as can be, of equal size, so tiles of TILE_BYTES keep rows of
        32+ amplitudes (measured at n = 28, float32: one pass of 12 row qubits in 16-wide rows
        cost 1.31 s of CPU, the 10-qubit kind 0.62 s per 2^28 amplitudes)."""
        n = self.num_qubits
        lo = min(BLOCK_BITS, n)
        count = -(-(n - lo) // HIGH_GROUP_BITS)  # ceil
        amp = 2 * np.dtype(self.dtype).itemsize
        groups = []
        for k in range(count):
            hi = lo + -(-(n - lo) // (count - k))  # an equal share of what is left
            width = (TILE_BYTES // amp) >> (hi - lo)
            width = min(max(width, TILE_WIDTH), TILE_WIDTH_CAP, 1 << lo)
            groups.append((lo, hi, width))
            lo = hi
        return groups

    # -- evaluation -----------------------------------------------------------------------

    @sized_by_qubits
    def evolve(
        self, gammas: Sequence[float], betas: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The QAOA state for these angles as split (real, imaginary) arrays; they are this
        simulator's buffers, overwritten by its next evaluation."""
        if len(gammas) != len(betas) or len(gammas) == 0:
            raise QuantumError("QAOA needs as many gammas as betas, at least one of each")
        n = self.num_qubits
        re, im = self._buffers()
        dt = self.dtype
        block = min(BLOCK_BITS, n)
        init_amp = 1.0 / math.sqrt(1 << n)
        groups = self._high_groups()
        reach = 0.0
        if self._cost is not None:
            reach = max(abs(float(self._cost.min())), abs(float(self._cost.max())))
        for layer, (gamma, beta) in enumerate(zip(gammas, betas, strict=True)):
            u, v, factors = rotation_coefficients(np.full(n, 2.0 * float(beta)))
            u, v = u.astype(dt), v.astype(dt)
            factor = float(np.prod(factors))
            first = layer == 0
            g = float(gamma)
            if self.level is not None and self.values is not None:
                table = factor * np.exp(-1j * g * self.values)
                tre, tim = table.real.astype(dt), table.imag.astype(dt)
                qk.low_pass_indexed(re, im, self.level, tre, tim, block, u, v, first, init_amp)
            elif abs(g) * reach <= qk.SINCOS_MAX_ANGLE:
                qk.low_pass_sincos(re, im, self.cost, g, factor, block, u, v, first, init_amp)
            else:
                qk.low_pass_direct(re, im, self.cost, g, factor, block, u, v, first, init_amp)
            for lo, hi, width in groups:
                qk.high_pass(re, im, lo, hi, u, v, width)
        return re, im

    def statevector(self, gammas: Sequence[float], betas: Sequence[float]) -> np.ndarray:
        """The QAOA state for these angles as one complex vector (complex128, or complex64 in
        single precision)."""
        re, im = self.evolve(gammas, betas)
        require_memory(self.num_qubits, 1.0, precision=self.precision)
        complex_type = np.complex128 if self.dtype is np.float64 else np.complex64
        out = np.empty(re.shape[0], dtype=complex_type)
        qk.join(re, im, out)
        return out

    @sized_by_qubits
    def expectation_of(self, re: np.ndarray, im: np.ndarray) -> float:
        """<C> in the split state (re, im)."""
        if self.level is not None and self.values is not None:
            return float(qk.expectation_indexed(re, im, self.level, self.values))
        return float(qk.expectation_direct(re, im, self.cost))

    def expectation(self, gammas: Sequence[float], betas: Sequence[float]) -> float:
        """<gamma, beta| C |gamma, beta>: one energy evaluation."""
        return self.expectation_of(*self.evolve(gammas, betas))

    def sample(
        self, gammas: Sequence[float], betas: Sequence[float], shots: int, seed: int | None
    ) -> dict[int, int]:
        """Measurement outcomes (basis index -> count) of the QAOA state."""
        return sample_counts(self.evolve(gammas, betas), shots, np.random.default_rng(seed))


# -- the driver -------------------------------------------------------------------------------


@dataclass
class QaoaResult:
    """What an optimisation run found, with the exact reference where it was computable."""

    p: int
    gammas: list[float]
    betas: list[float]
    energy: float
    best_index: int
    best_value: float
    optimum: float | None
    worst: float | None
    approximation_ratio: float | None
    evaluations: int
    history: list[float]
    sense: str
    converged: bool = False  # the optimizer's own verdict (False: stopped at maxiter)
    message: str = ""  # the optimizer's own words on why it stopped (scipy's ``message``)
    iterations: int = 0  # the optimizer's iterations (scipy's ``nit``, or its evaluations)


def linear_ramp(p: int, delta_gamma: float = 0.6, delta_beta: float = 0.6) -> tuple[list, list]:
    """The linear-ramp start: gamma rises and beta falls across the layers."""
    gammas = [delta_gamma * (i + 0.5) / p for i in range(p)]
    betas = [delta_beta * (1 - (i + 0.5) / p) for i in range(p)]
    return gammas, betas


# Fixed angles for MaxCut on 3-regular graphs (Wurtz & Lykov, PRA 104, 052419 (2021), Table I),
# in our convention (gamma multiplies the cut value, beta the sum of X).
FIXED_ANGLES_3REG: dict[int, tuple[list[float], list[float]]] = {
    1: ([0.616], [0.393]),
    2: ([0.488, 0.898], [0.555, 0.293]),
    3: ([0.422, 0.798, 0.937], [0.609, 0.459, 0.235]),
}


def approximation_ratio(problem: QuboProblem, value: float, optimum: float, worst: float) -> float:
    """value/optimum for MaxCut-like maximisation with optimum > 0, else the normalised ratio
    (worst - value)/(worst - optimum) in [0, 1]."""
    if problem.sense == "max" and optimum > 0 and worst >= 0:
        return value / optimum
    if worst == optimum:
        return 1.0
    return (worst - value) / (worst - optimum)


def optimize(
    problem: QuboProblem,
    p: int,
    *,
    start: str = "ramp",
    method: str = "COBYLA",
    maxiter: int = 200,
    seed: int | None = 0,
    exact: bool | None = None,
    shots: int = 1024,
    progress: Callable[[int, float], None] | None = None,
    precision: str = "double",
) -> QaoaResult:
    """Optimise the 2p angles with scipy, then sample the best state's most likely answer.

    ``start`` is "ramp" (linear ramp) or "fixed" (tabulated 3-regular MaxCut angles for p <= 3,
    else the ramp). ``exact`` computes the optimum by enumeration (default: up to 24 variables).
    """
    from scipy.optimize import minimize

    if p < 1:
        raise QuantumError("QAOA depth p must be at least 1")
    if maxiter < 1:
        raise QuantumError("maxiter must be at least 1")
    if shots < 1:
        raise QuantumError("shots must be at least 1")
    sim = QaoaSimulator(problem, precision)
    if start == "fixed" and p in FIXED_ANGLES_3REG:
        g0, b0 = FIXED_ANGLES_3REG[p]
    elif start in ("fixed", "ramp"):
        g0, b0 = linear_ramp(p)
    else:
        raise QuantumError(f"unknown start {start!r}: use 'ramp' or 'fixed'")
    sign = -1.0 if problem.sense == "max" else 1.0
    history: list[float] = []

    def objective(x: np.ndarray) -> float:
        energy = sim.expectation(x[:p], x[p:])
        history.append(energy)
        if progress is not None:
            progress(len(history), energy)
        return sign * energy

    x0 = np.array([*g0, *b0], dtype=np.float64)
    if method.upper() not in ("COBYLA", "NELDER-MEAD", "POWELL"):
        raise QuantumError(f"unknown method {method!r}: use COBYLA, Nelder-Mead or Powell")
    res = minimize(
        objective, x0, method=method, options={"maxiter": cobyla_budget(method, maxiter, x0)}
    )
    gammas, betas = [float(v) for v in res.x[:p]], [float(v) for v in res.x[p:]]
    re, im = sim.evolve(gammas, betas)
    energy = sim.expectation_of(re, im)
    samples = sample_counts((re, im), shots, np.random.default_rng(seed))
    keys = np.fromiter(samples, dtype=np.int64, count=len(samples))
    value = dict(zip(samples, problem.values_at(keys).tolist(), strict=True))
    best_index = max(samples, key=lambda k: (sign * -value[k], samples[k]))
    best_value = float(value[best_index])
    optimum = worst = ratio = None
    if exact is None:
        exact = problem.num_vars <= 24
    if exact:
        lowest, highest = problem.value_range()
        optimum = highest if problem.sense == "max" else lowest
        worst = lowest if problem.sense == "max" else highest
        ratio = approximation_ratio(problem, energy, optimum, worst)
    return QaoaResult(
        p,
        gammas,
        betas,
        energy,
        int(best_index),
        best_value,
        optimum,
        worst,
        ratio,
        len(history),
        history,
        problem.sense,
        bool(res.success),
        str(res.message),
        int(getattr(res, "nit", None) or res.nfev),
    )
