"""The standard gate set: names, arities and matrices, in one table.

Conventions (the same as OpenQASM 3's ``stdgates.inc`` and Qiskit): qubit ``q`` is bit ``q`` of
the basis-state index (little-endian); a gate's leading ``controls`` qubits are controls and the
rest are its targets; a two-target matrix is indexed by ``bit(target0) + 2 * bit(target1)``.
Rotations are ``R_P(theta) = exp(-i theta P / 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from qiz.quantum.core.errors import CircuitError

Matrix = np.ndarray

_I2 = np.eye(2, dtype=np.complex128)
_X = np.array([[0, 1], [1, 0]], dtype=np.complex128)
_Y = np.array([[0, -1j], [1j, 0]], dtype=np.complex128)
_Z = np.array([[1, 0], [0, -1]], dtype=np.complex128)
_H = np.array([[1, 1], [1, -1]], dtype=np.complex128) / math.sqrt(2)
_SWAP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.complex128)


def _rot(pauli: Matrix) -> Callable[[Sequence[float]], Matrix]:
    def matrix(p: Sequence[float]) -> Matrix:
        half = p[0] / 2
        return (
            math.cos(half) * np.eye(len(pauli), dtype=np.complex128) - 1j * math.sin(half) * pauli
        )

    return matrix


def _u(p: Sequence[float]) -> Matrix:
    theta, phi, lam = p[0], p[1], p[2]
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array(
        [
            [c, -np.exp(1j * lam) * s],
            [np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c],
        ],
        dtype=np.complex128,
    )


def _phase(p: Sequence[float]) -> Matrix:
    return np.array([[1, 0], [0, np.exp(1j * p[0])]], dtype=np.complex128)


def _const(m: Matrix) -> Callable[[Sequence[float]], Matrix]:
    return lambda _p: m


@dataclass(frozen=True)
class GateSpec:
    """One gate: how many controls and targets, how many angles, and its target matrix."""

    name: str
    controls: int
    targets: int
    num_params: int
    _matrix: Callable[[Sequence[float]], Matrix]
    diagonal: bool = False
    generator: Matrix | None = None  # G with dU/dtheta = G U, for one-angle gates

    @property
    def num_qubits(self) -> int:
        return self.controls + self.targets

    def matrix(self, params: Sequence[float] = ()) -> Matrix:
        """The 2^targets x 2^targets matrix applied when every control is 1."""
        if len(params) != self.num_params:
            raise CircuitError(
                f"{self.name} takes {self.num_params} parameter(s), got {len(params)}"
            )
        return self._matrix(params)

    def derivative(self, params: Sequence[float], index: int) -> Matrix:
        """d(matrix)/d(params[index]) by a fourth-order central difference.

        Every matrix here is a trigonometric polynomial of its angles, so the truncation error is
        about h^4/30 ~ 3e-14 with h = 1e-3, below the rounding error of the difference itself.
        """
        if self.generator is not None:
            return self.generator @ self._matrix(params)
        h = 1e-3
        base = list(params)

        def at(delta: float) -> Matrix:
            shifted = list(base)
            shifted[index] += delta
            return self._matrix(shifted)

        return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)

    def full_matrix(self, params: Sequence[float] = ()) -> Matrix:
        """The whole 2^num_qubits matrix in this gate's own qubit order (little-endian)."""
        target = self.matrix(params)
        size = 1 << self.num_qubits
        full = np.eye(size, dtype=np.complex128)
        ctrl_all = (1 << self.controls) - 1
        for col in range(size):
            if col & ctrl_all != ctrl_all:
                continue
            t_in = col >> self.controls
            full[:, col] = 0
            for t_out in range(1 << self.targets):
                full[(t_out << self.controls) | ctrl_all, col] = target[t_out, t_in]
        return full


def _spec(
    name: str,
    controls: int,
    targets: int,
    num_params: int,
    matrix: Callable,
    *,
    diagonal: bool = False,
    generator: Matrix | None = None,
) -> GateSpec:
    return GateSpec(name, controls, targets, num_params, matrix, diagonal, generator)


_ONE_I = np.diag([0, 1j]).astype(np.complex128)  # d/dl diag(1, e^{il}) = i|1><1| U
_SX = np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]], dtype=np.complex128) / 2
_XX = np.kron(_X, _X)
_YY = np.kron(_Y, _Y)
_ZZ = np.kron(_Z, _Z)

GATES: dict[str, GateSpec] = {
    g.name: g
    for g in (
        _spec("id", 0, 1, 0, _const(_I2), diagonal=True),
        _spec("x", 0, 1, 0, _const(_X)),
        _spec("y", 0, 1, 0, _const(_Y)),
        _spec("z", 0, 1, 0, _const(_Z), diagonal=True),
        _spec("h", 0, 1, 0, _const(_H)),
        _spec("s", 0, 1, 0, _const(np.diag([1, 1j]).astype(np.complex128)), diagonal=True),
        _spec("sdg", 0, 1, 0, _const(np.diag([1, -1j]).astype(np.complex128)), diagonal=True),
        _spec("t", 0, 1, 0, _const(np.diag([1, np.exp(1j * math.pi / 4)])), diagonal=True),
        _spec("tdg", 0, 1, 0, _const(np.diag([1, np.exp(-1j * math.pi / 4)])), diagonal=True),
        _spec("sx", 0, 1, 0, _const(_SX)),
        _spec("sxdg", 0, 1, 0, _const(_SX.conj().T.copy())),
        _spec("rx", 0, 1, 1, _rot(_X), generator=-0.5j * _X),
        _spec("ry", 0, 1, 1, _rot(_Y), generator=-0.5j * _Y),
        _spec("rz", 0, 1, 1, _rot(_Z), diagonal=True, generator=-0.5j * _Z),
        _spec("p", 0, 1, 1, _phase, diagonal=True, generator=_ONE_I),
        _spec("u", 0, 1, 3, _u),
        _spec("cx", 1, 1, 0, _const(_X)),
        _spec("cy", 1, 1, 0, _const(_Y)),
        _spec("cz", 1, 1, 0, _const(_Z), diagonal=True),
        _spec("ch", 1, 1, 0, _const(_H)),
        _spec("crx", 1, 1, 1, _rot(_X), generator=-0.5j * _X),
        _spec("cry", 1, 1, 1, _rot(_Y), generator=-0.5j * _Y),
        _spec("crz", 1, 1, 1, _rot(_Z), diagonal=True, generator=-0.5j * _Z),
        _spec("cp", 1, 1, 1, _phase, diagonal=True, generator=_ONE_I),
        _spec("cu", 1, 1, 4, lambda p: np.exp(1j * p[3]) * _u(p[:3])),
        _spec("swap", 0, 2, 0, _const(_SWAP)),
        _spec("ccx", 2, 1, 0, _const(_X)),
        _spec("cswap", 1, 2, 0, _const(_SWAP)),
        _spec("rxx", 0, 2, 1, _rot(_XX), generator=-0.5j * _XX),
        _spec("ryy", 0, 2, 1, _rot(_YY), generator=-0.5j * _YY),
        _spec("rzz", 0, 2, 1, _rot(_ZZ), diagonal=True, generator=-0.5j * _ZZ),
    )
}

# Names OpenQASM programs use for the same gates (stdgates.inc and OpenQASM 2 compatibility).
ALIASES: dict[str, tuple[str, Callable[[list[float]], list[float]]]] = {
    "CX": ("cx", lambda p: p),
    "U": ("u", lambda p: p),
    "u3": ("u", lambda p: p),
    "phase": ("p", lambda p: p),
    "u1": ("p", lambda p: p),
    "cphase": ("cp", lambda p: p),
    "u2": ("u", lambda p: [math.pi / 2, p[0], p[1]]),
}

# Gates that are not in stdgates.inc: an exported program carries their definitions.
NONSTANDARD_DEFINITIONS: dict[str, str] = {
    "rzz": "gate rzz(theta) a, b { cx a, b; rz(theta) b; cx a, b; }",
    "rxx": "gate rxx(theta) a, b { h a; h b; cx a, b; rz(theta) b; cx a, b; h a; h b; }",
    "ryy": (
        "gate ryy(theta) a, b { rx(pi/2) a; rx(pi/2) b; cx a, b; rz(theta) b; cx a, b; "
        "rx(-pi/2) a; rx(-pi/2) b; }"
    ),
    "sxdg": "gate sxdg a { inv @ sx a; }",
}


def gate_spec(name: str) -> GateSpec:
    """The spec of gate ``name``; a clear error for an unknown one."""
    spec = GATES.get(name)
    if spec is None:
        known = ", ".join(sorted(GATES))
        raise CircuitError(f"unknown gate {name!r}; supported gates: {known}")
    return spec
