"""VQE: energies and adjoint gradients, optimizers, and the exact reference.

Two paths give the same numbers: the fused fast path for ``HardwareEfficientAnsatz`` (see
``kernels.vqe``) and a gate-level adjoint method for any parameterised ``Circuit`` (a
user-given ansatz, e.g. from OpenQASM with ``input`` angles). Both compute E(theta) and the full
gradient in about three sweeps of the circuit, independent of the number of parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qiz.quantum.algorithms.ansatz import (
    GeneralAnsatz,
    HamiltonianVariationalAnsatz,
    HardwareEfficientAnsatz,
)
from qiz.quantum.algorithms.budget import cobyla_budget
from qiz.quantum.algorithms.vqe_general import GeneralPath
from qiz.quantum.core import statevector
from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import CircuitError, QuantumError
from qiz.quantum.core.gates import gate_spec
from qiz.quantum.core.memory import require_memory
from qiz.quantum.core.params import ParamExpr
from qiz.quantum.core.pauli import PauliSum
from qiz.quantum.core.threads import sized_by_qubits
from qiz.quantum.kernels import general as kernels
from qiz.quantum.kernels import vqe as vk
from qiz.quantum.kernels import vqe_real as vr
from qiz.quantum.kernels.blocked import high_groups, rotation_coefficients, split_state

BLOCK_BITS = 14
HIGH_GROUP_BITS = 12
MAX_DIAG_LEVELS = 256

Ansatz = HardwareEfficientAnsatz | GeneralAnsatz | HamiltonianVariationalAnsatz | Circuit


# -- the Hamiltonian, prepared for the fast path ---------------------------------------------


@dataclass
class PreparedHamiltonian:
    """A PauliSum split for the fused kernels: Z-only diagonal, one-qubit X/Y, the rest."""

    num_qubits: int
    dlevel: np.ndarray
    dvals: np.ndarray
    indexed: bool
    cx: np.ndarray
    cy: np.ndarray
    groups: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    @staticmethod
    def of(h: PauliSum) -> PreparedHamiltonian:
        n = h.num_qubits
        zs = [(t.zmask, t.coeff.real) for t in h.terms if t.xmask == 0]
        cx = np.zeros(n)
        cy = np.zeros(n)
        others: dict[int, list[tuple[int, complex]]] = {}
        for t in h.terms:
            if t.xmask == 0:
                continue
            if t.xmask.bit_count() == 1 and t.zmask & ~t.xmask == 0:
                q = t.xmask.bit_length() - 1
                (cy if t.zmask else cx)[q] += t.coeff.real
            else:
                others.setdefault(t.xmask, []).append((t.zmask, t.coeff * (1j**t.num_y)))
        zmasks = np.array([z for z, _ in zs], dtype=np.int64)
        zcoeffs = np.array([c for _, c in zs], dtype=np.float64)
        values, inverse = _levels(n, zmasks, zcoeffs)
        groups = [
            (
                x,
                np.array([z for z, _ in ts], dtype=np.int64),
                np.array([c.real for _, c in ts]),
                np.array([c.imag for _, c in ts]),
            )
            for x, ts in others.items()
        ]
        if values is not None and inverse is not None:
            return PreparedHamiltonian(n, inverse, values, True, cx, cy, groups)
        diag = np.empty(1 << n)
        vk.diagonal_values(diag, zmasks, zcoeffs, 0)
        return PreparedHamiltonian(n, np.zeros(1, np.uint8), diag, False, cx, cy, groups)

    def apply_split(self, pr: np.ndarray, pi: np.ndarray, lr: np.ndarray, li: np.ndarray) -> None:
        """lambda = H psi on split arrays."""
        n = self.num_qubits
        block = min(BLOCK_BITS, n)
        vk.hamiltonian_low(
            pr, pi, lr, li, block, self.dlevel, self.dvals, self.indexed, self.cx, self.cy
        )
        for lo, hi, _ in high_groups(n, BLOCK_BITS, HIGH_GROUP_BITS):
            # rows of 64 amplitudes, not 8: measured at 22 qubits, 36 ms against 71 (one
            # thread), the narrow rows paying a page per cache line
            vk.hamiltonian_high(pr, pi, lr, li, lo, hi, self.cx, self.cy, min(64, 1 << lo))
        for x, zmasks, cre, cim in self.groups:
            vk.group_apply_add(pr, pi, lr, li, x, zmasks, cre, cim)

    def apply_real(self, x: np.ndarray, y: np.ndarray) -> None:
        """y = H x for a real H and a real state."""
        n = self.num_qubits
        block = min(BLOCK_BITS, n)
        vr.hamiltonian_low_real(x, y, block, self.dlevel, self.dvals, self.indexed, self.cx)
        for lo, hi, width in high_groups(n, BLOCK_BITS, HIGH_GROUP_BITS):
            vr.hamiltonian_high_real(x, y, lo, hi, self.cx, width)
        for xmask, zmasks, cre, _ in self.groups:
            vr.group_apply_add_real(x, y, xmask, zmasks, cre)


def _levels(
    n: int, zmasks: np.ndarray, coeffs: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The diagonal's distinct values and a one-byte index per amplitude, when there are at
    most 256 values (the Ising chain has n). Built chunk by chunk, so that the float64
    diagonal (half a state vector) never exists whole: it would raise the peak memory."""
    size = 1 << n
    chunk = min(size, 1 << 16)
    buf = np.empty(chunk)
    distinct: set[float] = set()
    for off in range(0, size, chunk):
        vk.diagonal_values(buf, zmasks, coeffs, off)
        distinct.update(np.unique(buf).tolist())
        if len(distinct) > MAX_DIAG_LEVELS:
            return None, None
    values = np.array(sorted(distinct))
    level = np.empty(size, dtype=np.uint8)
    for off in range(0, size, chunk):
        vk.diagonal_values(buf, zmasks, coeffs, off)
        level[off : off + chunk] = np.searchsorted(values, buf)
    return values, level


# -- energy and gradient ----------------------------------------------------------------------


class VqeEvaluator:
    """E(theta) and dE/dtheta for one ansatz and Hamiltonian; buffers are reused across calls."""

    def __init__(self, ansatz: Ansatz, hamiltonian: PauliSum) -> None:
        n = ansatz.num_qubits
        if hamiltonian.num_qubits != n:
            raise QuantumError(
                f"the Hamiltonian acts on {hamiltonian.num_qubits} qubits, the ansatz on {n}"
            )
        if isinstance(ansatz, HamiltonianVariationalAnsatz) or (
            isinstance(ansatz, HardwareEfficientAnsatz | GeneralAnsatz) and not ansatz.fused
        ):
            ansatz = ansatz.circuit()
        self.ansatz = ansatz
        self.hamiltonian = hamiltonian
        # the general ansatz's states are complex: it always takes the split complex path
        self._general = (
            GeneralPath(ansatz, BLOCK_BITS, HIGH_GROUP_BITS)
            if isinstance(ansatz, GeneralAnsatz)
            else None
        )
        self.fast = isinstance(ansatz, HardwareEfficientAnsatz | GeneralAnsatz)
        # Peaks, measured: the fused path keeps psi and lambda (one state when real, two when
        # complex) and the diagonal (a byte per amplitude, or half a state when it has many
        # values); the gate-level path keeps psi, lambda, H psi and a derivative scratch vector.
        # RY and CZ are real: with a real H the states stay real, and half the work goes
        self.real = self.fast and hamiltonian.is_real
        require_memory(n, ((1.0 if self.real else 2.0) + 0.6) if self.fast else 4.2)
        self._prepared = PreparedHamiltonian.of(hamiltonian) if self.fast else None
        self.evaluations = 0
        self._state: tuple[np.ndarray, ...] | None = None

    def _buffers(self) -> tuple[np.ndarray, ...]:
        """psi and lambda as split arrays, allocated once: fresh memory costs a page fault per
        page on first touch, which at 22 qubits is a large part of an evaluation."""
        if self._state is None:
            self._state = split_state(self.num_qubits, vectors=1 if self.real else 2, stagger=True)
        return self._state

    @property
    def num_qubits(self) -> int:
        return self.ansatz.num_qubits

    @property
    def num_parameters(self) -> int:
        if isinstance(self.ansatz, HardwareEfficientAnsatz | GeneralAnsatz):
            return self.ansatz.num_parameters
        return len(self.ansatz.parameters)

    @sized_by_qubits
    def energy_and_gradient(self, theta: Sequence[float]) -> tuple[float, np.ndarray]:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.num_parameters,):
            got = theta.shape[0] if theta.ndim else 0
            raise QuantumError(f"expected {self.num_parameters} parameters, got {got}")
        self.evaluations += 1
        if self._general is not None:
            return self._fast_general(theta, gradient=True)
        if isinstance(self.ansatz, HardwareEfficientAnsatz):
            return self._fast(theta, gradient=True)
        return _adjoint_circuit(self.ansatz, self.hamiltonian, theta, gradient=True)

    @sized_by_qubits
    def energy(self, theta: Sequence[float]) -> float:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.num_parameters,):
            raise QuantumError(f"expected {self.num_parameters} parameters")
        self.evaluations += 1
        if self._general is not None:
            return self._fast_general(theta, gradient=False)[0]
        if isinstance(self.ansatz, HardwareEfficientAnsatz):
            return self._fast(theta, gradient=False)[0]
        return _adjoint_circuit(self.ansatz, self.hamiltonian, theta, gradient=False)[0]

    @sized_by_qubits
    def statevector(self, theta: Sequence[float]) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        if self._general is not None:
            pr, pi = self._general.forward(theta)
            return pr + 1j * pi
        if isinstance(self.ansatz, HardwareEfficientAnsatz):
            if self.real:
                return self._forward_real(theta).astype(np.complex128)
            pr, pi = self._forward(theta)
            return pr + 1j * pi  # a new array: the buffers belong to the next evaluation
        return statevector.statevector(self.ansatz.bind(list(theta)))

    # -- the fused path ----------------------------------------------------------------------

    def _layer(
        self, theta: np.ndarray, layer: int, sign: float
    ) -> tuple[np.ndarray, np.ndarray, float, list[tuple[int, int, int, float]]]:
        """One layer's rotations RY(sign * theta) in scaled form: (u, v), the low pass's factor,
        and per high group (lo, hi, tile width, factor): each pass restores its qubits' scale."""
        n = self.ansatz.num_qubits
        u, v, factors = rotation_coefficients(sign * theta[layer * n : (layer + 1) * n])
        groups = [
            (lo, hi, width, float(np.prod(factors[lo:hi])))
            for lo, hi, width in high_groups(n, BLOCK_BITS, HIGH_GROUP_BITS)
        ]
        return u, v, float(np.prod(factors[: min(BLOCK_BITS, n)])), groups

    def _forward(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ans = self.ansatz
        assert isinstance(ans, HardwareEfficientAnsatz)
        block = min(BLOCK_BITS, ans.num_qubits)
        shifts, masks = ans.cz_masks()
        pr, pi, _, _ = self._buffers()
        pr.fill(0.0)
        pi.fill(0.0)
        pr[0] = 1.0
        for layer in range(ans.depth):
            u, v, f_low, groups = self._layer(theta, layer, 1.0)
            vk.forward_low(pr, pi, block, u, v, f_low, not groups, shifts, masks)
            for g, (lo, hi, width, f) in enumerate(groups):
                last = g == len(groups) - 1
                vk.forward_high(pr, pi, lo, hi, u, v, f, last, shifts, masks, width)
        return pr, pi

    def _forward_real(self, theta: np.ndarray) -> np.ndarray:
        ans = self.ansatz
        assert isinstance(ans, HardwareEfficientAnsatz)
        block = min(BLOCK_BITS, ans.num_qubits)
        shifts, masks = ans.cz_masks()
        x, _ = self._buffers()
        x.fill(0.0)
        x[0] = 1.0
        for layer in range(ans.depth):
            u, v, f_low, groups = self._layer(theta, layer, 1.0)
            vr.forward_low_real(x, block, u, v, f_low, not groups, shifts, masks)
            for g, (lo, hi, width, f) in enumerate(groups):
                last = g == len(groups) - 1
                vr.forward_high_real(x, lo, hi, u, v, f, last, shifts, masks, width)
        return x

    def _fast(self, theta: np.ndarray, gradient: bool) -> tuple[float, np.ndarray]:
        """Forward, lambda = H psi, then the layers backward. On the real path psi and lambda
        are one array each and sweep backward as one (re, im) pair."""
        ans = self.ansatz
        assert isinstance(ans, HardwareEfficientAnsatz) and self._prepared is not None
        n = ans.num_qubits
        if self.real:
            x = self._forward_real(theta)
            _, y = self._buffers()
            self._prepared.apply_real(x, y)
            energy = float(vr.dot(x, y))
        else:
            pr, pi = self._forward(theta)
            _, _, lr, li = self._buffers()
            self._prepared.apply_split(pr, pi, lr, li)
            energy = float(vk.real_inner(pr, pi, lr, li))
        grad = np.zeros(ans.num_parameters)
        if not gradient:
            return energy, grad
        block = min(BLOCK_BITS, n)
        shifts, masks = ans.cz_masks()
        for layer in range(ans.depth - 1, -1, -1):
            u, v, f_low, groups = self._layer(theta, layer, -1.0)
            g_layer = grad[layer * n : (layer + 1) * n]  # the kernels add into this view
            for g, (lo, hi, width, f) in enumerate(reversed(groups)):
                first = g == 0
                if self.real:
                    vr.backward_high_real(
                        x, y, lo, hi, u, v, f, first, shifts, masks, width, g_layer
                    )
                else:
                    vk.backward_high(
                        pr, pi, lr, li, lo, hi, u, v, f, first, shifts, masks, width, g_layer
                    )
            if self.real:
                vr.backward_low_real(x, y, block, u, v, f_low, not groups, shifts, masks, g_layer)
            else:
                vk.backward_low(
                    pr, pi, lr, li, block, u, v, f_low, not groups, shifts, masks, g_layer
                )
        return energy, grad

    def _fast_general(self, theta: np.ndarray, gradient: bool) -> tuple[float, np.ndarray]:
        """The general ansatz: forward, lambda = H psi, then the layers backward."""
        assert self._general is not None and self._prepared is not None
        pr, pi = self._general.forward(theta)
        _, _, lr, li = self._general.buffers()
        self._prepared.apply_split(pr, pi, lr, li)
        energy = float(vk.real_inner(pr, pi, lr, li))
        grad = np.zeros(self.num_parameters)
        if gradient:
            self._general.backward(theta, grad)
        return energy, grad


def energy_and_gradient(
    ansatz: Ansatz, hamiltonian: PauliSum, theta: Sequence[float]
) -> tuple[float, np.ndarray]:
    """E(theta) = <psi(theta)|H|psi(theta)> and its full gradient (adjoint method)."""
    return VqeEvaluator(ansatz, hamiltonian).energy_and_gradient(theta)


# -- the gate-level adjoint method ------------------------------------------------------------


def _adjoint_circuit(
    circuit: Circuit, hamiltonian: PauliSum, theta: np.ndarray, gradient: bool
) -> tuple[float, np.ndarray]:
    if circuit.has_measurements():
        raise CircuitError("a VQE ansatz must not measure or reset")
    names = circuit.parameters
    values = dict(zip(names, theta.tolist(), strict=True))
    bound = circuit.bind(values)
    psi = statevector.statevector(bound)
    lam = hamiltonian.apply(psi)
    energy = float(kernels.inner(psi, lam).real)
    grad = np.zeros(len(names))
    if not gradient:
        return energy, grad
    position = {name: i for i, name in enumerate(names)}
    tmp = np.empty_like(psi)
    for original, inst in zip(
        reversed(circuit.instructions), reversed(bound.instructions), strict=True
    ):
        if inst.name == "barrier":
            continue
        spec = gate_spec(inst.name)
        params = [float(p) for p in inst.params]  # type: ignore[arg-type]
        matrix = spec.matrix(params)
        inverse = matrix.conj().T.copy()
        statevector.apply_matrix(psi, inst.qubits, spec.controls, inverse)
        for k, expr in enumerate(original.params):
            if not (isinstance(expr, ParamExpr) and expr.terms):
                continue
            np.copyto(tmp, psi)
            statevector.apply_matrix(tmp, inst.qubits, spec.controls, spec.derivative(params, k))
            if spec.controls:
                _zero_outside_controls(tmp, inst.qubits[: spec.controls])
            contribution = 2.0 * float(kernels.inner(lam, tmp).real)
            for name, coeff in expr.terms:
                grad[position[name]] += coeff * contribution
        statevector.apply_matrix(lam, inst.qubits, spec.controls, inverse)
    return energy, grad


def _zero_outside_controls(state: np.ndarray, controls: tuple[int, ...]) -> None:
    """The derivative of a controlled gate vanishes where a control is 0."""
    mask = 0
    for q in controls:
        mask |= 1 << q
    kernels.zero_unless(state, mask)


# -- optimisation -----------------------------------------------------------------------------


@dataclass
class VqeResult:
    energy: float
    theta: list[float]
    exact: float | None
    error: float | None
    evaluations: int
    iterations: int
    history: list[float]
    method: str
    converged: bool | None = None  # the optimizer's verdict; None for SPSA (fixed iterations)
    message: str = ""  # the optimizer's own words on why it stopped (scipy's ``message``)
    gradient_norm: float | None = None  # |dE/dtheta| at the final theta: how flat it ended


def spsa(
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    maxiter: int,
    seed: int | None,
    *,
    a: float = 0.2,
    c: float = 0.1,
) -> tuple[np.ndarray, list[float]]:
    """Simultaneous-perturbation stochastic approximation (Spall's standard gains)."""
    rng = np.random.default_rng(seed)
    x = np.array(x0, dtype=np.float64)
    history = []
    big_a = 0.1 * maxiter
    for k in range(maxiter):
        ak = a / (k + 1 + big_a) ** 0.602
        ck = c / (k + 1) ** 0.101
        delta = rng.choice([-1.0, 1.0], size=x.shape[0])
        g = (fun(x + ck * delta) - fun(x - ck * delta)) / (2 * ck) * delta
        x -= ak * g
        history.append(fun(x))
    return x, history


def run_vqe(
    ansatz: Ansatz,
    hamiltonian: PauliSum,
    *,
    method: str = "L-BFGS-B",
    maxiter: int = 500,
    seed: int | None = 0,
    initial: Sequence[float] | None = None,
    exact: bool | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> VqeResult:
    """Minimise E(theta); L-BFGS-B uses the adjoint gradient, COBYLA and SPSA only energies.
    The result's ``gradient_norm`` is taken at the final theta whatever the method."""
    ev = VqeEvaluator(ansatz, hamiltonian)
    rng = np.random.default_rng(seed)
    if initial is not None:
        x0 = np.asarray(initial, dtype=np.float64)
    elif isinstance(ansatz, HamiltonianVariationalAnsatz):
        x0 = ansatz.initial_point()
    elif isinstance(ansatz, GeneralAnsatz):
        x0 = ansatz.initial_point(seed)
    else:
        x0 = rng.uniform(-0.1, 0.1, ev.num_parameters) + _default_shift(ansatz)
    history: list[float] = []

    def record(e: float) -> None:
        history.append(e)
        if progress is not None:
            progress(len(history), e)

    name = method.upper()
    # the optimizers' own warnings (scipy's OptimizeWarning, numpy's RuntimeWarning on a flat
    # step) would reach stderr, which a --json caller keeps for errors; the result says why
    # the run stopped (``message``, ``converged``) in their place
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        x, iterations, converged, message = _optimize(
            ev, name, x0, maxiter=maxiter, seed=seed, record=record
        )
        energy, grad = ev.energy_and_gradient(x)
    if exact is None:
        exact = hamiltonian.num_qubits <= 16
    reference = hamiltonian.ground_energy() if exact else None
    return VqeResult(
        energy,
        [float(v) for v in x],
        reference,
        None if reference is None else energy - reference,
        ev.evaluations,
        iterations,
        history,
        name,
        converged,
        message,
        float(np.linalg.norm(grad)),
    )


def _optimize(
    ev: VqeEvaluator,
    name: str,
    x0: np.ndarray,
    *,
    maxiter: int,
    seed: int | None,
    record: Callable[[float], None],
) -> tuple[np.ndarray, int, bool | None, str]:
    """(theta, iterations, converged, message) of one optimizer run from x0."""
    from scipy.optimize import minimize

    if name == "L-BFGS-B":

        def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
            e, g = ev.energy_and_gradient(x)
            record(e)
            return e, g

        res = minimize(
            fg,
            x0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-10},
        )
        x, iterations, converged = res.x, int(res.nit), bool(res.success)
        message = str(res.message)
    elif name == "COBYLA":

        def f(x: np.ndarray) -> float:
            e = ev.energy(x)
            record(e)
            return e

        budget = cobyla_budget("COBYLA", maxiter, x0)
        res = minimize(f, x0, method="COBYLA", options={"maxiter": budget, "rhobeg": 0.3})
        x, iterations, converged = res.x, int(res.nfev), bool(res.success)
        message = str(res.message)
    elif name == "SPSA":
        x, _ = spsa(ev.energy, x0, maxiter, seed)
        record(ev.energy(x))
        iterations, converged = maxiter, None
        message = f"SPSA has no convergence test; it ran its {maxiter} iterations"
    else:
        raise QuantumError(f"unknown optimizer {name!r}: use L-BFGS-B, COBYLA or SPSA")
    return x, iterations, converged, message


def _default_shift(ansatz: Ansatz) -> float:
    """A start away from the symmetric point where RY-only gradients can vanish."""
    return 0.1 if isinstance(ansatz, HardwareEfficientAnsatz) else 0.0
