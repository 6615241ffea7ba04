"""Circuits run on a batch of samples at once: states of shape (batch, 2**n), adjoint gradients.

The engine (``qiz.quantum.core.statevector``, the fused VQE paths) simulates one state at a
time, tuned for many qubits. A classifier needs the opposite: few qubits (4-12) and hundreds
of samples whose circuits differ only in their angles. So a batch runs here as one array,
every gate one numpy operation over all samples; the Python loop is over gates, never samples.
Matrices, generators and qubit ordering come from the engine's gate table
(``qiz.quantum.core.gates``), and :meth:`Program.circuit` gives the very same circuit for one
sample as a plain ``Circuit``, which the tests run on the engine to check these states.

Gradients use the adjoint method, as ``qiz.quantum.algorithms.vqe._adjoint_circuit`` does for
one state: forward once, form lambda = dL/d<psi| for the whole batch, then undo the gates on
psi and lambda together. For a rotation exp(-i a P / 2) whose angle a depends on a parameter,

    dL/da_i = 2 Re <lambda_i| (-i/2) P |psi_i> = Im <lambda_i| P |psi_i>

taken after the gate, for every sample i at once; da_i/dtheta is 1 (a bias) or x_i (a weight
on an encoded feature). Three sweeps of the circuit give every parameter's gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qiz.ml import fused, jit
from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.gates import gate_spec

# rotations exp(-i a P / 2) this path takes a (per-sample) angle for
ROTATIONS = ("rx", "ry", "rz", "rxx", "ryy", "rzz")
_KINDS = {"rx": jit.RX, "ry": jit.RY, "rz": jit.RZ}  # one-qubit rotations with a kernel
_FUSED_ROTATIONS = {"rx": fused.RX, "ry": fused.RY, "rz": fused.RZ}


@dataclass(frozen=True)
class Op:
    """One gate. A rotation's angle for sample i is

        (theta[weight] if weight >= 0 else scale) * A[i, feature]   (if feature >= 0)
      + (theta[bias] if bias >= 0 else 0) + offset

    where A is the encoded data (one row per sample) and theta the trainable parameters."""

    gate: str
    qubits: tuple[int, ...]
    feature: int = -1
    weight: int = -1
    bias: int = -1
    scale: float = 1.0
    offset: float = 0.0

    @property
    def trainable(self) -> bool:
        return self.weight >= 0 or self.bias >= 0


def _pauli_of(gate: str) -> np.ndarray:
    """P of the rotation exp(-i a P / 2): the engine's generator is -i P / 2."""
    generator = gate_spec(gate).generator
    assert generator is not None
    return generator * 2j


def _zsign(num_qubits: int, qubits: Sequence[int]) -> np.ndarray:
    """prod_q (-1)^bit_q(x) over ``qubits``, for every basis index x."""
    index = np.arange(1 << num_qubits)
    parity = np.zeros(1 << num_qubits, dtype=np.int64)
    for q in qubits:
        parity ^= (index >> q) & 1
    return 1.0 - 2.0 * parity


def _cz_sign(num_qubits: int, qubits: Sequence[int]) -> np.ndarray:
    """-1 where both qubits are 1, else 1."""
    index = np.arange(1 << num_qubits)
    a, b = qubits
    return 1.0 - 2.0 * ((index >> a) & (index >> b) & 1)


def _im_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Im sum conj(a) b per sample."""
    axes = tuple(range(1, a.ndim))
    return np.sum(a.real * b.imag, axis=axes) - np.sum(a.imag * b.real, axis=axes)


@dataclass
class Fused:
    """A program as ``qiz.ml.fused`` runs it: gate codes, qubits, slots (a matrix or a sign
    table), and per gate the ops whose angles add up to its angle. A rotation is merged into
    the last gate on its qubit when that is a rotation about the same axis (the gates between
    act on other qubits, so they commute): RY(w x) then RY(b) is one RY(w x + b), and the
    gradient of that one angle is both ops' gradient. Adjacent diagonals are one table."""

    kinds: np.ndarray
    qubits: np.ndarray
    slots: np.ndarray
    mats: np.ndarray
    inverses: np.ndarray
    diags: np.ndarray
    trainable: np.ndarray
    sources: list[list[Op]]
    prefix: int  # the leading gates on one qubit each, before any diagonal: a product state


def _fuse(num_qubits: int, ops: Sequence[Op]) -> Fused | None:
    """The fused form of ``ops``, or None when a gate has no fused kernel (then the
    gate-by-gate path runs)."""
    kinds: list[int] = []
    qubits: list[int] = []
    slots: list[int] = []
    sources: list[list[Op]] = []
    mats: list[np.ndarray] = []
    diags: list[np.ndarray] = []
    last: dict[int, int] = {}  # qubit -> the last fused gate that acts on it

    def add(kind: int, qubit: int, slot: int, source: list[Op], on: Sequence[int]) -> None:
        kinds.append(kind)
        qubits.append(qubit)
        slots.append(slot)
        sources.append(source)
        for q in on:
            last[q] = len(kinds) - 1

    for op in ops:
        if op.gate in _FUSED_ROTATIONS:
            q = op.qubits[0]
            kind = _FUSED_ROTATIONS[op.gate]
            j = last.get(q)
            if j is not None and kinds[j] == kind and qubits[j] == q:
                sources[j].append(op)
            else:
                add(kind, q, -1, [op], op.qubits)
        elif op.gate == "rzz":
            diags.append(_zsign(num_qubits, op.qubits))
            add(fused.RZZ, 0, len(diags) - 1, [op], op.qubits)
        elif op.gate in ("z", "cz"):
            table = _zsign(num_qubits, op.qubits) if op.gate == "z" else _cz_sign(
                num_qubits, op.qubits)  # fmt: skip
            if kinds and kinds[-1] == fused.DIAG:
                diags[slots[-1]] = diags[slots[-1]] * table
                for q in op.qubits:
                    last[q] = len(kinds) - 1
            else:
                diags.append(table)
                add(fused.DIAG, 0, len(diags) - 1, [], op.qubits)
        elif len(op.qubits) == 1 and not gate_spec(op.gate).num_params:
            mats.append(gate_spec(op.gate).full_matrix(()))
            add(fused.MATRIX, op.qubits[0], len(mats) - 1, [], op.qubits)
        else:
            return None
    mat = np.array(mats or [np.eye(2)], dtype=np.complex128).reshape(-1, 2, 2)
    return Fused(
        kinds=np.array(kinds, dtype=np.int64),
        qubits=np.array(qubits, dtype=np.int64),
        slots=np.array(slots, dtype=np.int64),
        mats=np.ascontiguousarray(mat),
        inverses=np.ascontiguousarray(mat.conj().transpose(0, 2, 1)),
        diags=np.array(diags or [np.ones(1 << num_qubits)], dtype=np.float64),
        trainable=np.array([any(op.trainable for op in src) for src in sources], dtype=np.bool_),
        sources=sources,
        prefix=next((g for g, k in enumerate(kinds) if k in (fused.DIAG, fused.RZZ)), len(kinds)),
    )


@dataclass
class Program:
    """A parameterised circuit over ``num_qubits`` fed by ``num_encoded`` data columns."""

    num_qubits: int
    ops: list[Op]
    num_params: int
    num_encoded: int

    def __post_init__(self) -> None:
        n = self.num_qubits
        self._diag: dict[tuple[int, ...], np.ndarray] = {}  # Z...Z signs
        self._cz: dict[tuple[int, ...], np.ndarray] = {}  # CZ signs
        for op in self.ops:
            spec = gate_spec(op.gate)
            if len(op.qubits) != spec.num_qubits or not all(0 <= q < n for q in op.qubits):
                raise ValueError(f"{op.gate} on {op.qubits} does not fit {n} qubits")
            if op.gate not in ROTATIONS and spec.num_params:
                raise ValueError(f"{op.gate}: only {', '.join(ROTATIONS)} take angles here")
            if op.gate in ("rz", "rzz", "z"):
                self._diag.setdefault(op.qubits, _zsign(n, op.qubits))
            elif op.gate == "cz":
                self._cz.setdefault(op.qubits, _cz_sign(n, op.qubits))
        self.fused = _fuse(n, self.ops)  # None: the gate-by-gate path

    # -- angles --------------------------------------------------------------------------

    def angles(self, op: Op, data: np.ndarray, theta: np.ndarray) -> np.ndarray | float:
        """The op's angle per sample (an array over the batch) or one number for all."""
        angle: np.ndarray | float = op.offset
        if op.feature >= 0:
            w = theta[op.weight] if op.weight >= 0 else op.scale
            angle = angle + w * data[:, op.feature]
        if op.bias >= 0:
            angle = angle + theta[op.bias]
        return angle

    def _fused_angles(self, data: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """angles[b, g]: the fused gate g's angle for sample b (0 for gates without one)."""
        assert self.fused is not None
        angles = np.zeros((data.shape[0], len(self.fused.sources)))
        for g, source in enumerate(self.fused.sources):
            for op in source:
                angles[:, g] += self.angles(op, data, theta)
        return angles

    # -- gates on a batch ----------------------------------------------------------------

    def _rotate(self, state: np.ndarray, op: Op, angle: np.ndarray | float) -> np.ndarray:
        """exp(-i a P / 2) with a per-sample angle ``a`` (or one angle for all); one-qubit
        rotations and diagonals in place."""
        a = np.broadcast_to(np.asarray(angle, dtype=np.float64), (state.shape[0],))
        c = np.ascontiguousarray(np.cos(0.5 * a))
        s = np.ascontiguousarray(np.sin(0.5 * a))
        if op.gate in _KINDS:
            jit.rotate(state, op.qubits[0], _KINDS[op.gate], c, s)
            return state
        if op.gate == "rzz":  # diagonal: cos - i sin * z
            state *= c[:, None] - 1j * s[:, None] * self._diag[op.qubits][None, :]
            return state
        pauli = _pauli_of(op.gate)
        eye = np.eye(pauli.shape[0], dtype=np.complex128)
        m = c[:, None, None] * eye - 1j * s[:, None, None] * pauli
        return self._matrix(state, op.qubits, m)

    def _angle_gradient(self, lam: np.ndarray, psi: np.ndarray, op: Op) -> np.ndarray:
        """Im <lambda_i| P |psi_i> for every sample: dL/d(angle) of the rotation ``op``."""
        if op.gate in _KINDS:
            return jit.angle_gradient(lam, psi, op.qubits[0], _KINDS[op.gate])
        if op.gate == "rzz":
            return _im_dot(lam, psi * self._diag[op.qubits])
        return _im_dot(lam, self._matrix(psi, op.qubits, _pauli_of(op.gate)))

    def _fixed(self, state: np.ndarray, op: Op, inverse: bool = False) -> np.ndarray:
        """A parameterless gate; in place for diagonals and one-qubit gates."""
        if op.gate in ("z", "cz"):
            state *= self._diag[op.qubits] if op.gate == "z" else self._cz[op.qubits]
            return state
        m = gate_spec(op.gate).full_matrix(())
        m = np.ascontiguousarray(m.conj().T if inverse else m)
        if len(op.qubits) == 1:
            jit.matrix(state, op.qubits[0], m)
            return state
        return self._matrix(state, op.qubits, m)

    def _matrix(self, state: np.ndarray, qubits: tuple[int, ...], m: np.ndarray) -> np.ndarray:
        """Apply a (2^k x 2^k) matrix, or one per sample (batch, 2^k, 2^k), on ``qubits``
        (matrix index = sum_i bit(qubits[i]) 2^i, the engine's convention)."""
        n = self.num_qubits
        batch = state.shape[0]
        if len(qubits) == 1:
            q = qubits[0]
            view = state.reshape(batch, 1 << (n - q - 1), 2, 1 << q)
            lo, hi = view[:, :, 0, :], view[:, :, 1, :]
            if m.ndim == 3:
                e = [m[:, i, j][:, None, None] for i in (0, 1) for j in (0, 1)]
            else:
                e = [m[i, j] for i in (0, 1) for j in (0, 1)]
            out = np.empty_like(view)
            out[:, :, 0, :] = e[0] * lo + e[1] * hi
            out[:, :, 1, :] = e[2] * lo + e[3] * hi
            return out.reshape(batch, 1 << n)
        k = len(qubits)
        axes = [n - q for q in reversed(qubits)]  # tensor axis of qubit q is n - q
        t = np.moveaxis(state.reshape((batch,) + (2,) * n), axes, range(n + 1 - k, n + 1))
        shape = t.shape
        flat = t.reshape(batch, -1, 1 << k)
        out = np.einsum("bij,brj->bri", m, flat) if m.ndim == 3 else flat @ m.T
        back = np.moveaxis(out.reshape(shape), range(n + 1 - k, n + 1), axes)
        return np.ascontiguousarray(back).reshape(batch, 1 << n)

    def _apply(self, state: np.ndarray, op: Op, data: np.ndarray, theta: np.ndarray) -> np.ndarray:
        if op.gate in ROTATIONS:
            return self._rotate(state, op, self.angles(op, data, theta))
        return self._fixed(state, op)

    def _undo(self, state: np.ndarray, op: Op, data: np.ndarray, theta: np.ndarray) -> np.ndarray:
        if op.gate in ROTATIONS:
            return self._rotate(state, op, -np.asarray(self.angles(op, data, theta)))
        return self._fixed(state, op, inverse=True)

    # -- the public sweeps ---------------------------------------------------------------

    def _check(self, data: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        data = np.asarray(data, dtype=np.float64)
        theta = np.asarray(theta, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.num_encoded:
            raise ValueError(f"expected data of shape (batch, {self.num_encoded})")
        if theta.shape != (self.num_params,):
            raise ValueError(f"expected {self.num_params} parameters, got {theta.shape}")
        return data, theta

    def states(self, data: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """The final states of every sample, shape (batch, 2**num_qubits), from |0...0>."""
        theta = np.zeros(0) if theta is None else theta
        data, theta = self._check(data, theta)
        state = np.zeros((data.shape[0], 1 << self.num_qubits), dtype=np.complex128)
        state[:, 0] = 1.0
        f = self.fused
        if f is not None:
            angles = self._fused_angles(data, theta)
            with fused.threads_for_fused(data.shape[0], self.num_qubits):
                fused.forward(state, f.kinds, f.qubits, f.slots, angles, f.mats, f.diags,
                              f.prefix)  # fmt: skip
            return state
        with jit.threads_for_batch(data.shape[0], self.num_qubits):
            for op in self.ops:
                state = self._apply(state, op, data, theta)
        return state

    def backward(
        self,
        psi: np.ndarray,
        lam: np.ndarray,
        data: np.ndarray,
        theta: np.ndarray,
        *,
        data_grad: np.ndarray | None = None,
    ) -> np.ndarray:
        """dL/dtheta given the final states ``psi`` and lambda = dL/d<psi| (both (batch, 2^n)),
        summed over the batch: the adjoint sweep, psi and lambda undone gate by gate.

        ``data_grad`` (batch, num_encoded), when given, is filled with dL/d(data) per sample
        from the same sweep (the angle gradients times d(angle)/d(data)), so a layer before
        this circuit (``qiz.ml.torch``) trains too."""
        data, theta = self._check(data, theta)
        psi = np.array(psi, dtype=np.complex128)  # undone in place: the caller's stay intact
        lam = np.array(lam, dtype=np.complex128)
        grad = np.zeros(self.num_params)
        if data_grad is not None:
            if data_grad.shape != data.shape:
                raise ValueError(f"data_grad must have the data's shape {data.shape}")
            data_grad[...] = 0.0
        f = self.fused
        if f is None:
            with jit.threads_for_batch(data.shape[0], self.num_qubits):
                self._sweep_back(psi, lam, data, theta, grad, data_grad=data_grad)
            return grad
        angles = self._fused_angles(data, theta)
        out = np.zeros_like(angles)  # dL/d(angle) per sample and fused gate
        wanted = f.trainable  # the gates whose angle gradient is needed
        if data_grad is not None:
            fed = np.array([any(op.feature >= 0 for op in src) for src in f.sources], dtype=bool)
            wanted = f.trainable | fed
        with fused.threads_for_fused(data.shape[0], self.num_qubits):
            fused.backward(psi, lam, f.kinds, f.qubits, f.slots, angles, f.mats, f.inverses,
                           f.diags, wanted, out, f.prefix)  # fmt: skip
        for g in np.flatnonzero(wanted):
            for op in f.sources[g]:
                self._accumulate(op, out[:, g], data, theta, grad, data_grad=data_grad)
        return grad

    @staticmethod
    def _accumulate(
        op: Op,
        per_sample: np.ndarray,
        data: np.ndarray,
        theta: np.ndarray,
        grad: np.ndarray,
        *,
        data_grad: np.ndarray | None,
    ) -> None:
        """Add one op's share of dL/d(angle) per sample to dL/dtheta (and dL/d(data))."""
        if op.weight >= 0:
            grad[op.weight] += per_sample @ data[:, op.feature]
        if op.bias >= 0:
            grad[op.bias] += per_sample.sum()
        if data_grad is not None and op.feature >= 0:
            w = theta[op.weight] if op.weight >= 0 else op.scale
            data_grad[:, op.feature] += w * per_sample

    def _sweep_back(
        self,
        psi: np.ndarray,
        lam: np.ndarray,
        data: np.ndarray,
        theta: np.ndarray,
        grad: np.ndarray,
        *,
        data_grad: np.ndarray | None = None,
    ) -> None:
        for op in reversed(self.ops):
            fed = data_grad is not None and op.feature >= 0
            if op.gate in ROTATIONS and (op.trainable or fed):
                per_sample = self._angle_gradient(lam, psi, op)  # dL/da_i
                self._accumulate(op, per_sample, data, theta, grad, data_grad=data_grad)
            psi = self._undo(psi, op, data, theta)
            lam = self._undo(lam, op, data, theta)

    # -- one sample as a plain circuit ---------------------------------------------------

    def circuit(self, row: np.ndarray, theta: np.ndarray | None = None) -> Circuit:
        """The circuit of one sample (its encoded ``row``), all angles bound: what the engine
        runs to check :meth:`states`."""
        theta = np.zeros(0) if theta is None else theta
        data, theta = self._check(np.asarray(row, dtype=np.float64)[None, :], theta)
        circ = Circuit(self.num_qubits, name="ml_program")
        for op in self.ops:
            if op.gate in ROTATIONS:
                angle = float(np.asarray(self.angles(op, data, theta)).reshape(-1)[0])
                circ.append(op.gate, op.qubits, [angle])
            else:
                circ.append(op.gate, op.qubits)
        return circ
