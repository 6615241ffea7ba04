"""Noise channels as Kraus operators, and readout errors as confusion matrices.

A ``Channel`` is a completely positive, trace-preserving map rho -> sum_i K_i rho K_i^dagger,
given by its Kraus operators on 1-3 qubits (index ``bit(q0) + 2 bit(q1) + ...``: the gate
tables' little-endian convention, which is Qiskit's too). Every constructor checks its parameters
and every channel checks sum_i K_i^dagger K_i = I within ``CPTP_TOLERANCE``, so a bad channel is
refused when it is made, with one line saying why, never when a simulation half-way through
meets it. The parameterisations are Qiskit Aer's (``depolarizing_error``,
``amplitude_damping_error``, ``phase_damping_error``, ``thermal_relaxation_error``), so a model
written against Aer's documentation means the same here.

A channel also knows whether it is a *mixture of unitaries* (every K_i^dagger K_i a multiple of
I): then which operator a trajectory takes does not depend on its state, and the trajectory
simulator skips computing the probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product

import numpy as np

from qiz.quantum.noise.errors import NoiseError
from qiz.quantum.noise.limits import MAX_CHANNEL_QUBITS

CPTP_TOLERANCE = 1e-10  # max |sum K^dagger K - I| entry
PROBABILITY_TOLERANCE = 1e-10  # rows of a confusion matrix sum to 1 within this
_DROP = 1e-15  # Kraus operators with a smaller norm (squared) than this are left out

_PAULIS = (
    np.eye(2, dtype=np.complex128),
    np.array([[0, 1], [1, 0]], dtype=np.complex128),
    np.array([[0, -1j], [1j, 0]], dtype=np.complex128),
    np.array([[1, 0], [0, -1]], dtype=np.complex128),
)


@dataclass(frozen=True, eq=False)
class Channel:
    """A CPTP map on ``num_qubits`` qubits, as Kraus operators (checked on construction).

    ``spec`` is how it was made (``{"type": "depolarizing", "p": 0.01, ...}``), so a model can
    be written back to its file as parameters rather than matrices.
    """

    num_qubits: int
    kraus: tuple[np.ndarray, ...]
    spec: Mapping[str, object] = field(default_factory=dict)
    # probabilities of a mixture of unitaries (K_i = sqrt(p_i) U_i), else None
    mixture: tuple[float, ...] | None = field(init=False, default=None)
    # indices of the operators that are multiples of the identity (nothing to apply)
    scalar: frozenset[int] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        name = str(self.spec.get("type", "kraus"))
        if not 1 <= self.num_qubits <= MAX_CHANNEL_QUBITS:
            raise NoiseError(
                f"{name} channel: acts on {self.num_qubits} qubits; 1 to {MAX_CHANNEL_QUBITS} "
                "are supported"
            )
        dim = 1 << self.num_qubits
        ops = []
        for k in self.kraus:
            m = np.asarray(k, dtype=np.complex128)
            if m.shape != (dim, dim):
                raise NoiseError(
                    f"{name} channel: a Kraus operator has shape {m.shape}, expected ({dim}, {dim})"
                )
            if not np.all(np.isfinite(m)):
                raise NoiseError(f"{name} channel: a Kraus operator has a non-finite entry")
            if float(np.vdot(m, m).real) > _DROP:
                ops.append(np.ascontiguousarray(m))
        if not ops:
            raise NoiseError(f"{name} channel: no nonzero Kraus operator")
        if len(ops) > dim * dim:  # e.g. composed channels: the same map in at most 4^k operators
            ops = _fewest_kraus(ops)
        total = sum(k.conj().T @ k for k in ops)
        deviation = float(np.max(np.abs(total - np.eye(dim))))
        if deviation > CPTP_TOLERANCE:
            raise NoiseError(
                f"{name} channel: not trace preserving (sum of K^dagger K differs from the "
                f"identity by {deviation:.3g} > {CPTP_TOLERANCE:g})"
            )
        object.__setattr__(self, "kraus", tuple(ops))
        scalar = {
            i for i, k in enumerate(ops) if np.max(np.abs(k - k[0, 0] * np.eye(dim))) <= _DROP
        }
        object.__setattr__(self, "scalar", frozenset(scalar))
        weights = []
        for k in ops:
            g = k.conj().T @ k
            w = float(np.trace(g).real) / dim
            if np.max(np.abs(g - w * np.eye(dim))) > CPTP_TOLERANCE:
                break
            weights.append(w)
        else:
            object.__setattr__(self, "mixture", tuple(weights))

    @property
    def name(self) -> str:
        return str(self.spec.get("type", "kraus"))

    @property
    def is_unitary(self) -> bool:
        """One Kraus operator: a unitary, applied without any draw."""
        return len(self.kraus) == 1

    def superoperator(self) -> np.ndarray:
        """sum_i K_i (x) conj(K_i): acts on vec(rho) with the row index as the high bits."""
        return sum(np.kron(k, k.conj()) for k in self.kraus)

    def apply_to_density(self, rho: np.ndarray) -> np.ndarray:
        """The channel on a density matrix of exactly its own qubits (for checks and tests)."""
        return sum(k @ rho @ k.conj().T for k in self.kraus)

    def compose(self, after: Channel) -> Channel:
        """This channel, then ``after`` (on the same qubits): Kraus operators B_j A_i."""
        if after.num_qubits != self.num_qubits:
            raise NoiseError(
                f"cannot compose a {self.num_qubits}-qubit channel with a "
                f"{after.num_qubits}-qubit one"
            )
        ops = [b @ a for a, b in product(self.kraus, after.kraus)]
        return Channel(self.num_qubits, tuple(ops), {"type": "sequence"})


def _fewest_kraus(ops: list[np.ndarray]) -> list[np.ndarray]:
    """The same channel in at most dim^2 Kraus operators, from the eigenvectors of its Choi
    matrix J = sum_i vec(K_i) vec(K_i)^dagger (the map depends on the K_i only through J)."""
    dim = ops[0].shape[0]
    vecs = np.array([k.reshape(-1) for k in ops])
    choi = vecs.T @ vecs.conj()
    values, vectors = np.linalg.eigh(choi)
    keep = values > _DROP * max(1.0, float(values.max()))
    return [
        np.ascontiguousarray(math.sqrt(v) * vectors[:, j].reshape(dim, dim))
        for j, v in zip(np.flatnonzero(keep), values[keep], strict=True)
    ]


def _probability(name: str, label: str, value: float, high: float = 1.0) -> float:
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= high):
        raise NoiseError(f"{name}: {label} must be between 0 and {high:g}, got {value!r}")
    return v


def depolarizing(p: float, num_qubits: int = 1) -> Channel:
    """rho -> (1 - p) rho + p I / 2^n (Aer's ``depolarizing_error(p, n)``).

    p runs from 0 to 4^n / (4^n - 1), the fully depolarizing-and-beyond Pauli channel; the Kraus
    form is every n-qubit Pauli P with weight p / 4^n, the identity with 1 - p (4^n - 1) / 4^n.
    """
    if num_qubits not in (1, 2):
        raise NoiseError(f"depolarizing: 1 or 2 qubits, got {num_qubits}")
    size = 4**num_qubits
    p = _probability("depolarizing", "p", p, size / (size - 1))
    ops = []
    for index, paulis in enumerate(product(_PAULIS, repeat=num_qubits)):
        m = np.array([[1.0]], dtype=np.complex128)
        for pauli in paulis:  # first factor is the highest qubit: index order stays little-endian
            m = np.kron(m, pauli)
        weight = 1 - p * (size - 1) / size if index == 0 else p / size
        ops.append(math.sqrt(max(weight, 0.0)) * m)
    return Channel(
        num_qubits, tuple(ops), {"type": "depolarizing", "p": p, "num_qubits": num_qubits}
    )


def amplitude_damping(gamma: float) -> Channel:
    """Energy loss |1> -> |0> with probability gamma (Aer's ``amplitude_damping_error``)."""
    g = _probability("amplitude_damping", "gamma", gamma)
    k0 = np.array([[1, 0], [0, math.sqrt(1 - g)]], dtype=np.complex128)
    k1 = np.array([[0, math.sqrt(g)], [0, 0]], dtype=np.complex128)
    return Channel(1, (k0, k1), {"type": "amplitude_damping", "gamma": g})


def phase_damping(lam: float) -> Channel:
    """Dephasing: rho01 -> sqrt(1 - lambda) rho01, populations kept (Aer's
    ``phase_damping_error``)."""
    lam = _probability("phase_damping", "lambda", lam)
    k0 = np.array([[1, 0], [0, math.sqrt(1 - lam)]], dtype=np.complex128)
    k1 = np.array([[0, 0], [0, math.sqrt(lam)]], dtype=np.complex128)
    return Channel(1, (k0, k1), {"type": "phase_damping", "lambda": lam})


def thermal_relaxation(
    t1: float, t2: float, time: float, excited_population: float = 0.0
) -> Channel:
    """T1/T2 relaxation over a gate of duration ``time`` (same unit as t1, t2).

    Populations relax towards (1 - pe, pe) with probability 1 - exp(-time/T1) and coherences
    decay as exp(-time/T2): generalized amplitude damping, then pure dephasing at the rate
    1/T2 - 1/(2 T1). T2 <= 2 T1 is physical; T2 > 2 T1 is refused (as Aer does). ``t1`` may be
    ``inf`` (no relaxation), and then ``t2`` too (no dephasing).
    """
    name = "thermal_relaxation"
    t1, t2, time = float(t1), float(t2), float(time)
    for label, v in (("t1", t1), ("t2", t2)):
        if math.isnan(v) or v <= 0:
            raise NoiseError(f"{name}: {label} must be positive, got {v!r}")
    if not (math.isfinite(time) and time >= 0):
        raise NoiseError(f"{name}: time must be finite and non-negative, got {time!r}")
    if t2 > 2 * t1:
        raise NoiseError(f"{name}: T2 = {t2:g} exceeds 2 T1 = {2 * t1:g}, which is unphysical")
    pe = _probability(name, "excited_population", excited_population)
    gamma = 1.0 - math.exp(-time / t1)
    coherence = math.exp(-time / t2)  # what rho01 is multiplied by in all
    keep = math.sqrt(1.0 - gamma)  # what amplitude damping alone leaves of rho01
    dephase = coherence / keep if keep > 0 else 0.0  # what pure dephasing must leave of it
    flip = min(max((1.0 - dephase) / 2.0, 0.0), 0.5)  # rho -> (1 - q) rho + q Z rho Z
    ga = math.sqrt(gamma)
    ad = [
        math.sqrt(1 - pe) * np.array([[1, 0], [0, keep]], dtype=np.complex128),
        math.sqrt(1 - pe) * np.array([[0, ga], [0, 0]], dtype=np.complex128),
        math.sqrt(pe) * np.array([[keep, 0], [0, 1]], dtype=np.complex128),
        math.sqrt(pe) * np.array([[0, 0], [ga, 0]], dtype=np.complex128),
    ]
    pd = [math.sqrt(1 - flip) * _PAULIS[0], math.sqrt(flip) * _PAULIS[3]]
    ops = [b @ a for a in ad for b in pd]
    spec = {"type": name, "t1": t1, "t2": t2, "time": time, "excited_population": pe}
    return Channel(1, tuple(ops), spec)


def kraus(operators: Sequence[np.ndarray], name: str = "kraus") -> Channel:
    """A channel from explicit Kraus operators (imported ones, or a file's ``kraus`` entry)."""
    ops = [np.asarray(k, dtype=np.complex128) for k in operators]
    if not ops:
        raise NoiseError(f"{name} channel: no Kraus operators")
    dim = ops[0].shape[0] if ops[0].ndim == 2 else 0
    num_qubits = dim.bit_length() - 1 if dim > 0 else 0
    if dim <= 1 or (1 << num_qubits) != dim:
        raise NoiseError(f"{name} channel: Kraus operators must be 2^k x 2^k, got {ops[0].shape}")
    return Channel(num_qubits, tuple(ops), {"type": "kraus"} if name == "kraus" else {"type": name})


@dataclass(frozen=True, eq=False)
class ReadoutError:
    """A classical error on a measured bit: ``matrix[true][recorded]`` = P(recorded | true).

    The same convention as Aer's ``ReadoutError``: row 0 is what a qubit in |0> is recorded as.
    """

    matrix: tuple[tuple[float, float], tuple[float, float]]

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (2, 2):
            raise NoiseError(f"readout error: the confusion matrix must be 2 x 2, got {m.shape}")
        if not np.all(np.isfinite(m)) or np.any(m < 0) or np.any(m > 1):
            raise NoiseError("readout error: every probability must be between 0 and 1")
        sums = m.sum(axis=1)
        if np.max(np.abs(sums - 1.0)) > PROBABILITY_TOLERANCE:
            raise NoiseError(
                f"readout error: each row must sum to 1 (P(recorded | true)), got {sums.tolist()}"
            )
        object.__setattr__(
            self, "matrix", ((float(m[0, 0]), float(m[0, 1])), (float(m[1, 0]), float(m[1, 1])))
        )

    @classmethod
    def symmetric(cls, p: float) -> ReadoutError:
        """Each bit recorded wrong with probability ``p``."""
        p = _probability("readout error", "p", p)
        return cls(((1 - p, p), (p, 1 - p)))

    def flip_probability(self, true_bit: int) -> float:
        return self.matrix[true_bit][1 - true_bit]

    @property
    def is_ideal(self) -> bool:
        return self.matrix[0][1] == 0.0 and self.matrix[1][0] == 0.0
