"""Variational ansatz circuits: the hardware-efficient layered ansatz and user-given circuits.

``HardwareEfficientAnsatz(n, depth)`` is ``depth`` x [RY on every qubit, CZ entangler], with
parameter ``theta[l * n + q]`` on qubit q of layer l, starting from |0...0>. Its ``circuit()``
is the same ansatz as a general parameterised Circuit, so the fast path can be checked against
the gate-level engine and exported as OpenQASM.

With ``gate="cx"`` the entangler is a CX chain and a final RY layer follows (Qiskit's
RealAmplitudes form). It runs on the gate-level adjoint path. It exists because RY + CZ is not
universal for real states: on the open transverse-field Ising chain at h = 1 its energy stalls
(0.0245 above the ground energy at 4 qubits, 0.10 at 8, for every depth tried), while RY + CX
reaches the ground state to 1e-12.

Both are named by a short string a peer may send (``hea:4``, ``hva:8:multi``): their sizes
(``num_parameters``, ``num_instructions``) are counted from the name and the Hamiltonian, never
by building the circuit, and a layer count beyond ``MAX_LAYERS`` is refused by name at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.names import shown, whole
from qiz.quantum.core.params import Parameter
from qiz.quantum.core.pauli import PauliSum, PauliTerm

ENTANGLERS = ("ladder", "ring", "none")
# layers of either ansatz: far beyond any depth trained here (tens), and small enough that a
# name like 'hva:100000' is refused at once instead of sized at 100,000 x the Hamiltonian's terms
MAX_LAYERS = 10_000
_DIAGONAL = ("rz", "rzz")  # the HVA's diagonal rotations, angle a_l; the others take b_l


def _check_layers(num_qubits: int, depth: int, entangler: str, gate: str) -> None:
    """The shape checks shared by the layered ansatzes (hea and general)."""
    if num_qubits < 1 or depth < 1:
        raise QuantumError("the ansatz needs at least one qubit and one layer")
    if depth > MAX_LAYERS:
        raise QuantumError(f"the ansatz has at most {MAX_LAYERS} layers, not {depth}")
    if entangler not in ENTANGLERS:
        raise QuantumError(f"entangler must be one of {', '.join(ENTANGLERS)}")
    if gate not in ("cz", "cx"):
        raise QuantumError("the entangling gate must be cz or cx")


@dataclass(frozen=True)
class HardwareEfficientAnsatz:
    """Layers of RY rotations and CZ entanglers ("ladder": (q, q+1); "ring": plus (n-1, 0))."""

    num_qubits: int
    depth: int = 4
    entangler: str = "ladder"
    gate: str = "cz"

    def __post_init__(self) -> None:
        _check_layers(self.num_qubits, self.depth, self.entangler, self.gate)

    @property
    def fused(self) -> bool:
        """Whether the fused RY + CZ fast path applies (the CX form runs gate by gate)."""
        return self.gate == "cz"

    @property
    def num_parameters(self) -> int:
        return self.num_qubits * (self.depth + (0 if self.fused else 1))

    @property
    def num_instructions(self) -> int:
        """Gates of :meth:`circuit`, counted without building it."""
        n = self.num_qubits
        pairs = 0 if self.entangler == "none" else n - 1 + (self.entangler == "ring" and n > 2)
        return self.depth * (n + pairs) + (0 if self.fused else n)

    def cz_pairs(self) -> list[tuple[int, int]]:
        n = self.num_qubits
        if self.entangler == "none":
            return []
        pairs = [(q, q + 1) for q in range(n - 1)]
        if self.entangler == "ring" and n > 2:
            pairs.append((n - 1, 0))
        return pairs

    def cz_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """The entangler as (shift, mask) groups: pair (a, a + s) is bit a of x & (x >> s)."""
        groups: dict[int, int] = {}
        for a, b in self.cz_pairs():
            lo, hi = min(a, b), max(a, b)
            groups[hi - lo] = groups.get(hi - lo, 0) | (1 << lo)
        shifts = np.array(sorted(groups), dtype=np.int64)
        masks = np.array([groups[s] for s in sorted(groups)], dtype=np.int64)
        return shifts, masks

    def circuit(self) -> Circuit:
        """The same ansatz as a parameterised gate-level circuit (parameters t0, t1, ...)."""
        n = self.num_qubits
        circ = Circuit(n, name=f"hea_{n}x{self.depth}")
        for layer in range(self.depth):
            for q in range(n):
                circ.append("ry", [q], [Parameter(f"t{layer * n + q}")])
            for a, b in self.cz_pairs():
                circ.append(self.gate, [a, b])
        if not self.fused:
            for q in range(n):
                circ.append("ry", [q], [Parameter(f"t{self.depth * n + q}")])
        return circ


@dataclass(frozen=True)
class GeneralAnsatz:
    """``depth`` x [RY(theta) and RZ(theta) on every qubit, entangler], then a final RY + RZ
    layer, from |0...0>: complex amplitudes, so any Hermitian Pauli sum (odd-Y terms included)
    has a working ansatz. Parameters go layer by layer; within a layer RY on qubits 0..n-1,
    then RZ on qubits 0..n-1 (``2 n (depth + 1)`` in all). RZ layer and CZ entangler form one
    diagonal, which is why the fused kernels (``kernels.vqe_general``) run a layer in the
    passes of an RY + CZ layer.

    ``initial_point(seed)`` is uniform in [-0.1, 0.1] plus 0.1 on the RY angles (as for the
    hardware-efficient ansatz). Not 0: there the whole gradient vanishes (measured: norm 0 on
    the 4-site Heisenberg chain, where L-BFGS-B then stops at once, 9.46 above the ground
    energy). Measured from it on that chain: the ladder at depth 3 reaches the ground energy
    to 1e-13 (five seeds, and starts as wide as [-pi, pi]), where RY-only ``hea`` stalls 0.137
    above it at any depth and so does this ansatz at depth 2; the ring entangler stalls 1.32
    above it from every start tried (a limit of that circuit at 4 qubits, not of the start).
    """

    num_qubits: int
    depth: int = 4
    entangler: str = "ladder"
    gate: str = "cz"

    def __post_init__(self) -> None:
        _check_layers(self.num_qubits, self.depth, self.entangler, self.gate)

    @property
    def fused(self) -> bool:
        """Whether the fused kernels apply (CX entanglers run on the gate-level path)."""
        return self.gate == "cz"

    @property
    def num_parameters(self) -> int:
        return 2 * self.num_qubits * (self.depth + 1)

    @property
    def num_instructions(self) -> int:
        """Gates of :meth:`circuit`, counted without building it."""
        n = self.num_qubits
        return 2 * n * (self.depth + 1) + self.depth * len(self.cz_pairs())

    def cz_pairs(self) -> list[tuple[int, int]]:
        return HardwareEfficientAnsatz(self.num_qubits, 1, self.entangler).cz_pairs()

    def cz_masks(self) -> tuple[np.ndarray, np.ndarray]:
        return HardwareEfficientAnsatz(self.num_qubits, 1, self.entangler).cz_masks()

    def circuit(self) -> Circuit:
        """The same ansatz as a parameterised gate-level circuit (parameters t0, t1, ...)."""
        n = self.num_qubits
        circ = Circuit(n, name=f"general_{n}x{self.depth}")
        for layer in range(self.depth + 1):
            for k, gate in enumerate(("ry", "rz")):
                for q in range(n):
                    circ.append(gate, [q], [Parameter(f"t{(2 * layer + k) * n + q}")])
            if layer < self.depth:
                for a, b in self.cz_pairs():
                    circ.append(self.gate, [a, b])
        return circ

    def initial_point(self, seed: int | None = 0) -> np.ndarray:
        """A seeded small random start off the RZ saddle at 0 (see the class docstring)."""
        n = self.num_qubits
        x = np.random.default_rng(seed).uniform(-0.1, 0.1, self.num_parameters)
        for layer in range(self.depth + 1):
            x[2 * layer * n : (2 * layer + 1) * n] += 0.1
        return x


SPECS = "hea:DEPTH[:ladder|ring][:cz|cx], general:DEPTH[:ladder|ring][:cz|cx] or hva:LAYERS[:multi]"


def parse_ansatz(
    spec: str, hamiltonian: PauliSum
) -> HardwareEfficientAnsatz | GeneralAnsatz | HamiltonianVariationalAnsatz:
    """``hea:DEPTH[:ladder|ring][:cz|cx]`` (default ladder, cz), ``general:DEPTH[...]`` (the
    same options) or ``hva:LAYERS[:multi]``."""
    parts = spec.split(":")
    num_qubits = hamiltonian.num_qubits
    digits = parts[1] if len(parts) > 1 and parts[1].isascii() and parts[1].isdigit() else None
    if parts[0] == "hva" and len(parts) in (2, 3) and digits is not None:
        if len(parts) == 3 and parts[2] != "multi":
            raise QuantumError(f"ansatz {shown(spec)}: expected hva:LAYERS or hva:LAYERS:multi")
        layers = _layers(spec, digits)
        return HamiltonianVariationalAnsatz(hamiltonian, layers, shared=len(parts) == 2)
    if parts[0] not in ("hea", "general") or not 2 <= len(parts) <= 4 or digits is None:
        raise QuantumError(f"ansatz {shown(spec)}: expected {SPECS}")
    entangler, gate = "ladder", "cz"
    for extra in parts[2:]:
        if extra in ENTANGLERS:
            entangler = extra
        elif extra in ("cz", "cx"):
            gate = extra
        else:
            raise QuantumError(
                f"ansatz {shown(spec)}: {shown(extra)} is not ladder, ring, cz or cx"
            )
    kind = GeneralAnsatz if parts[0] == "general" else HardwareEfficientAnsatz
    return kind(num_qubits, _layers(spec, digits), entangler, gate)


def _layers(spec: str, digits: str) -> int:
    """The layer count of an ansatz name, bounded before int() and before anything is built."""
    layers = whole(digits, MAX_LAYERS)
    if layers is None:
        raise QuantumError(f"ansatz {shown(spec)}: at most {MAX_LAYERS} layers")
    return layers


@dataclass(frozen=True)
class HamiltonianVariationalAnsatz:
    """The Hamiltonian variational ansatz: from |+...+>, ``layers`` x [exp(-i a H_diag),
    exp(-i b H_field)], one rotation per term, diagonal (Z, ZZ) terms first, then X/Y terms.
    Runs on the gate-level adjoint path.

    ``shared=True`` gives each layer two angles (a, b), the rotation of term c_t P_t being
    exp(-i a c_t P_t); ``shared=False`` (multi-angle) gives every term of every layer its own.
    On the periodic transverse-field Ising ring the shared form with layers = n/2 holds the
    ground state exactly (Ho and Hsieh, SciPost Phys. 6, 029 (2019)): at 8 qubits and the
    critical field, L-BFGS-B reaches it to 1e-14 in about 65 evaluations. The open chain at
    the critical field is harder: the multi-angle form needs thousands of evaluations for 1e-6.
    """

    hamiltonian: PauliSum
    layers: int = 4
    shared: bool = True

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise QuantumError("the ansatz needs at least one layer")
        if self.layers > MAX_LAYERS:
            raise QuantumError(f"the ansatz has at most {MAX_LAYERS} layers, not {self.layers}")
        for t in self.hamiltonian.terms:
            if _rotation_for(t) is None and (t.xmask or t.zmask):
                raise QuantumError(
                    f"hva: term {t.label(self.hamiltonian.num_qubits)} is not a Z, ZZ, X or Y "
                    "term; use --ansatz general:D"
                )

    @property
    def num_qubits(self) -> int:
        return self.hamiltonian.num_qubits

    @property
    def num_parameters(self) -> int:
        """``len(self.circuit().parameters)``, counted without building the circuit: every
        rotation of every layer (multi-angle), or per layer a_l and b_l where some rotation
        of that kind has a non-zero angle (shared; a zero coefficient leaves no parameter)."""
        if not self.shared:
            return self.layers * len(self._ordered_terms())
        return self.layers * sum(self._shared_angles())

    @property
    def num_instructions(self) -> int:
        """Gates of :meth:`circuit` (H on every qubit, then one rotation per term per layer)."""
        return self.num_qubits + self.layers * len(self._ordered_terms())

    def _shared_angles(self) -> tuple[bool, bool]:
        """Whether each layer of the shared form has a parameter a_l, and one b_l."""
        kinds = {gate in _DIAGONAL for gate, _, coeff in self._ordered_terms() if coeff != 0.0}
        return True in kinds, False in kinds

    def _ordered_terms(self) -> list[tuple[str, list[int], float]]:
        rotations = [_rotation_for(t) for t in self.hamiltonian.terms]
        present = [r for r in rotations if r is not None]
        return sorted(present, key=lambda r: r[0] not in _DIAGONAL)

    def circuit(self) -> Circuit:
        n = self.num_qubits
        circ = Circuit(n, name=f"hva_{n}x{self.layers}")
        for q in range(n):
            circ.h(q)
        k = 0
        for layer in range(self.layers):
            diag, field = Parameter(f"a{layer}"), Parameter(f"b{layer}")
            for gate, qubits, coeff in self._ordered_terms():
                if self.shared:
                    angle = 2.0 * coeff * (diag if gate in ("rz", "rzz") else field)
                else:
                    angle = Parameter(f"p{k}")
                    k += 1
                circ.append(gate, qubits, [angle])
        return circ

    def initial_point(self, step: float = 0.4) -> np.ndarray:
        """A linear ramp, like a discretised adiabatic path: the diagonal terms' angles grow
        and the field's shrink across the layers (angle 2 * coefficient * step * share)."""
        values = []
        for layer in range(self.layers):
            share = (layer + 0.5) / self.layers
            if self.shared:  # parameters in order of first use: a_l (if any), then b_l (if any)
                diagonal, field = self._shared_angles()
                if diagonal:
                    values.append(step * share)
                if field:
                    values.append(step * (1.0 - share))
                continue
            for gate, _qubits, coeff in self._ordered_terms():
                weight = share if gate in ("rz", "rzz") else 1.0 - share
                values.append(2.0 * coeff * step * weight)
        return np.array(values)


def _rotation_for(term: PauliTerm) -> tuple[str, list[int], float] | None:
    """(gate, qubits, coefficient) of the rotation generated by a one- or two-qubit term."""
    x, z = term.xmask, term.zmask
    coeff = term.coeff.real
    if x == 0 and z.bit_count() in (1, 2):
        qubits = [q for q in range(z.bit_length()) if (z >> q) & 1]
        return ("rz" if len(qubits) == 1 else "rzz"), qubits, coeff
    if x.bit_count() == 1 and z in (0, x):
        return ("rx" if z == 0 else "ry"), [x.bit_length() - 1], coeff
    return None
